package clientapi_test

import (
	"net/http"
	"testing"

	"github.com/atoll-matrix/atoll/internal/atolltest/shardtest"
)

// TestDeactivate: deactivation needs the password, leaves the user's rooms, ends every
// session and refuses later logins.
func TestDeactivate(t *testing.T) {
	s := shardtest.New(t)
	tn := s.CreateTenant(t, "deact")
	alice := tn.Register(t, "alice")
	bob := tn.Register(t, "bob")
	room := alice.MustDo(t, "POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"})["room_id"].(string)
	bob.MustDo(t, "POST", "/_matrix/client/v3/join/"+room, map[string]any{})

	if st, body := alice.Do(t, "POST", "/_matrix/client/v3/account/deactivate", map[string]any{}); st != http.StatusUnauthorized || body["flows"] == nil {
		t.Fatalf("deactivate without auth: %d %v", st, body)
	}
	alice.MustDo(t, "POST", "/_matrix/client/v3/account/deactivate", map[string]any{"auth": map[string]any{
		"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": alice.UserID}, "password": alice.Password}})

	if st, _ := alice.Do(t, "GET", "/_matrix/client/v3/account/whoami", nil); st != http.StatusUnauthorized {
		t.Fatalf("a deactivated user's token still works: %d", st)
	}
	anon := &shardtest.Client{Tenant: tn}
	st, body := anon.Do(t, "POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.password", "user": "alice", "password": alice.Password})
	if st != http.StatusForbidden {
		t.Fatalf("login after deactivation: %d %v", st, body)
	}
	jm := bob.MustDo(t, "GET", "/_matrix/client/v3/rooms/"+room+"/joined_members", nil)
	if _, still := jm["joined"].(map[string]any)[alice.UserID]; still {
		t.Fatalf("the deactivated user is still in the room: %v", jm)
	}
}
