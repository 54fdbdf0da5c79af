package federation_test

import (
	"net/url"
	"testing"

	"github.com/atoll-matrix/atoll/internal/atolltest/shardtest"
)

// TestCreateRoomInvitesRemote: invitees of another server named in createRoom get a real
// (federation-signed) invite and can join; local invitees are invited as before.
func TestCreateRoomInvitesRemote(t *testing.T) {
	s := shardtest.New(t)
	a := s.CreateTenant(t, "ci_a")
	b := s.CreateTenant(t, "ci_b")
	alice := a.Register(t, "alice")
	ann := a.Register(t, "ann")
	bob := b.Register(t, "bob")
	room := alice.MustDo(t, "POST", "/_matrix/client/v3/createRoom", map[string]any{
		"preset": "trusted_private_chat", "is_direct": true, "invite": []string{ann.UserID, bob.UserID}, "name": "Consult"})
	roomID := room["room_id"].(string)
	invited := func(sync map[string]any) bool {
		rooms, _ := sync["rooms"].(map[string]any)
		inv, _ := rooms["invite"].(map[string]any)
		_, ok := inv[roomID]
		return ok
	}
	waitFor(t, bob, "bob's invite", invited)
	waitFor(t, ann, "ann's invite", invited)
	bob.MustDo(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID), map[string]any{})
	alice.MustDo(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/send/m.room.message/1", map[string]any{"msgtype": "m.text", "body": "welcome"})
	waitFor(t, bob, "alice's message at bob", timelineHas(roomID, "m.room.message", "body", "welcome"))
}
