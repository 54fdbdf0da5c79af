package clientapi_test

import (
	"bytes"
	"context"
	"net/url"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/atoll-matrix/atoll/internal/atolltest/shardtest"
)

// TestMatrixJSSDKFederated runs testdata/jsclient/federated.mjs: two matrix-js-sdk clients
// with Rust crypto on two tenants of one shard, told apart by client host, that reach each
// other only through the federation API. Bob joins alice's encrypted room through its alias
// and each decrypts the other's message, so device keys, device list updates, one-time key
// claims and room keys (to-device) all cross servers.
func TestMatrixJSSDKFederated(t *testing.T) {
	dir := nodeDeps(t, "testdata/jsclient")
	s := shardtest.New(t)
	u, err := url.Parse(s.ClientURL)
	if err != nil {
		t.Fatal(err)
	}
	port := u.Port()
	hostTenant(t, s, "jsfa", "localhost:"+port)
	hostTenant(t, s, "jsfb", "127.0.0.1:"+port)

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "federated.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "ATOLL_URL_A=http://localhost:"+port, "ATOLL_URL_B=http://127.0.0.1:"+port)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	start := time.Now()
	err = cmd.Run()
	t.Logf("node federated.mjs (%s):\n%s", time.Since(start).Round(time.Millisecond), out.String())
	if err != nil {
		t.Fatalf("federated scenario: %v", err)
	}
	if !hasLine(out.String(), "OK") {
		t.Fatal(`federated scenario exited 0 without printing "OK"`)
	}
}
