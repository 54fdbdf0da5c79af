package federation_test

import (
	"net/url"
	"testing"

	"github.com/atoll-matrix/atoll/internal/atolltest/shardtest"
)

func presenceHas(user, presence, statusMsg string) func(map[string]any) bool {
	return func(sync map[string]any) bool {
		p, _ := sync["presence"].(map[string]any)
		evs, _ := p["events"].([]any)
		for _, e := range evs {
			ev, _ := e.(map[string]any)
			c, _ := ev["content"].(map[string]any)
			if ev["type"] == "m.presence" && ev["sender"] == user && c["presence"] == presence &&
				(statusMsg == "" || c["status_msg"] == statusMsg) {
				return true
			}
		}
		return false
	}
}

// TestFederatedPresence: alice (server A) and bob (server B, on another shard) share a room;
// each one's presence reaches the other's /sync as m.presence EDUs, and the remote presence
// can be read through the API.
func TestFederatedPresence(t *testing.T) {
	s1 := shardtest.New(t)
	s2 := shardtest.New(t)
	a := s1.CreateTenant(t, "fp_a")
	b := s2.CreateTenant(t, "fp_b")
	alice := a.Register(t, "alice")
	bob := b.Register(t, "bob")
	roomID := alice.MustDo(t, "POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"})["room_id"].(string)
	bob.MustDo(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?server_name="+url.QueryEscape(a.ServerName), map[string]any{})
	t.Cleanup(func() {
		if t.Failed() {
			dumpFederation(t, s1, a)
			dumpFederation(t, s2, b)
		}
	})

	alice.MustDo(t, "PUT", "/_matrix/client/v3/presence/"+url.PathEscape(alice.UserID)+"/status",
		map[string]any{"presence": "unavailable", "status_msg": "in theatre"})
	waitFor(t, bob, "alice's presence at bob", presenceHas(alice.UserID, "unavailable", "in theatre"))
	st := bob.MustDo(t, "GET", "/_matrix/client/v3/presence/"+url.PathEscape(alice.UserID)+"/status", nil)
	if st["presence"] != "unavailable" || st["status_msg"] != "in theatre" {
		t.Fatalf("bob reads alice's presence: %v", st)
	}

	// Bob's sync makes him online; alice sees that.
	waitFor(t, alice, "bob's presence at alice", presenceHas(bob.UserID, "online", ""))

	// A server that joins later hears of alice (still unavailable: her syncs do not override
	// what she set) without her presence changing again.
	c := s2.CreateTenant(t, "fp_c")
	carol := c.Register(t, "carol")
	carol.MustDo(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?server_name="+url.QueryEscape(a.ServerName), map[string]any{})
	waitFor(t, carol, "alice's presence at a server that joined later", presenceHas(alice.UserID, "unavailable", "in theatre"))
}
