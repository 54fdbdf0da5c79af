// Package mediadbtest opens a media metadata store in a schema of the test's own on the
// PostgreSQL named by ATOLL_TEST_POSTGRES_URL and drops the schema on cleanup. Without the
// variable the test is skipped, or fails when ATOLL_TEST_REQUIRE_SERVICES=1.
package mediadbtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/atoll-matrix/atoll/sidecars/media/mediadb"
	"github.com/jackc/pgx/v5"
)

// URL returns the test database URL, skipping or failing the test when it is unset.
func URL(t testing.TB) string {
	t.Helper()
	u := os.Getenv("ATOLL_TEST_POSTGRES_URL")
	if u == "" {
		if os.Getenv("ATOLL_TEST_REQUIRE_SERVICES") == "1" {
			t.Fatal("ATOLL_TEST_POSTGRES_URL unset and ATOLL_TEST_REQUIRE_SERVICES=1")
		}
		t.Skip("ATOLL_TEST_POSTGRES_URL unset; run scripts/services.sh start DIR and source DIR/env")
	}
	return u
}

// Schema returns a fresh schema name for the test and drops that schema on cleanup.
func Schema(t testing.TB) string {
	t.Helper()
	url := URL(t)
	var r [4]byte
	_, _ = rand.Read(r[:])
	name := strings.ToLower(t.Name())
	name = strings.Map(func(c rune) rune {
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' {
			return c
		}
		return '_'
	}, name)
	if len(name) > 40 {
		name = name[:40]
	}
	schema := "atoll_media_t_" + name + "_" + hex.EncodeToString(r[:])
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Errorf("mediadbtest: connect: %v", err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
			t.Errorf("mediadbtest: drop schema %s: %v", schema, err)
		}
	})
	return schema
}

// Open returns a migrated store in a fresh schema, closed and dropped on cleanup.
func Open(t testing.TB) (*mediadb.DB, string) {
	t.Helper()
	schema := Schema(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db, err := mediadb.Open(ctx, URL(t), schema, 4)
	if err != nil {
		t.Fatalf("mediadbtest: open: %v", err)
	}
	t.Cleanup(db.Close)
	return db, schema
}
