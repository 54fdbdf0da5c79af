package federation_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/atoll-matrix/atoll/homeserver/config"
	"github.com/atoll-matrix/atoll/internal/atolltest/shardtest"
)

// shortBackoff keeps retries of a failing destination about a second apart.
func shortBackoff(c *config.Config) { c.Federation.MaxBackoff = time.Second }

// routeTo sends federation traffic for server to base directly, so that stopping the shard
// at base makes server unreachable (without it, the installation's own shards would take the
// stopped shard's tenants over).
func routeTo(server, base string) func(*config.Config) {
	return func(c *config.Config) {
		if c.Federation.Servers == nil {
			c.Federation.Servers = map[string]string{}
		}
		c.Federation.Servers[server] = base
	}
}

// scalar runs a one-value query; $schema names the tenant's schema.
func scalar[T any](t *testing.T, s *shardtest.Shard, tn *shardtest.Tenant, query string, args ...any) T {
	t.Helper()
	var v T
	q := strings.ReplaceAll(query, "$schema", pgx.Identifier{"t_" + tn.ID}.Sanitize())
	if err := s.Process.Pool.QueryRow(context.Background(), q, args...).Scan(&v); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return v
}

// poll calls ok every 100ms until it returns true, failing after limit.
func poll(t *testing.T, limit time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, limit)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// messageBodies returns the bodies of m.room.message events bob's /messages shows, oldest
// first.
func messageBodies(t *testing.T, c *shardtest.Client, roomID string) []string {
	t.Helper()
	st, body := c.Do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/messages?dir=b&limit=200", nil)
	if st != http.StatusOK {
		t.Fatalf("messages: %d %v", st, body)
	}
	chunk, _ := body["chunk"].([]any)
	var out []string
	for i := len(chunk) - 1; i >= 0; i-- {
		ev := chunk[i].(map[string]any)
		if ev["type"] != "m.room.message" {
			continue
		}
		content, _ := ev["content"].(map[string]any)
		out = append(out, fmt.Sprint(content["body"]))
	}
	return out
}

// offlinePair starts tenant b on its own shard and tenant a on another whose traffic to b
// goes straight to b's shard; bob@b joins a public room of alice@a.
func offlinePair(t *testing.T, prefix string) (sa, sb *shardtest.Shard, a, b *shardtest.Tenant, alice, bob *shardtest.Client, roomID string) {
	t.Helper()
	sb = shardtest.New(t, shortBackoff)
	b = sb.CreateTenant(t, prefix+"_b")
	sa = shardtest.New(t, shortBackoff, routeTo(b.ServerName, sb.ClientURL))
	a = sa.CreateTenant(t, prefix+"_a")
	alice = a.Register(t, "alice")
	bob = b.Register(t, "bob")
	room := alice.MustDo(t, "POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"})
	roomID = room["room_id"].(string)
	bob.MustDo(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?server_name="+url.QueryEscape(a.ServerName), map[string]any{})
	alice.MustDo(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/send/m.room.message/hello", map[string]any{"msgtype": "m.text", "body": "hello"})
	waitFor(t, bob, "first message at bob", timelineHas(roomID, "m.room.message", "body", "hello"))
	t.Cleanup(func() {
		if t.Failed() {
			dumpFederation(t, sa, a)
			dumpFederation(t, sb, b)
		}
	})
	return
}

func sendN(t *testing.T, c *shardtest.Client, roomID, prefix string, n int) []string {
	t.Helper()
	var want []string
	for i := range n {
		body := fmt.Sprintf("%s %02d", prefix, i)
		c.MustDo(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/send/m.room.message/"+strings.ReplaceAll(body, " ", "-"),
			map[string]any{"msgtype": "m.text", "body": body})
		want = append(want, body)
	}
	return want
}

// TestDestinationOfflineThenBack: while the shard serving bob's server is down, alice's 20
// messages wait in her server's outbox and the destination is backed off; once it is back,
// all 20 arrive, in order.
func TestDestinationOfflineThenBack(t *testing.T) {
	sa, sb, a, b, alice, bob, roomID := offlinePair(t, "off")
	sb.Stop(t)
	want := sendN(t, alice, roomID, "queued", 20)
	poll(t, 20*time.Second, "a failed delivery to b recorded", func() bool {
		return scalar[int](t, sa, a, `SELECT coalesce(max(failures), 0) FROM $schema.federation_destinations WHERE destination = $1`, b.ServerName) > 0
	})
	failures := scalar[int](t, sa, a, `SELECT failures FROM $schema.federation_destinations WHERE destination = $1`, b.ServerName)
	if n := scalar[int](t, sa, a, `SELECT count(*) FROM $schema.federation_outbox WHERE destination = $1 AND kind = 'pdu'`, b.ServerName); n < 20 {
		t.Fatalf("%d events queued for b, want at least 20", n)
	}

	sb.Restart(t)
	back := time.Now()
	var got []string
	poll(t, 30*time.Second, "all 20 messages at bob", func() bool {
		got = messageBodies(t, bob, roomID)
		return len(got) >= 21
	})
	t.Logf("destination failed %d times while offline; 20 events delivered %v after it came back", failures, time.Since(back).Round(time.Millisecond))
	if !reflect.DeepEqual(got, append([]string{"hello"}, want...)) {
		t.Fatalf("bob's messages = %q, want hello then %q", got, want)
	}
	poll(t, 10*time.Second, "a's outbox empty and b's failures cleared", func() bool {
		return scalar[int](t, sa, a, `SELECT count(*) FROM $schema.federation_outbox`) == 0 &&
			scalar[int](t, sa, a, `SELECT count(*) FROM $schema.federation_destinations`) == 0
	})
}

// TestQueuedEventsSurviveSenderRestart: events queued for an unreachable server outlive the
// process that queued them; a new process on the same database finds the tenant through
// atoll_control.outbox_tenants (no request for it arrives) and delivers them.
func TestQueuedEventsSurviveSenderRestart(t *testing.T) {
	sa, sb, a, b, alice, bob, roomID := offlinePair(t, "kill")
	sb.Stop(t)
	want := sendN(t, alice, roomID, "kept", 5)
	poll(t, 20*time.Second, "a failed delivery to b recorded", func() bool {
		return scalar[int](t, sa, a, `SELECT coalesce(max(failures), 0) FROM $schema.federation_destinations WHERE destination = $1`, b.ServerName) > 0
	})
	sa.Stop(t)
	// The sending shard comes back first (its sender picks the tenant up from the control
	// schema and backs off while b is still down), then b.
	sa.Restart(t)
	poll(t, 20*time.Second, "the new process takes a's lease to send", func() bool {
		var owner *string
		err := sa.Process.Pool.QueryRow(context.Background(), `SELECT owner_shard FROM atoll_control.tenants WHERE id = $1`, a.ID).Scan(&owner)
		return err == nil && owner != nil
	})
	sb.Restart(t)
	back := time.Now()
	var got []string
	poll(t, 30*time.Second, "all 5 messages at bob", func() bool {
		got = messageBodies(t, bob, roomID)
		return len(got) >= 6
	})
	t.Logf("queued events delivered %v after the destination came back, by the restarted sender", time.Since(back).Round(time.Millisecond))
	if !reflect.DeepEqual(got, append([]string{"hello"}, want...)) {
		t.Fatalf("bob's messages = %q, want hello then %q", got, want)
	}
}

// identity is a real tenant's signing key, from the registry, to craft federation requests.
type identity struct {
	server spec.ServerName
	keyID  gomatrixserverlib.KeyID
	key    ed25519.PrivateKey
}

func identityOf(t *testing.T, s *shardtest.Shard, tn *shardtest.Tenant) identity {
	t.Helper()
	rec, err := s.Process.Tenants.ByHost(context.Background(), tn.ServerName)
	if err != nil {
		t.Fatal(err)
	}
	return identity{server: spec.ServerName(rec.ServerName), keyID: gomatrixserverlib.KeyID(rec.KeyID), key: rec.PrivateKey}
}

// federationDo sends a request signed by id to dest's shard, content JSON-encoded.
func federationDo(t *testing.T, id identity, s *shardtest.Shard, dest *shardtest.Tenant, method, path string, content any) (int, map[string]any) {
	t.Helper()
	fr := fclient.NewFederationRequest(method, id.server, spec.ServerName(dest.ServerName), path)
	if content != nil {
		if err := fr.SetContent(content); err != nil {
			t.Fatal(err)
		}
	}
	if err := fr.Sign(id.server, id.keyID, id.key); err != nil {
		t.Fatal(err)
	}
	req, err := fr.HTTPRequest()
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(s.ClientURL + path)
	req.URL = u
	req.Host = dest.ServerName
	resp, err := s.HTTP.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out map[string]any
	_ = json.Unmarshal(b, &out)
	return resp.StatusCode, out
}

// roomTip reads, from the resident tenant's schema, what a new event in the room needs: the
// forward extremities, the depth, and the current state's event IDs by (type, state_key).
func roomTip(t *testing.T, s *shardtest.Shard, tn *shardtest.Tenant, roomID string) (prev []string, depth int64, state map[[2]string]string) {
	t.Helper()
	schema := pgx.Identifier{"t_" + tn.ID}.Sanitize()
	ctx := context.Background()
	if err := s.Process.Pool.QueryRow(ctx, `SELECT extremities, depth FROM `+schema+`.rooms WHERE room_id = $1`, roomID).Scan(&prev, &depth); err != nil {
		t.Fatal(err)
	}
	rows, err := s.Process.Pool.Query(ctx, `SELECT type, state_key, event_id FROM `+schema+`.current_state WHERE room_id = $1`, roomID)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	state = map[[2]string]string{}
	for rows.Next() {
		var typ, sk, id string
		if err := rows.Scan(&typ, &sk, &id); err != nil {
			t.Fatal(err)
		}
		state[[2]string{typ, sk}] = id
	}
	return prev, depth, state
}

// craft builds a signed v10 event from sender on top of the room's current tip.
func craft(t *testing.T, id identity, s *shardtest.Shard, resident *shardtest.Tenant, roomID, sender, typ string, stateKey *string, content any) gomatrixserverlib.PDU {
	t.Helper()
	prev, depth, state := roomTip(t, s, resident, roomID)
	auth := []string{state[[2]string{"m.room.create", ""}], state[[2]string{"m.room.power_levels", ""}]}
	if m, ok := state[[2]string{"m.room.member", sender}]; ok {
		auth = append(auth, m)
	}
	c, err := json.Marshal(content)
	if err != nil {
		t.Fatal(err)
	}
	verImpl := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersionV10)
	ev, err := verImpl.NewEventBuilderFromProtoEvent(&gomatrixserverlib.ProtoEvent{
		SenderID: sender, RoomID: roomID, Type: typ, StateKey: stateKey, PrevEvents: prev, AuthEvents: auth,
		Depth: depth + 1, Content: c,
	}).Build(time.Now(), id.server, id.keyID, id.key)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

func txnOf(origin spec.ServerName, pdus []json.RawMessage, edus []gomatrixserverlib.EDU) map[string]any {
	if pdus == nil {
		pdus = []json.RawMessage{}
	}
	if edus == nil {
		edus = []gomatrixserverlib.EDU{}
	}
	return map[string]any{"origin": origin, "origin_server_ts": time.Now().UnixMilli(), "pdus": pdus, "edus": edus}
}

// roomState is the room's state as /state shows it, without the unsigned ages.
func roomState(t *testing.T, c *shardtest.Client, roomID string) []any {
	t.Helper()
	body := c.MustDo(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state", nil)
	evs, _ := body["array"].([]any)
	for _, e := range evs {
		delete(e.(map[string]any), "unsigned")
	}
	return evs
}

// TestSendRejectsBadInput: PDUs with forged signatures, tampered content or failing the auth
// rules, sent straight to /send by a real server of the installation, are refused one by one
// and change nothing; oversized transactions are refused whole.
func TestSendRejectsBadInput(t *testing.T) {
	s1 := shardtest.New(t)
	s2 := shardtest.New(t)
	a := s1.CreateTenant(t, "bad_a")
	m := s2.CreateTenant(t, "bad_m")
	alice := a.Register(t, "alice")
	mallory := m.Register(t, "mallory")
	room := alice.MustDo(t, "POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat", "room_version": "10"})
	roomID := room["room_id"].(string)
	r := url.PathEscape(roomID)
	mallory.MustDo(t, "POST", "/_matrix/client/v3/join/"+r+"?server_name="+url.QueryEscape(a.ServerName), map[string]any{})
	t.Cleanup(func() {
		if t.Failed() {
			dumpFederation(t, s1, a)
		}
	})
	id := identityOf(t, s2, m)
	stateBefore := roomState(t, alice, roomID)

	// A control: a well-formed message from mallory is accepted, so the refusals below are
	// about what is wrong with each PDU and not about the harness.
	good := craft(t, id, s1, a, roomID, mallory.UserID, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "legit"})
	st, resp := federationDo(t, id, s1, a, "PUT", "/_matrix/federation/v1/send/good", txnOf(id.server, []json.RawMessage{good.JSON()}, nil))
	if st != http.StatusOK || fmt.Sprint(resp["pdus"]) != fmt.Sprintf("map[%s:map[]]", good.EventID()) {
		t.Fatalf("well-formed PDU: %d %v", st, resp)
	}

	_, otherKey, _ := ed25519.GenerateKey(rand.Reader)
	forger := identity{server: id.server, keyID: id.keyID, key: otherKey}
	empty := ""
	eve := "@eve:" + m.ServerName
	tampered := craft(t, id, s1, a, roomID, mallory.UserID, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "original"})
	tamperedJSON := bytes.Replace(tampered.JSON(), []byte(`"original"`), []byte(`"tampered"`), 1)
	for _, tc := range []struct {
		name    string
		pdu     json.RawMessage
		eventID string
		wantErr string // substring of the per-PDU error; "" when the PDU is accepted redacted
	}{
		{"forged signature", craft(t, forger, s1, a, roomID, mallory.UserID, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "forged"}).JSON(), "", "signature"},
		{"sender not in room", craft(t, id, s1, a, roomID, eve, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "from eve"}).JSON(), "", "auth"},
		{"power levels without power", craft(t, id, s1, a, roomID, mallory.UserID, "m.room.power_levels", &empty,
			map[string]any{"users": map[string]any{mallory.UserID: 100}, "users_default": 0}).JSON(), "", "auth"},
		{"name without power", craft(t, id, s1, a, roomID, mallory.UserID, "m.room.name", &empty, map[string]any{"name": "mine now"}).JSON(), "", "auth"},
		// The spec: an event whose content hash does not match is redacted, then processed.
		{"bad content hash", tamperedJSON, tampered.EventID(), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			evID := tc.eventID
			if evID == "" {
				ev, err := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersionV10).NewEventFromTrustedJSON(tc.pdu, false)
				if err != nil {
					t.Fatal(err)
				}
				evID = ev.EventID()
			}
			st, resp := federationDo(t, id, s1, a, "PUT", "/_matrix/federation/v1/send/"+strings.ReplaceAll(tc.name, " ", "-"),
				txnOf(id.server, []json.RawMessage{tc.pdu}, nil))
			if st != http.StatusOK {
				t.Fatalf("send: %d %v", st, resp)
			}
			pdus, _ := resp["pdus"].(map[string]any)
			res, ok := pdus[evID].(map[string]any)
			if !ok {
				t.Fatalf("no result for %s in %v", evID, resp)
			}
			errMsg, _ := res["error"].(string)
			if tc.wantErr == "" {
				if errMsg != "" {
					t.Fatalf("result %q, want accepted (redacted)", errMsg)
				}
				got := alice.MustDo(t, "GET", "/_matrix/client/v3/rooms/"+r+"/event/"+url.PathEscape(evID), nil)
				if content, _ := got["content"].(map[string]any); len(content) != 0 {
					t.Fatalf("tampered event stored with content %v, want it redacted", content)
				}
				return
			}
			if !strings.Contains(errMsg, tc.wantErr) {
				t.Fatalf("result %q, want an error mentioning %q", errMsg, tc.wantErr)
			}
		})
	}

	// Oversized transactions are refused as a whole with 400 M_BAD_JSON (counts) and 413
	// M_TOO_LARGE (a body over the limit).
	var many []json.RawMessage
	for range 51 {
		many = append(many, good.JSON())
	}
	var edus []gomatrixserverlib.EDU
	for range 101 {
		edus = append(edus, gomatrixserverlib.EDU{Type: spec.MTyping, Content: spec.RawJSON(fmt.Sprintf(`{"room_id":%q,"user_id":%q,"typing":true}`, roomID, mallory.UserID))})
	}
	huge := strings.Repeat("x", 17<<20)
	for _, tc := range []struct {
		name   string
		body   any
		status int
		code   string
	}{
		{"51 PDUs", txnOf(id.server, many, nil), http.StatusBadRequest, "M_BAD_JSON"},
		{"101 EDUs", txnOf(id.server, nil, edus), http.StatusBadRequest, "M_BAD_JSON"},
		{"17 MiB body", map[string]any{"origin": id.server, "pdus": []any{}, "edus": []any{}, "padding": huge}, http.StatusRequestEntityTooLarge, "M_TOO_LARGE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, resp := federationDo(t, id, s1, a, "PUT", "/_matrix/federation/v1/send/big-"+strings.ReplaceAll(tc.name, " ", "-"), tc.body)
			if st != tc.status || resp["errcode"] != tc.code {
				t.Fatalf("got %d %v, want %d %s", st, resp["errcode"], tc.status, tc.code)
			}
		})
	}

	// Nothing changed the room's state, and neither the forged, the unauthorised nor the
	// tampered content shows in alice's history.
	stateAfter := roomState(t, alice, roomID)
	if !reflect.DeepEqual(stateBefore, stateAfter) {
		t.Fatalf("room state changed:\nbefore %v\nafter  %v", stateBefore, stateAfter)
	}
	bodies := messageBodies(t, alice, roomID)
	for _, b := range bodies {
		switch b {
		case "forged", "from eve", "tampered", "original":
			t.Fatalf("alice's history shows %q: %q", b, bodies)
		}
	}
	if !strings.Contains(fmt.Sprint(bodies), "legit") {
		t.Fatalf("the well-formed message is missing from alice's history: %q", bodies)
	}
}
