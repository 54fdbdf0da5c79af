package clientapi_test

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/atoll-matrix/atoll/internal/atolltest/shardtest"
)

func get(m map[string]any, path ...string) any {
	var cur any = m
	for _, p := range path {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = mm[p]
	}
	return cur
}

func timelineBodies(t *testing.T, sync map[string]any, roomID string) []string {
	t.Helper()
	evs, _ := get(sync, "rooms", "join", roomID, "timeline", "events").([]any)
	var out []string
	for _, e := range evs {
		em := e.(map[string]any)
		if em["type"] == "m.room.message" {
			out = append(out, get(em, "content", "body").(string))
		}
	}
	return out
}

// TestTwoTenants drives a shard over HTTP: two tenants, users on each, rooms, messages, state,
// sync, and isolation between the tenants.
func TestTwoTenants(t *testing.T) {
	s := shardtest.New(t)
	a := s.CreateTenant(t, "clinic_a")
	b := s.CreateTenant(t, "clinic_b")
	alice := a.Register(t, "alice")
	bob := a.Register(t, "bob")
	carol := b.Register(t, "carol")

	_, body := alice.Do(t, "POST", "/_matrix/client/v3/createRoom", map[string]any{"name": "Ward 1", "invite": []string{bob.UserID}})
	roomID, _ := body["room_id"].(string)
	if roomID == "" {
		t.Fatalf("createRoom: %v", body)
	}
	bob.MustDo(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID), map[string]any{})

	_, initial := bob.Do(t, "GET", "/_matrix/client/v3/sync", nil)
	since := initial["next_batch"].(string)

	// A long-polling sync is woken by the message.
	type result struct {
		status int
		body   map[string]any
	}
	done := make(chan result, 1)
	go func() {
		st, b := bob.Do(t, "GET", "/_matrix/client/v3/sync?timeout=20000&since="+since, nil)
		done <- result{st, b}
	}()
	time.Sleep(200 * time.Millisecond)
	alice.MustDo(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/send/m.room.message/txn1", map[string]any{"msgtype": "m.text", "body": "hello bob"})
	select {
	case r := <-done:
		if got := timelineBodies(t, r.body, roomID); len(got) != 1 || got[0] != "hello bob" {
			t.Fatalf("incremental sync timeline = %v (%v)", got, r.body)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("long-polling sync was not woken by the message")
	}

	// The same transaction ID returns the same event.
	_, e1 := alice.Do(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/send/m.room.message/txn2", map[string]any{"msgtype": "m.text", "body": "once"})
	_, e2 := alice.Do(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/send/m.room.message/txn2", map[string]any{"msgtype": "m.text", "body": "once"})
	if e1["event_id"] == nil || e1["event_id"] != e2["event_id"] {
		t.Fatalf("retried transaction created a second event: %v %v", e1, e2)
	}
	// The same transaction ID in another room is another message.
	other := alice.MustDo(t, "POST", "/_matrix/client/v3/createRoom", map[string]any{})["room_id"].(string)
	e3 := alice.MustDo(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(other)+"/send/m.room.message/txn2", map[string]any{"msgtype": "m.text", "body": "once"})
	if e3["event_id"] == e1["event_id"] {
		t.Fatalf("a transaction ID reused in another room returned the first room's event")
	}

	// State and messages.
	alice.MustDo(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state/m.room.topic", map[string]any{"topic": "beds"})
	_, topic := bob.Do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state/m.room.topic", nil)
	if topic["topic"] != "beds" {
		t.Fatalf("topic = %v", topic)
	}
	_, msgs := bob.Do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/messages?dir=b&limit=50", nil)
	chunk, _ := msgs["chunk"].([]any)
	if len(chunk) < 8 {
		t.Fatalf("messages chunk has %d events: %v", len(chunk), msgs)
	}

	// Bob may not change power levels (auth rules).
	st, fb := bob.Do(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state/m.room.power_levels", map[string]any{"users": map[string]int{bob.UserID: 100}})
	if st != http.StatusForbidden || fb["errcode"] != "M_FORBIDDEN" {
		t.Fatalf("power level change by bob: %d %v", st, fb)
	}

	// Tenant isolation: alice's token on tenant B's host is unknown there.
	stolen := &shardtest.Client{Tenant: b, Token: alice.Token}
	st, body = stolen.Do(t, "GET", "/_matrix/client/v3/account/whoami", nil)
	if st != http.StatusUnauthorized || body["errcode"] != "M_UNKNOWN_TOKEN" {
		t.Fatalf("A's token on B: %d %v", st, body)
	}
	// Carol cannot see or join A's room, nor resolve A's users.
	st, body = carol.Do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/messages?dir=b", nil)
	if st != http.StatusForbidden {
		t.Fatalf("B reading A's room: %d %v", st, body)
	}
	st, _ = carol.Do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID), map[string]any{})
	if st == http.StatusOK {
		t.Fatal("B joined A's room by ID on the shared shard")
	}
	_, sync := carol.Do(t, "GET", "/_matrix/client/v3/sync", nil)
	if rooms := get(sync, "rooms", "join").(map[string]any); len(rooms) != 0 {
		t.Fatalf("B sees rooms: %v", rooms)
	}
	// Tenants are separate servers: B learns A's public profile only by asking A over
	// (signed) federation, like any other server would.
	st, body = carol.Do(t, "GET", "/_matrix/client/v3/profile/"+url.PathEscape(alice.UserID), nil)
	if st != http.StatusOK || body["displayname"] != "alice" {
		t.Fatalf("B reading A's public profile through federation: %d %v", st, body)
	}
	if st, _ = carol.Do(t, "GET", "/_matrix/client/v3/profile/"+url.PathEscape("@nobody:"+a.ServerName), nil); st != http.StatusNotFound {
		t.Fatalf("B reading a profile A does not have: %d", st)
	}
}

// TestBadInput checks that malformed requests get the spec's errors, never a 500.
func TestBadInput(t *testing.T) {
	s := shardtest.New(t)
	a := s.CreateTenant(t, "bad")
	alice := a.Register(t, "alice")
	_, body := alice.Do(t, "POST", "/_matrix/client/v3/createRoom", map[string]any{})
	room := url.PathEscape(body["room_id"].(string))
	anon := &shardtest.Client{Tenant: a}
	unknownHost := &shardtest.Client{Tenant: &shardtest.Tenant{Shard: s, ServerName: "nobody.invalid"}}

	cases := []struct {
		name    string
		client  *shardtest.Client
		method  string
		path    string
		body    any
		status  int
		errcode string
	}{
		{"malformed JSON", alice, "POST", "/_matrix/client/v3/createRoom", "{not json", 400, "M_NOT_JSON"},
		{"array body", alice, "POST", "/_matrix/client/v3/createRoom", "[1,2]", 400, "M_BAD_JSON"},
		{"wrong type", alice, "POST", "/_matrix/client/v3/createRoom", `{"name": 5}`, 400, "M_BAD_JSON"},
		{"oversized body", alice, "PUT", "/_matrix/client/v3/rooms/" + room + "/send/m.room.message/big", `{"body":"` + strings.Repeat("x", 2<<20) + `"}`, 413, "M_TOO_LARGE"},
		{"oversized event", alice, "PUT", "/_matrix/client/v3/rooms/" + room + "/send/m.room.message/big2", `{"body":"` + strings.Repeat("x", 70000) + `"}`, 413, "M_TOO_LARGE"},
		{"unknown endpoint", alice, "GET", "/_matrix/client/v3/nonsense", nil, 404, "M_UNRECOGNIZED"},
		{"wrong method", alice, "DELETE", "/_matrix/client/v3/createRoom", nil, 405, "M_UNRECOGNIZED"},
		{"no token", anon, "GET", "/_matrix/client/v3/account/whoami", nil, 401, "M_MISSING_TOKEN"},
		{"bad token", &shardtest.Client{Tenant: a, Token: "nope"}, "GET", "/_matrix/client/v3/account/whoami", nil, 401, "M_UNKNOWN_TOKEN"},
		{"invalid room ID", alice, "GET", "/_matrix/client/v3/rooms/notaroom/state", nil, 400, "M_INVALID_PARAM"},
		{"invalid user ID", alice, "GET", "/_matrix/client/v3/profile/nobody", nil, 400, "M_INVALID_PARAM"},
		{"unknown room", alice, "PUT", "/_matrix/client/v3/rooms/" + url.PathEscape("!nope:"+a.ServerName) + "/send/m.room.message/x", map[string]any{"body": "x"}, 404, "M_NOT_FOUND"},
		{"bad room version", alice, "POST", "/_matrix/client/v3/createRoom", map[string]any{"room_version": "999"}, 400, "M_UNSUPPORTED_ROOM_VERSION"},
		{"bad since", alice, "GET", "/_matrix/client/v3/sync?since=garbage", nil, 400, "M_INVALID_PARAM"},
		{"bad dir", alice, "GET", "/_matrix/client/v3/rooms/" + room + "/messages?dir=x", nil, 400, "M_INVALID_PARAM"},
		{"unknown host", unknownHost, "GET", "/_matrix/client/v3/login", nil, 404, "M_NOT_FOUND"},
		{"weird username", anon, "POST", "/_matrix/client/v3/register", map[string]any{"username": "Ä!", "auth": map[string]any{"type": "m.login.dummy"}}, 400, "M_INVALID_USERNAME"},
		{"taken username", anon, "POST", "/_matrix/client/v3/register", map[string]any{"username": "alice", "auth": map[string]any{"type": "m.login.dummy"}}, 400, "M_USER_IN_USE"},
		{"wrong password", anon, "POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.password", "user": "alice", "password": "x"}, 403, "M_FORBIDDEN"},
		{"redact unknown", alice, "PUT", "/_matrix/client/v3/rooms/" + room + "/redact/$nope/t1", map[string]any{}, 404, "M_NOT_FOUND"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st, body := tc.client.Do(t, tc.method, tc.path, tc.body)
			if st != tc.status || body["errcode"] != tc.errcode {
				t.Fatalf("got %d %v, want %d %s", st, body, tc.status, tc.errcode)
			}
			if msg, _ := body["error"].(string); msg == "" {
				t.Fatalf("error message is empty: %v", body)
			}
		})
	}
}

// TestRoomVersions creates a room of every stable version and exercises join, send, kick, ban.
func TestRoomVersions(t *testing.T) {
	s := shardtest.New(t)
	a := s.CreateTenant(t, "versions")
	alice := a.Register(t, "alice")
	bob := a.Register(t, "bob")
	for v := 1; v <= 12; v++ {
		t.Run(fmt.Sprint("v", v), func(t *testing.T) {
			_, body := alice.Do(t, "POST", "/_matrix/client/v3/createRoom", map[string]any{"room_version": fmt.Sprint(v), "preset": "public_chat"})
			roomID, _ := body["room_id"].(string)
			if roomID == "" {
				t.Fatalf("createRoom v%d: %v", v, body)
			}
			r := url.PathEscape(roomID)
			bob.MustDo(t, "POST", "/_matrix/client/v3/join/"+r, map[string]any{})
			bob.MustDo(t, "PUT", "/_matrix/client/v3/rooms/"+r+"/send/m.room.message/1", map[string]any{"msgtype": "m.text", "body": "hi"})
			alice.MustDo(t, "POST", "/_matrix/client/v3/rooms/"+r+"/kick", map[string]any{"user_id": bob.UserID})
			alice.MustDo(t, "POST", "/_matrix/client/v3/rooms/"+r+"/ban", map[string]any{"user_id": bob.UserID})
			if st, _ := bob.Do(t, "POST", "/_matrix/client/v3/join/"+r, map[string]any{}); st != http.StatusForbidden {
				t.Fatalf("banned user joined: %d", st)
			}
			alice.MustDo(t, "POST", "/_matrix/client/v3/rooms/"+r+"/unban", map[string]any{"user_id": bob.UserID})
			bob.MustDo(t, "POST", "/_matrix/client/v3/join/"+r, map[string]any{})
		})
	}
}
