package federation_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/atoll-matrix/atoll/internal/atolltest/shardtest"
)

// waitFor polls the user's sync until ok accepts a response, failing after 20s.
func waitFor(t *testing.T, c *shardtest.Client, what string, ok func(sync map[string]any) bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	since := ""
	var last map[string]any
	var tokens []string
	for time.Now().Before(deadline) {
		// include_leave: a kick may land before the first sync.
		path := "/_matrix/client/v3/sync?timeout=2000&filter=" + url.QueryEscape(`{"room":{"include_leave":true}}`)
		if since != "" {
			path += "&since=" + url.QueryEscape(since)
		}
		st, body := c.Do(t, "GET", path, nil)
		if st != http.StatusOK {
			t.Fatalf("%s: sync %d %v", what, st, body)
		}
		if ok(body) {
			return
		}
		last = body
		since, _ = body["next_batch"].(string)
		tokens = append(tokens, since)
	}
	// What a full sync shows now, to tell a missed wake-up from a missing event.
	_, full := c.Do(t, "GET", "/_matrix/client/v3/sync", nil)
	t.Fatalf("%s: not seen within 20s; tokens %v; last incremental sync %v; a fresh initial sync %v", what, tokens, last, full["rooms"])
}

func timelineHas(roomID, evType, field, value string) func(map[string]any) bool {
	return func(sync map[string]any) bool {
		rooms, _ := sync["rooms"].(map[string]any)
		for _, section := range []string{"join", "leave"} {
			sec, _ := rooms[section].(map[string]any)
			room, _ := sec[roomID].(map[string]any)
			tl, _ := room["timeline"].(map[string]any)
			evs, _ := tl["events"].([]any)
			for _, e := range evs {
				ev := e.(map[string]any)
				if ev["type"] != evType {
					continue
				}
				content, _ := ev["content"].(map[string]any)
				if fmt.Sprint(content[field]) == value {
					return true
				}
			}
		}
		return false
	}
}

// TestFederatedRoom: users of three servers (two tenants on one shard, one on another shard)
// share a room over the federation API: joins through an alias, messages both ways, a state
// change and a kick are seen the same everywhere.
func TestFederatedRoom(t *testing.T) {
	s1 := shardtest.New(t)
	s2 := shardtest.New(t)
	a := s1.CreateTenant(t, "fr_a")
	b := s1.CreateTenant(t, "fr_b")
	c := s2.CreateTenant(t, "fr_c")
	alice := a.Register(t, "alice")
	bob := b.Register(t, "bob")
	carol := c.Register(t, "carol")

	room := alice.MustDo(t, "POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat", "room_alias_name": "ward", "name": "Ward"})
	roomID := room["room_id"].(string)
	alias := "#ward:" + a.ServerName

	// Bob (same shard, other tenant) joins through the alias: directory query, make_join, send_join.
	joined := bob.MustDo(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(alias), map[string]any{})
	if joined["room_id"] != roomID {
		t.Fatalf("join through alias = %v", joined)
	}
	// Carol, on the other shard, joins by room ID through alice's server.
	carol.MustDo(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?server_name="+url.QueryEscape(a.ServerName), map[string]any{})

	r := url.PathEscape(roomID)
	t.Cleanup(func() {
		if t.Failed() {
			dumpFederation(t, s1, a, b, c)
		}
	})
	alice.MustDo(t, "PUT", "/_matrix/client/v3/rooms/"+r+"/send/m.room.message/1", map[string]any{"msgtype": "m.text", "body": "from alice"})
	waitFor(t, bob, "alice's message at bob", timelineHas(roomID, "m.room.message", "body", "from alice"))
	waitFor(t, carol, "alice's message at carol", timelineHas(roomID, "m.room.message", "body", "from alice"))

	bob.MustDo(t, "PUT", "/_matrix/client/v3/rooms/"+r+"/send/m.room.message/1", map[string]any{"msgtype": "m.text", "body": "from bob"})
	waitFor(t, alice, "bob's message at alice", timelineHas(roomID, "m.room.message", "body", "from bob"))
	waitFor(t, carol, "bob's message at carol", timelineHas(roomID, "m.room.message", "body", "from bob"))

	carol.MustDo(t, "PUT", "/_matrix/client/v3/rooms/"+r+"/send/m.room.message/1", map[string]any{"msgtype": "m.text", "body": "from carol"})
	waitFor(t, alice, "carol's message at alice", timelineHas(roomID, "m.room.message", "body", "from carol"))

	alice.MustDo(t, "PUT", "/_matrix/client/v3/rooms/"+r+"/state/m.room.topic", map[string]any{"topic": "night shift"})
	for _, u := range []*shardtest.Client{bob, carol} {
		deadline := time.Now().Add(20 * time.Second)
		for {
			st, body := u.Do(t, "GET", "/_matrix/client/v3/rooms/"+r+"/state/m.room.topic", nil)
			if st == http.StatusOK && body["topic"] == "night shift" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s does not see the topic: %d %v", u.UserID, st, body)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}

	// Typing and read receipts cross servers as EDUs.
	// Typing EDUs are best effort (the spec does not retry them); clients repeat the notice
	// while the user types, and so does this test.
	waitFor(t, alice, "bob typing at alice", func(sync map[string]any) bool {
		if ephemeralHas(sync, roomID, "m.typing", bob.UserID) {
			return true
		}
		bob.MustDo(t, "PUT", "/_matrix/client/v3/rooms/"+r+"/typing/"+url.PathEscape(bob.UserID), map[string]any{"typing": true, "timeout": 10000})
		return false
	})
	lastMsg := carol.MustDo(t, "PUT", "/_matrix/client/v3/rooms/"+r+"/send/m.room.message/r", map[string]any{"msgtype": "m.text", "body": "read me"})["event_id"].(string)
	waitFor(t, alice, "carol's second message at alice", timelineHas(roomID, "m.room.message", "body", "read me"))
	alice.MustDo(t, "POST", "/_matrix/client/v3/rooms/"+r+"/receipt/m.read/"+url.PathEscape(lastMsg), map[string]any{})
	waitFor(t, carol, "alice's receipt at carol", func(sync map[string]any) bool {
		return ephemeralHas(sync, roomID, "m.receipt", alice.UserID)
	})

	// Members agree everywhere.
	for _, u := range []*shardtest.Client{alice, bob, carol} {
		jm := u.MustDo(t, "GET", "/_matrix/client/v3/rooms/"+r+"/joined_members", nil)
		if n := len(jm["joined"].(map[string]any)); n != 3 {
			t.Fatalf("%s sees %d joined members: %v", u.UserID, n, jm)
		}
	}

	// Alice kicks carol: carol's server learns it, carol can no longer send.
	alice.MustDo(t, "POST", "/_matrix/client/v3/rooms/"+r+"/kick", map[string]any{"user_id": carol.UserID, "reason": "shift over"})
	waitFor(t, carol, "carol's kick at carol", timelineHas(roomID, "m.room.member", "membership", "leave"))
	waitFor(t, bob, "carol's kick at bob", timelineHas(roomID, "m.room.member", "membership", "leave"))
	if st, _ := carol.Do(t, "PUT", "/_matrix/client/v3/rooms/"+r+"/send/m.room.message/2", map[string]any{"msgtype": "m.text", "body": "still here?"}); st == http.StatusOK {
		t.Fatal("kicked user could still send")
	}

	// A ban keeps carol out; bob leaving is seen at alice's server.
	alice.MustDo(t, "POST", "/_matrix/client/v3/rooms/"+r+"/ban", map[string]any{"user_id": carol.UserID})
	waitFor(t, bob, "carol's ban at bob", timelineHas(roomID, "m.room.member", "membership", "ban"))
	if st, _ := carol.Do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?server_name="+url.QueryEscape(a.ServerName), map[string]any{}); st == http.StatusOK {
		t.Fatal("a banned user joined again")
	}
	bob.MustDo(t, "POST", "/_matrix/client/v3/rooms/"+r+"/leave", map[string]any{})
	waitFor(t, alice, "bob's leave at alice", func(sync map[string]any) bool {
		jm := alice.MustDo(t, "GET", "/_matrix/client/v3/rooms/"+r+"/joined_members", nil)
		return len(jm["joined"].(map[string]any)) == 1
	})
}

func ephemeralHas(sync map[string]any, roomID, evType, user string) bool {
	rooms, _ := sync["rooms"].(map[string]any)
	join, _ := rooms["join"].(map[string]any)
	room, _ := join[roomID].(map[string]any)
	eph, _ := room["ephemeral"].(map[string]any)
	evs, _ := eph["events"].([]any)
	for _, e := range evs {
		ev, _ := e.(map[string]any)
		if ev["type"] != evType {
			continue
		}
		b, _ := json.Marshal(ev["content"])
		if strings.Contains(string(b), user) {
			return true
		}
	}
	return false
}

// dumpFederation logs each tenant's queue and the events it stored, to explain a failure.
func dumpFederation(t *testing.T, s *shardtest.Shard, tenants ...*shardtest.Tenant) {
	ctx := context.Background()
	for _, tn := range tenants {
		schema := pgx.Identifier{"t_" + tn.ID}.Sanitize()
		rows, err := s.Process.Pool.Query(ctx, `SELECT destination, kind, left(payload::text, 120) FROM `+schema+`.federation_outbox`)
		if err == nil {
			for rows.Next() {
				var d, k, p string
				_ = rows.Scan(&d, &k, &p)
				t.Logf("%s outbox: %s %s %s", tn.ID, d, k, p)
			}
			rows.Close()
		}
		rows, err = s.Process.Pool.Query(ctx, `SELECT destination, failures, coalesce(last_error, '') FROM `+schema+`.federation_destinations`)
		if err == nil {
			for rows.Next() {
				var d, e string
				var f int
				_ = rows.Scan(&d, &f, &e)
				t.Logf("%s destination %s: %d failures, %s", tn.ID, d, f, e)
			}
			rows.Close()
		}
		rows, err = s.Process.Pool.Query(ctx, `SELECT stream_pos, type, sender, outlier, soft_failed FROM `+schema+`.events ORDER BY stream_pos`)
		if err == nil {
			for rows.Next() {
				var pos int64
				var typ, sender string
				var outlier, soft bool
				_ = rows.Scan(&pos, &typ, &sender, &outlier, &soft)
				t.Logf("%s event %d %s from %s outlier=%v soft_failed=%v", tn.ID, pos, typ, sender, outlier, soft)
			}
			rows.Close()
		}
	}
	var n int
	_ = s.Process.Pool.QueryRow(ctx, `SELECT count(*) FROM atoll_control.outbox_tenants`).Scan(&n)
	t.Logf("outbox tenants: %d", n)
}
