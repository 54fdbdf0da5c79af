package federation_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/atoll-matrix/atoll/internal/atolltest/shardtest"
)

// TestKeysAndQueries: a tenant's signed server keys, a signed query from one tenant to another
// (over the installation's own HTTP listener), and unsigned or forged requests refused.
func TestKeysAndQueries(t *testing.T) {
	s := shardtest.New(t)
	a := s.CreateTenant(t, "fed_a")
	b := s.CreateTenant(t, "fed_b")
	bob := b.Register(t, "bob")
	bob.MustDo(t, "PUT", "/_matrix/client/v3/profile/"+bob.UserID+"/displayname", map[string]any{"displayname": "Dr Bob"})
	anon := &shardtest.Client{Tenant: b}

	st, raw := anon.DoRaw(t, "GET", "/_matrix/key/v2/server", nil)
	if st != http.StatusOK {
		t.Fatalf("server keys: %d %s", st, raw)
	}
	var keys gomatrixserverlib.ServerKeyFields
	if err := json.Unmarshal(raw, &keys); err != nil || keys.ServerName != spec.ServerName(b.ServerName) || len(keys.VerifyKeys) != 1 {
		t.Fatalf("server keys = %s (%v)", raw, err)
	}
	for id, k := range keys.VerifyKeys {
		if err := gomatrixserverlib.VerifyJSON(b.ServerName, id, []byte(k.Key), raw); err != nil {
			t.Fatalf("server keys are not self-signed: %v", err)
		}
	}

	// A signed request from tenant A to tenant B.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hostA := s.Process.Shard.Loaded(a.ID)
	if hostA == nil {
		a.Register(t, "alice") // loads the tenant
		hostA = s.Process.Shard.Loaded(a.ID)
	}
	client := s.Process.Federation.Client(hostA.Host)
	profile, err := client.LookupProfile(ctx, spec.ServerName(a.ServerName), spec.ServerName(b.ServerName), bob.UserID, "")
	if err != nil {
		t.Fatal(err)
	}
	if profile.DisplayName != "Dr Bob" {
		t.Fatalf("profile over federation = %+v", profile)
	}

	// Unsigned, and signed with a key that is not the tenant's.
	if st, body := anon.Do(t, "GET", "/_matrix/federation/v1/query/profile?user_id="+bob.UserID, nil); st != http.StatusUnauthorized {
		t.Fatalf("unsigned federation request: %d %v", st, body)
	}
	_, forgedKey, _ := ed25519.GenerateKey(nil) // not published by tenant A
	req := fclient.NewFederationRequest("GET", spec.ServerName(a.ServerName), spec.ServerName(b.ServerName), "/_matrix/federation/v1/query/profile?user_id="+bob.UserID)
	if err := req.Sign(spec.ServerName(a.ServerName), hostA.KeyID, forgedKey); err != nil {
		t.Fatal(err)
	}
	httpReq, err := req.HTTPRequest()
	if err != nil {
		t.Fatal(err)
	}
	httpReq.URL.Scheme, httpReq.URL.Host, httpReq.Host = "http", s.ClientURL[len("http://"):], b.ServerName
	resp, err := http.DefaultClient.Do(httpReq)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("forged signature: %d", resp.StatusCode)
	}
}

// TestRemoteProfileAndAlias: the client API answers profile and alias queries about another
// server's users and rooms by asking that server.
func TestRemoteProfileAndAlias(t *testing.T) {
	s := shardtest.New(t)
	a := s.CreateTenant(t, "rp_a")
	b := s.CreateTenant(t, "rp_b")
	alice := a.Register(t, "alice")
	bob := b.Register(t, "bob")
	bob.MustDo(t, "PUT", "/_matrix/client/v3/profile/"+bob.UserID+"/displayname", map[string]any{"displayname": "Dr Bob"})
	room := bob.MustDo(t, "POST", "/_matrix/client/v3/createRoom", map[string]any{"room_alias_name": "lab", "preset": "public_chat"})["room_id"].(string)

	if p := alice.MustDo(t, "GET", "/_matrix/client/v3/profile/"+bob.UserID, nil); p["displayname"] != "Dr Bob" {
		t.Fatalf("remote profile = %v", p)
	}
	if st, _ := alice.Do(t, "GET", "/_matrix/client/v3/profile/@nobody:"+b.ServerName, nil); st != http.StatusNotFound {
		t.Fatalf("remote profile of nobody: %d", st)
	}
	got := alice.MustDo(t, "GET", "/_matrix/client/v3/directory/room/"+url.PathEscape("#lab:"+b.ServerName), nil)
	if got["room_id"] != room {
		t.Fatalf("remote alias = %v, want %s", got, room)
	}
}

// TestUnknownFederationEndpoint: unknown federation paths answer the spec's JSON error.
func TestUnknownFederationEndpoint(t *testing.T) {
	s := shardtest.New(t)
	b := s.CreateTenant(t, "unk")
	anon := &shardtest.Client{Tenant: b}
	st, body := anon.Do(t, "GET", "/_matrix/federation/v1/nonsense", nil)
	if st != http.StatusNotFound || body["errcode"] != "M_UNRECOGNIZED" {
		t.Fatalf("unknown federation endpoint: %d %v", st, body)
	}
}
