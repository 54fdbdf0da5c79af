package clientapi_test

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/atoll-matrix/atoll/homeserver/config"
	"github.com/atoll-matrix/atoll/homeserver/presence"
	"github.com/atoll-matrix/atoll/internal/atolltest/redistest"
	"github.com/atoll-matrix/atoll/internal/atolltest/shardtest"
)

// presenceOf returns the content of the m.presence event of user in a sync response.
func presenceOf(sync map[string]any, user string) map[string]any {
	evs, _ := get(sync, "presence", "events").([]any)
	for _, e := range evs {
		em, _ := e.(map[string]any)
		if em["type"] == "m.presence" && em["sender"] == user {
			c, _ := em["content"].(map[string]any)
			return c
		}
	}
	return nil
}

func syncPath(since string, timeoutMS int, setPresence string) string {
	p := "/_matrix/client/v3/sync?timeout=" + strconv.Itoa(timeoutMS)
	if since != "" {
		p += "&since=" + url.QueryEscape(since)
	}
	if setPresence != "" {
		p += "&set_presence=" + setPresence
	}
	return p
}

// TestPresence: presence set and read over the API, visible to room-mates only, set through
// /sync's set_presence, delivered in incremental syncs (waking a waiting one), and the idle
// and offline timeouts.
func TestPresence(t *testing.T) {
	s := shardtest.New(t)
	tn := s.CreateTenant(t, "presence")
	alice := tn.Register(t, "alice")
	bob := tn.Register(t, "bob")
	carol := tn.Register(t, "carol")
	room := alice.MustDo(t, "POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"})["room_id"].(string)
	bob.MustDo(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(room), map[string]any{})

	status := func(c *shardtest.Client, user string) (int, map[string]any) {
		return c.Do(t, "GET", "/_matrix/client/v3/presence/"+url.PathEscape(user)+"/status", nil)
	}
	alice.MustDo(t, "PUT", "/_matrix/client/v3/presence/"+url.PathEscape(alice.UserID)+"/status",
		map[string]any{"presence": "unavailable", "status_msg": "on rounds"})
	for _, c := range []*shardtest.Client{alice, bob} {
		st, body := status(c, alice.UserID)
		if st != http.StatusOK || body["presence"] != "unavailable" || body["status_msg"] != "on rounds" {
			t.Fatalf("%s reads alice's presence: %d %v", c.UserID, st, body)
		}
	}
	if st, body := status(carol, alice.UserID); st != http.StatusForbidden {
		t.Fatalf("a stranger reads alice's presence: %d %v", st, body)
	}
	if st, body := bob.Do(t, "PUT", "/_matrix/client/v3/presence/"+url.PathEscape(alice.UserID)+"/status", map[string]any{"presence": "online"}); st != http.StatusForbidden {
		t.Fatalf("bob sets alice's presence: %d %v", st, body)
	}
	if st, body := alice.Do(t, "PUT", "/_matrix/client/v3/presence/"+url.PathEscape(alice.UserID)+"/status", map[string]any{"presence": "busy"}); st != http.StatusBadRequest {
		t.Fatalf("invalid presence: %d %v", st, body)
	}
	if st, body := status(bob, bob.UserID); st != http.StatusOK || body["presence"] != "offline" {
		t.Fatalf("bob's own presence before any sync: %d %v", st, body)
	}
	if st, body := bob.Do(t, "GET", syncPath("", 0, "sometimes"), nil); st != http.StatusBadRequest {
		t.Fatalf("invalid set_presence: %d %v", st, body)
	}

	// Bob's initial sync (set_presence online by default) shows alice and himself.
	first := bob.MustDo(t, "GET", syncPath("", 0, ""), nil)
	if c := presenceOf(first, alice.UserID); c == nil || c["presence"] != "unavailable" || c["status_msg"] != "on rounds" {
		t.Fatalf("alice in bob's initial sync: %v", first["presence"])
	}
	if c := presenceOf(first, bob.UserID); c == nil || c["presence"] != "online" || c["currently_active"] != true || c["last_active_ago"] == nil {
		t.Fatalf("bob in his initial sync: %v", first["presence"])
	}
	if presenceOf(first, carol.UserID) != nil {
		t.Fatalf("carol (no shared room) in bob's sync: %v", first["presence"])
	}
	// Carol sets her presence: nothing for bob.
	carol.MustDo(t, "PUT", "/_matrix/client/v3/presence/"+url.PathEscape(carol.UserID)+"/status", map[string]any{"presence": "online"})
	next := bob.MustDo(t, "GET", syncPath(first["next_batch"].(string), 0, ""), nil)
	if evs, _ := get(next, "presence", "events").([]any); len(evs) != 0 {
		t.Fatalf("bob sees a stranger's presence: %v", evs)
	}

	// A waiting incremental sync of bob wakes when alice comes online through her own sync.
	got := make(chan map[string]any, 1)
	go func() {
		_, body := bob.Do(t, "GET", syncPath(next["next_batch"].(string), 20000, ""), nil)
		got <- body
	}()
	time.Sleep(300 * time.Millisecond)
	alice.MustDo(t, "PUT", "/_matrix/client/v3/presence/"+url.PathEscape(alice.UserID)+"/status", map[string]any{"presence": "offline"})
	aliceSync := alice.MustDo(t, "GET", syncPath("", 0, "online"), nil)
	var inc map[string]any
	select {
	case inc = <-got:
	case <-time.After(15 * time.Second):
		t.Fatal("bob's sync did not wake for alice's presence")
	}
	if c := presenceOf(inc, alice.UserID); c == nil {
		t.Fatalf("alice's change missing from bob's incremental sync: %v", inc["presence"])
	}
	if st, body := status(bob, alice.UserID); body["presence"] != "online" || body["currently_active"] != true {
		t.Fatalf("alice after syncing: %d %v", st, body)
	}
	// set_presence=unavailable marks alice idle.
	alice.MustDo(t, "GET", syncPath(aliceSync["next_batch"].(string), 0, "unavailable"), nil)
	if _, body := status(bob, alice.UserID); body["presence"] != "unavailable" {
		t.Fatalf("after set_presence=unavailable: %v", body)
	}
	// Old tokens (without the presence serial) still parse.
	if st, body := bob.Do(t, "GET", syncPath("s1_0", 0, "offline"), nil); st != http.StatusOK {
		t.Fatalf("old token: %d %v", st, body)
	}

	// Timeouts, shortened: alice's activity (sending) makes her online again; without
	// activity she goes unavailable, without syncs offline.
	s.Process.Presence.SetConfig(presence.Config{SyncTimeout: 2 * time.Second, IdleTimeout: time.Second, ActiveWindow: 500 * time.Millisecond})
	alice.MustDo(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/send/m.room.message/p1", map[string]any{"msgtype": "m.text", "body": "hi"})
	if _, body := status(bob, alice.UserID); body["presence"] != "online" {
		t.Fatalf("after activity: %v", body)
	}
	waitPresence(t, bob, alice.UserID, "unavailable")
	waitPresence(t, bob, alice.UserID, "offline")
}

func waitPresence(t *testing.T, c *shardtest.Client, user, want string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, body := c.Do(t, "GET", "/_matrix/client/v3/presence/"+url.PathEscape(user)+"/status", nil)
		if body["presence"] == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never became %s: %v", user, want, body)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestPresenceRedisMirror: with Redis configured, presence outlives the shard process that
// held it (a restart here; a tenant moving to another shard reads it the same way).
func TestPresenceRedisMirror(t *testing.T) {
	redisURL := redistest.URL(t)
	s := shardtest.New(t, func(c *config.Config) { c.Redis.URL = redisURL })
	tn := s.CreateTenant(t, "presence_mirror")
	t.Cleanup(func() {
		rdb, _ := redistest.New(t)
		rdb.Del(context.Background(), "atoll:presence:"+tn.ID)
	})
	alice := tn.Register(t, "alice")
	alice.MustDo(t, "PUT", "/_matrix/client/v3/presence/"+url.PathEscape(alice.UserID)+"/status",
		map[string]any{"presence": "unavailable", "status_msg": "back at 3"})
	s.Stop(t)
	s.Restart(t)
	_, body := alice.Do(t, "GET", "/_matrix/client/v3/presence/"+url.PathEscape(alice.UserID)+"/status", nil)
	if body["presence"] != "unavailable" || body["status_msg"] != "back at 3" {
		t.Fatalf("presence after a restart: %v", body)
	}
}

// TestPresenceRedisDown: with Redis configured but unreachable, presence works from memory.
func TestPresenceRedisDown(t *testing.T) {
	s := shardtest.New(t, func(c *config.Config) { c.Redis.URL = "redis://127.0.0.1:1/0" })
	tn := s.CreateTenant(t, "presence_noredis")
	alice := tn.Register(t, "alice")
	alice.MustDo(t, "PUT", "/_matrix/client/v3/presence/"+url.PathEscape(alice.UserID)+"/status",
		map[string]any{"presence": "online", "status_msg": "here"})
	sync := alice.MustDo(t, "GET", syncPath("", 0, ""), nil)
	if c := presenceOf(sync, alice.UserID); c == nil || c["status_msg"] != "here" {
		t.Fatalf("own presence in sync without Redis: %v", sync["presence"])
	}
}
