package clientapi_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/atoll-matrix/atoll/internal/atolltest/shardtest"
	"github.com/atoll-matrix/atoll/internal/pgdb"
)

// TestMatrixJSSDK runs a matrix-js-sdk client (testdata/jsclient/scenario.mjs, pinned in its
// package-lock.json) against a real shard: registration and password login, a room with an
// invite, a join and messages both ways through /sync, an encrypted room whose message the
// other device decrypts with the SDK's Rust crypto, and a second tenant on the same shard,
// reached by another client host, that sees none of it.
func TestMatrixJSSDK(t *testing.T) {
	dir := nodeDeps(t, "testdata/jsclient")
	s := shardtest.New(t)
	u, err := url.Parse(s.ClientURL)
	if err != nil {
		t.Fatal(err)
	}
	port := u.Port()
	// Two tenants told apart only by the Host the client connects to.
	hostTenant(t, s, "jsa", "localhost:"+port)
	hostTenant(t, s, "jsb", "127.0.0.1:"+port)

	// "prejoined" sets the rooms up before the clients sync; "live" changes memberships while
	// they sync, the way a user does.
	for _, mode := range []string{"prejoined", "live"} {
		t.Run(mode, func(t *testing.T) {
			runScenario(t, dir, mode, "http://localhost:"+port, "http://127.0.0.1:"+port)
		})
	}
}

func runScenario(t *testing.T, dir, mode, urlA, urlB string) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "scenario.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "ATOLL_URL_A="+urlA, "ATOLL_URL_B="+urlB, "ATOLL_JS_MODE="+mode)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	start := time.Now()
	err := cmd.Run()
	t.Logf("node scenario.mjs (mode %s, %s):\n%s", mode, time.Since(start).Round(time.Millisecond), out.String())
	if err != nil {
		t.Fatalf("scenario: %v", err)
	}
	if !hasLine(out.String(), "OK") {
		t.Fatal(`scenario exited 0 without printing "OK"`)
	}
}

func hasLine(out, want string) bool {
	for _, l := range strings.Split(out, "\n") {
		if strings.TrimSpace(l) == want {
			return true
		}
	}
	return false
}

// nodeDeps returns the absolute path of dir (relative to this package) after installing its
// npm dependencies with scripts/npm.sh (npm ci from the committed lockfile, cached outside the
// checkout). Without node it skips, or fails when ATOLL_TEST_REQUIRE_SERVICES=1.
func nodeDeps(t testing.TB, dir string) string {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		if os.Getenv("ATOLL_TEST_REQUIRE_SERVICES") == "1" {
			t.Fatal("node not found and ATOLL_TEST_REQUIRE_SERVICES=1 (scripts/deps.sh installs it)")
		}
		t.Skip("node not found")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "../../scripts/npm.sh", abs)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if _, err := cmd.Output(); err != nil {
		t.Fatalf("scripts/npm.sh %s: %v\n%s", dir, err, stderr.String())
	}
	return abs
}

var hostSeq atomic.Int64

// hostTenant creates a tenant with open registration whose client host is clientHost, and
// removes it when the test ends.
func hostTenant(t testing.TB, s *shardtest.Shard, name, clientHost string) *shardtest.Tenant {
	t.Helper()
	id := fmt.Sprintf("%s_%d%d", name, time.Now().UnixNano()%1e7, hostSeq.Add(1))
	server := strings.ReplaceAll(id, "_", "-") + ".test"
	status, body := s.Admin(t, "POST", "/_atoll/admin/v1/tenants", map[string]any{
		"id": id, "server_name": server, "client_host": clientHost,
		"settings": map[string]any{"registration": "open", "shared_secret": "complement"},
	})
	if status != http.StatusCreated {
		t.Fatalf("create tenant %s (client_host %s): %d %v", id, clientHost, status, body)
	}
	t.Cleanup(func() {
		s.Admin(t, "DELETE", "/_atoll/admin/v1/tenants/"+id, nil)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = s.Process.Pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{pgdb.SchemaName(id)}.Sanitize()+" CASCADE")
		_, _ = s.Process.Pool.Exec(ctx, "DELETE FROM atoll_control.tenants WHERE id = $1", id)
	})
	return &shardtest.Tenant{Shard: s, ID: id, ServerName: server}
}
