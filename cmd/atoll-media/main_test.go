package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/atoll-matrix/atoll/internal/atolltest/s3test"
	"github.com/atoll-matrix/atoll/sidecars/media/hsauth/hsauthtest"
	"github.com/atoll-matrix/atoll/sidecars/media/mediadb/mediadbtest"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestRun starts the binary's wiring from a configuration file, uploads and downloads through
// it, reads its metrics and shuts it down.
func TestRun(t *testing.T) {
	s3 := s3test.New(t)
	dbURL := mediadbtest.URL(t)
	schema := mediadbtest.Schema(t)
	hs := hsauthtest.New(t)
	hs.AddTenant("acme", "acme.example")
	hs.AddUser("acme.example", "tok", hsauthtest.User{UserID: "@alice:acme.example"})

	dir := t.TempDir()
	secret := func(name, v string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(v+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	listen, metrics := freeAddr(t), freeAddr(t)
	cfg := fmt.Sprintf(`listen: %q
metrics_listen: %q
homeserver_url: %q
homeserver_token_file: %q
s3:
  endpoint: %q
  access_key_file: %q
  secret_key_file: %q
  bucket_prefix: %q
database:
  url_file: %q
  schema: %q
`, listen, metrics, hs.URL, secret("token", hs.AdminToken), s3.Endpoint, secret("ak", s3.AccessKey), secret("sk", s3.SecretKey),
		s3.Prefix, secret("db", dbURL), schema)
	path := secret("media.yaml", cfg)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, path, slog.New(slog.NewTextHandler(io.Discard, nil))) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})

	do := func(method, url, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, url, strings.NewReader(body))
		req.Host = "acme.example"
		req.Header.Set("Authorization", "Bearer tok")
		var resp *http.Response
		var err error
		for range 100 { // wait for the listener
			if resp, err = http.DefaultClient.Do(req); err == nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
			req, _ = http.NewRequest(method, url, strings.NewReader(body))
			req.Host = "acme.example"
			req.Header.Set("Authorization", "Bearer tok")
		}
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	status, body := do(http.MethodPost, "http://"+listen+"/_matrix/media/v3/upload", "through the binary")
	var out struct {
		ContentURI string `json:"content_uri"`
	}
	if status != 200 || json.Unmarshal([]byte(body), &out) != nil {
		t.Fatalf("upload: %d %s", status, body)
	}
	status, body = do(http.MethodGet, "http://"+listen+"/_matrix/client/v1/media/download/"+strings.TrimPrefix(out.ContentURI, "mxc://"), "")
	if status != 200 || body != "through the binary" {
		t.Fatalf("download: %d %s", status, body)
	}
	status, body = do(http.MethodGet, "http://"+metrics+"/metrics", "")
	if status != 200 || !strings.Contains(body, "atoll_media_received_bytes_total 18") {
		t.Fatalf("metrics: %d (atoll_media_received_bytes_total missing)", status)
	}
	if status, _ = do(http.MethodGet, "http://"+metrics+"/healthz", ""); status != 200 {
		t.Fatalf("healthz: %d", status)
	}
}
