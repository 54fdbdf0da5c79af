// Package pgtest gives tests a real PostgreSQL: the server named by ATOLL_TEST_POSTGRES_URL
// (started by `make test`), a pool, and schemas named after the test that are dropped on cleanup.
package pgtest

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/atoll-matrix/atoll/internal/pgdb"
)

// URL returns the test database URL, skipping (or, with ATOLL_TEST_REQUIRE_SERVICES=1,
// failing) the test when none is configured.
func URL(t testing.TB) string {
	t.Helper()
	u := os.Getenv("ATOLL_TEST_POSTGRES_URL")
	if u == "" {
		if os.Getenv("ATOLL_TEST_REQUIRE_SERVICES") == "1" {
			t.Fatal("ATOLL_TEST_POSTGRES_URL is not set (run the tests through `make test`)")
		}
		t.Skip("ATOLL_TEST_POSTGRES_URL is not set; run the tests through `make test`")
	}
	return u
}

// Pool opens a pool on the test database, closed on cleanup.
func Pool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pool, err := pgdb.Open(ctx, URL(t), 10)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

var unsafe = regexp.MustCompile(`[^a-z0-9_]+`)

// Name returns a lower-case identifier derived from the test name, unique per call, fit for a
// tenant ID or schema name.
func Name(t testing.TB) string {
	t.Helper()
	n := unsafe.ReplaceAllString(strings.ToLower(t.Name()), "_")
	if len(n) > 24 {
		n = n[len(n)-24:]
	}
	return strings.Trim(fmt.Sprintf("%s_%x", n, time.Now().UnixNano()&0xffffffff), "_")
}

// DropSchemaOnCleanup drops schema (and everything in it) when the test ends.
func DropSchemaOnCleanup(t testing.TB, pool *pgxpool.Pool, schema string) {
	t.Helper()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
}
