package federation_test

import (
	"fmt"
	"net/url"
	"testing"

	"github.com/atoll-matrix/atoll/internal/atolltest/shardtest"
)

// TestRoomVersionsAcrossServers: for every stable room version, a room created on one server
// is joined from a server on another shard through the federation API, and a message goes
// each way.
func TestRoomVersionsAcrossServers(t *testing.T) {
	s1 := shardtest.New(t)
	s2 := shardtest.New(t)
	a := s1.CreateTenant(t, "rv_a")
	b := s2.CreateTenant(t, "rv_b")
	alice := a.Register(t, "alice")
	bob := b.Register(t, "bob")
	t.Cleanup(func() {
		if t.Failed() {
			dumpFederation(t, s1, a)
			dumpFederation(t, s2, b)
		}
	})
	for v := 1; v <= 12; v++ {
		version := fmt.Sprint(v)
		t.Run("v"+version, func(t *testing.T) {
			room := alice.MustDo(t, "POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat", "room_version": version})
			roomID := room["room_id"].(string)
			r := url.PathEscape(roomID)
			st := alice.MustDo(t, "GET", "/_matrix/client/v3/rooms/"+r+"/state/m.room.create", nil)
			if got := fmt.Sprint(st["room_version"]); got != version {
				t.Fatalf("create event room_version = %q, want %q", got, version)
			}
			bob.MustDo(t, "POST", "/_matrix/client/v3/join/"+r+"?server_name="+url.QueryEscape(a.ServerName), map[string]any{})
			alice.MustDo(t, "PUT", "/_matrix/client/v3/rooms/"+r+"/send/m.room.message/v"+version+"a", map[string]any{"msgtype": "m.text", "body": "to bob in v" + version})
			waitFor(t, bob, "alice's message at bob", timelineHas(roomID, "m.room.message", "body", "to bob in v"+version))
			bob.MustDo(t, "PUT", "/_matrix/client/v3/rooms/"+r+"/send/m.room.message/v"+version+"b", map[string]any{"msgtype": "m.text", "body": "to alice in v" + version})
			waitFor(t, alice, "bob's message at alice", timelineHas(roomID, "m.room.message", "body", "to alice in v"+version))
			bobState := bob.MustDo(t, "GET", "/_matrix/client/v3/rooms/"+r+"/joined_members", nil)
			if n := len(bobState["joined"].(map[string]any)); n != 2 {
				t.Fatalf("bob sees %d joined members: %v", n, bobState)
			}
		})
	}
}
