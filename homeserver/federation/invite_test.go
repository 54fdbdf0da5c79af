package federation_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/matrix-org/gomatrix"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/atoll-matrix/atoll/internal/atolltest/shardtest"
)

// invited reports whether a sync lists an invite to roomID whose stripped state names the
// room and holds the user's invite from inviter.
func invited(roomID, name, userID, inviter string) func(map[string]any) bool {
	return func(sync map[string]any) bool {
		rooms, _ := sync["rooms"].(map[string]any)
		inv, _ := rooms["invite"].(map[string]any)
		room, _ := inv[roomID].(map[string]any)
		st, _ := room["invite_state"].(map[string]any)
		evs, _ := st["events"].([]any)
		var hasName, hasInvite bool
		for _, e := range evs {
			ev, _ := e.(map[string]any)
			content, _ := ev["content"].(map[string]any)
			switch ev["type"] {
			case "m.room.name":
				hasName = content["name"] == name
			case "m.room.member":
				if ev["state_key"] == userID && ev["sender"] == inviter && content["membership"] == "invite" {
					hasInvite = true
				}
			}
		}
		return hasName && hasInvite
	}
}

// memberIs reports whether a sync's timeline (joined or left room) has userID's membership.
func memberIs(roomID, userID, membership string) func(map[string]any) bool {
	return func(sync map[string]any) bool {
		rooms, _ := sync["rooms"].(map[string]any)
		for _, section := range []string{"join", "leave"} {
			sec, _ := rooms[section].(map[string]any)
			room, _ := sec[roomID].(map[string]any)
			tl, _ := room["timeline"].(map[string]any)
			evs, _ := tl["events"].([]any)
			for _, e := range evs {
				ev, _ := e.(map[string]any)
				content, _ := ev["content"].(map[string]any)
				if ev["type"] == "m.room.member" && ev["state_key"] == userID && content["membership"] == membership {
					return true
				}
			}
		}
		return false
	}
}

// section returns the room IDs of one section of a fresh initial sync.
func section(t *testing.T, c *shardtest.Client, name string) map[string]any {
	t.Helper()
	body := c.MustDo(t, "GET", "/_matrix/client/v3/sync", nil)
	rooms, _ := body["rooms"].(map[string]any)
	sec, _ := rooms[name].(map[string]any)
	return sec
}

// TestFederatedInvites: alice@A invites bob@B (same shard) and carol@C (other shard) to a
// private room through the federation invite API. Both see the invite with the room's
// stripped state; bob accepts (joins through A) and messages flow; carol rejects (A sees her
// leave). An invite of a user B does not have is refused with a clear error, and a forged
// invite sent straight to B's invite endpoint is refused.
func TestFederatedInvites(t *testing.T) {
	for _, version := range []string{"10", "12"} {
		// Version 12 room IDs name no server: the join must find the inviting server from the
		// stored invite.
		t.Run("v"+version, func(t *testing.T) { testFederatedInvites(t, version) })
	}
}

func testFederatedInvites(t *testing.T, version string) {
	s1 := shardtest.New(t)
	s2 := shardtest.New(t)
	a := s1.CreateTenant(t, "inv_a")
	b := s1.CreateTenant(t, "inv_b")
	c := s2.CreateTenant(t, "inv_c")
	alice := a.Register(t, "alice")
	bob := b.Register(t, "bob")
	carol := c.Register(t, "carol")
	t.Cleanup(func() {
		if t.Failed() {
			dumpFederation(t, s1, a, b, c)
		}
	})

	room := alice.MustDo(t, "POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "private_chat", "name": "Back Office", "room_version": version})
	roomID := room["room_id"].(string)
	r := url.PathEscape(roomID)

	alice.MustDo(t, "POST", "/_matrix/client/v3/rooms/"+r+"/invite", map[string]any{"user_id": bob.UserID})
	alice.MustDo(t, "POST", "/_matrix/client/v3/rooms/"+r+"/invite", map[string]any{"user_id": carol.UserID, "reason": "inventory"})
	waitFor(t, bob, "bob's invite", invited(roomID, "Back Office", bob.UserID, alice.UserID))
	waitFor(t, carol, "carol's invite", invited(roomID, "Back Office", carol.UserID, alice.UserID))
	// The invites are room events at A, signed by the invitees' servers too.
	for _, u := range []*shardtest.Client{bob, carol} {
		m := alice.MustDo(t, "GET", "/_matrix/client/v3/rooms/"+r+"/state/m.room.member/"+url.PathEscape(u.UserID), nil)
		if m["membership"] != "invite" {
			t.Fatalf("%s's membership at A = %v", u.UserID, m)
		}
	}

	// Bob accepts: the join goes through A (the inviting server, from the stored invite).
	joined := bob.MustDo(t, "POST", "/_matrix/client/v3/join/"+r, map[string]any{})
	if joined["room_id"] != roomID {
		t.Fatalf("join = %v", joined)
	}
	waitFor(t, alice, "bob's join at alice", memberIs(roomID, bob.UserID, "join"))
	if inv := section(t, bob, "invite"); inv[roomID] != nil {
		t.Fatalf("bob's invite is still listed after joining: %v", inv)
	}
	if j := section(t, bob, "join"); j[roomID] == nil {
		t.Fatalf("bob's initial sync has no joined room: %v", j)
	}
	bob.MustDo(t, "PUT", "/_matrix/client/v3/rooms/"+r+"/send/m.room.message/1", map[string]any{"msgtype": "m.text", "body": "bob reporting"})
	waitFor(t, alice, "bob's message at alice", timelineHas(roomID, "m.room.message", "body", "bob reporting"))
	alice.MustDo(t, "PUT", "/_matrix/client/v3/rooms/"+r+"/send/m.room.message/1", map[string]any{"msgtype": "m.text", "body": "welcome bob"})
	waitFor(t, bob, "alice's message at bob", timelineHas(roomID, "m.room.message", "body", "welcome bob"))

	// Carol rejects: make_leave/send_leave through A; her server drops the invite.
	carol.MustDo(t, "POST", "/_matrix/client/v3/rooms/"+r+"/leave", map[string]any{})
	waitFor(t, alice, "carol's rejection at alice", memberIs(roomID, carol.UserID, "leave"))
	waitFor(t, bob, "carol's rejection at bob", memberIs(roomID, carol.UserID, "leave"))
	if inv := section(t, carol, "invite"); inv[roomID] != nil {
		t.Fatalf("carol's invite is still listed after rejecting: %v", inv)
	}
	if st, body := carol.Do(t, "POST", "/_matrix/client/v3/rooms/"+r+"/leave", map[string]any{}); st == http.StatusOK {
		t.Fatalf("a second rejection succeeded: %v", body)
	}

	// An invite of a user B does not have.
	nobody := "@nobody:" + b.ServerName
	st, body := alice.Do(t, "POST", "/_matrix/client/v3/rooms/"+r+"/invite", map[string]any{"user_id": nobody})
	if st != http.StatusForbidden || body["errcode"] != "M_FORBIDDEN" || !strings.Contains(fmt.Sprint(body["error"]), "does not exist") {
		t.Fatalf("invite of an unknown user: %d %v", st, body)
	}
	if st, m := alice.Do(t, "GET", "/_matrix/client/v3/rooms/"+r+"/state/m.room.member/"+url.PathEscape(nobody), nil); st == http.StatusOK {
		t.Fatalf("a refused invite was stored: %v", m)
	}

	// A forged invite: a valid X-Matrix request from A carrying an event signed with a key
	// that is not A's.
	dave := b.Register(t, "dave")
	hostA := s1.Process.Shard.Loaded(a.ID)
	if hostA == nil {
		t.Fatal("tenant A is not loaded")
	}
	_, forgedKey, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	target := dave.UserID
	proto := gomatrixserverlib.ProtoEvent{SenderID: alice.UserID, RoomID: roomID, Type: spec.MRoomMember, StateKey: &target,
		Content: spec.RawJSON(`{"membership":"invite"}`), PrevEvents: []string{}, AuthEvents: []string{}, Depth: 10}
	verImpl := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersion(version))
	forged, err := verImpl.NewEventBuilderFromProtoEvent(&proto).Build(time.Now(), spec.ServerName(a.ServerName), hostA.KeyID, forgedKey)
	if err != nil {
		t.Fatal(err)
	}
	req, err := fclient.NewInviteV2Request(forged, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = s1.Process.Federation.Client(hostA.Host).SendInviteV2(ctx, spec.ServerName(a.ServerName), spec.ServerName(b.ServerName), req)
	var he gomatrix.HTTPError
	if !errors.As(err, &he) || (he.Code != http.StatusUnauthorized && he.Code != http.StatusForbidden) {
		t.Fatalf("forged invite: %v", err)
	}
	if inv := section(t, dave, "invite"); len(inv) != 0 {
		t.Fatalf("a forged invite reached dave: %v", inv)
	}
}

// TestRejectInviteUnreachable: an invite whose inviting server cannot be reached is still
// rejected locally: the client gets 200 and the invite leaves /sync.
func TestRejectInviteUnreachable(t *testing.T) {
	s := shardtest.New(t)
	b := s.CreateTenant(t, "invu_b")
	bob := b.Register(t, "bob")
	roomID := "!gone:unreachable.invalid"
	state := `[{"type":"m.room.name","state_key":"","sender":"@eve:unreachable.invalid","content":{"name":"Ghost Town"}},
		{"type":"m.room.member","state_key":"` + bob.UserID + `","sender":"@eve:unreachable.invalid","content":{"membership":"invite"}}]`
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	schema := pgx.Identifier{"t_" + b.ID}.Sanitize()
	if _, err := s.Process.Pool.Exec(ctx, `WITH p AS (UPDATE `+schema+`.stream_head SET pos = pos + 1 RETURNING pos)
		INSERT INTO `+schema+`.remote_invites (room_id, user_id, event_id, sender, origin, room_version, event_json, invite_state,
		membership, stream_pos) SELECT $1, $2, '$ghost', '@eve:unreachable.invalid', 'unreachable.invalid', '10', '{}', $3::jsonb,
		'invite', p.pos FROM p`, roomID, bob.UserID, state); err != nil {
		t.Fatal(err)
	}
	waitFor(t, bob, "the invite", invited(roomID, "Ghost Town", bob.UserID, "@eve:unreachable.invalid"))
	bob.MustDo(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/leave", map[string]any{})
	if inv := section(t, bob, "invite"); inv[roomID] != nil {
		t.Fatalf("the invite is still listed after rejecting: %v", inv)
	}
	if st, body := bob.Do(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/leave", map[string]any{}); st == http.StatusOK {
		t.Fatalf("a second rejection succeeded: %v", body)
	}
}
