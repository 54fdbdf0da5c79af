package main

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/atoll-matrix/atoll/internal/atolltest/shardtest"
)

// TestTenantLifecycle drives atollctl tenant against a real shard: create, list, show,
// suspend (the tenant's host answers 403), resume, and the two-step delete.
func TestTenantLifecycle(t *testing.T) {
	s := shardtest.New(t)
	t.Setenv("ATOLL_ADMIN_URL", s.AdminURL)
	t.Setenv("ATOLL_ADMIN_TOKEN", shardtest.AdminToken)
	ctx := context.Background()
	id := fmt.Sprintf("ctl_%d", time.Now().UnixNano()%1e9)
	host := fmt.Sprintf("ctl-%d.test", time.Now().UnixNano()%1e9)
	t.Cleanup(func() {
		_ = tenantCmd(ctx, []string{"suspend", id})
		_ = tenantCmd(ctx, []string{"delete", id})
	})
	if err := tenantCmd(ctx, []string{"create", "--id", id, "--server-name", host, "--registration", "open"}); err != nil {
		t.Fatal(err)
	}
	if err := tenantCmd(ctx, []string{"create", "--id", id, "--server-name", host}); err == nil {
		t.Fatal("creating the same tenant twice succeeded")
	}
	for _, args := range [][]string{{"list"}, {"show", id}} {
		if err := tenantCmd(ctx, args); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
	}
	tn := &shardtest.Tenant{Shard: s, ID: id, ServerName: host}
	alice := tn.Register(t, "alice")

	if err := tenantCmd(ctx, []string{"delete", id}); err == nil {
		t.Fatal("deleting an active tenant succeeded; delete must need a suspended tenant")
	}
	if err := tenantCmd(ctx, []string{"suspend", id}); err != nil {
		t.Fatal(err)
	}
	if st, body := alice.Do(t, "GET", "/_matrix/client/v3/account/whoami", nil); st != http.StatusForbidden {
		t.Fatalf("suspended tenant answered %d %v", st, body)
	}
	if err := tenantCmd(ctx, []string{"resume", id}); err != nil {
		t.Fatal(err)
	}
	alice.MustDo(t, "GET", "/_matrix/client/v3/account/whoami", nil)
	if err := tenantCmd(ctx, []string{"suspend", id}); err != nil {
		t.Fatal(err)
	}
	if err := tenantCmd(ctx, []string{"delete", id}); err != nil {
		t.Fatal(err)
	}
	var exists bool
	if err := s.Process.Pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)`, "t_"+id).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if exists {
		t.Fatal("purged tenant's schema still exists")
	}
	if st, body := alice.Do(t, "GET", "/_matrix/client/v3/account/whoami", nil); st != http.StatusNotFound || body["errcode"] != "M_NOT_FOUND" {
		t.Fatalf("purged tenant's host answered %d %v", st, body)
	}
	if err := tenantCmd(ctx, []string{"show", id}); err == nil {
		t.Fatal("show of a purged tenant succeeded")
	}
}
