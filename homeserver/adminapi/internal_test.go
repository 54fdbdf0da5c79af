package adminapi_test

import (
	"context"
	"errors"
	"testing"

	"github.com/atoll-matrix/atoll/internal/atolltest/shardtest"
	"github.com/atoll-matrix/atoll/sidecars/media/hsauth"
)

// TestMediaSidecarAuthContract checks the internal endpoints the media sidecar relies on,
// with the sidecar's own client against a real shard.
func TestMediaSidecarAuthContract(t *testing.T) {
	s := shardtest.New(t)
	a := s.CreateTenant(t, "media_a")
	b := s.CreateTenant(t, "media_b")
	alice := a.Register(t, "alice")
	ctx := context.Background()

	c := hsauth.New(hsauth.Options{BaseURL: s.AdminURL, AdminToken: shardtest.AdminToken})
	id, err := c.Authenticate(ctx, a.ServerName, alice.Token)
	if err != nil {
		t.Fatal(err)
	}
	if id.TenantID != a.ID || id.UserID != alice.UserID || id.DeviceID != alice.DeviceID || id.ServerName != a.ServerName {
		t.Fatalf("identity = %+v", id)
	}
	// A's token presented on B's host is unknown there.
	_, err = c.Authenticate(ctx, b.ServerName, alice.Token)
	var me *hsauth.MatrixError
	if !errors.As(err, &me) || me.Status != 401 || me.ErrCode != "M_UNKNOWN_TOKEN" {
		t.Fatalf("A's token on B: %v", err)
	}
	// An unknown host is a 404.
	if _, err := c.TenantByHost(ctx, "nobody.invalid"); !errors.As(err, &me) || me.Status != 404 {
		t.Fatalf("unknown host: %v", err)
	}
	tn, err := c.TenantByHost(ctx, b.ServerName)
	if err != nil || tn.TenantID != b.ID {
		t.Fatalf("tenant by host = %+v, %v", tn, err)
	}
	// A wrong admin token is refused.
	bad := hsauth.New(hsauth.Options{BaseURL: s.AdminURL, AdminToken: "wrong-token-wrong-token"})
	if _, err := bad.Authenticate(ctx, a.ServerName, alice.Token); err == nil {
		t.Fatal("wrong admin token accepted")
	}
}
