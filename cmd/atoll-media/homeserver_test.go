package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/atoll-matrix/atoll/homeserver/config"
	"github.com/atoll-matrix/atoll/internal/atolltest/s3test"
	"github.com/atoll-matrix/atoll/internal/atolltest/shardtest"
	"github.com/atoll-matrix/atoll/sidecars/media/mediadb/mediadbtest"
)

// TestWithRealHomeserver runs the sidecar beside a real shard: users authenticate through the
// shard, a tenant's bucket is created with the tenant, its media is invisible to another
// tenant, and purging the tenant deletes its objects and bucket.
func TestWithRealHomeserver(t *testing.T) {
	s3 := s3test.New(t)
	dbURL := mediadbtest.URL(t)
	schema := mediadbtest.Schema(t)
	listen, metrics := freeAddr(t), freeAddr(t)
	shard := shardtest.New(t, func(c *config.Config) { c.Media.URL = "http://" + listen })

	dir := t.TempDir()
	secret := func(name, v string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(v+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
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
`, listen, metrics, shard.AdminURL, secret("token", shardtest.AdminToken), s3.Endpoint, secret("ak", s3.AccessKey), secret("sk", s3.SecretKey),
		s3.Prefix, secret("db", dbURL), schema)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, secret("media.yaml", cfg), slog.New(slog.NewTextHandler(io.Discard, nil))) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	waitListening(t, listen)

	a := shard.CreateTenant(t, "media_a")
	b := shard.CreateTenant(t, "media_b")
	alice := a.Register(t, "alice")
	bob := b.Register(t, "bob")
	bucket := s3.Prefix + strings.ReplaceAll(a.ID, "_", "-")
	if ok, err := s3.Client.BucketExists(ctx, bucket); err != nil || !ok {
		t.Fatalf("bucket %s not created with the tenant: %v %v", bucket, ok, err)
	}

	do := func(host, token, method, path, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, "http://"+listen+path, strings.NewReader(body))
		req.Host = host
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(out)
	}
	status, body := do(a.ServerName, alice.Token, "POST", "/_matrix/media/v3/upload", "x-ray of ward 3")
	var up struct {
		ContentURI string `json:"content_uri"`
	}
	if status != 200 || json.Unmarshal([]byte(body), &up) != nil {
		t.Fatalf("upload: %d %s", status, body)
	}
	path := "/_matrix/client/v1/media/download/" + strings.TrimPrefix(up.ContentURI, "mxc://")
	if status, body = do(a.ServerName, alice.Token, "GET", path, ""); status != 200 || body != "x-ray of ward 3" {
		t.Fatalf("download: %d %s", status, body)
	}
	// B's users reach A's media only as any other server's would: over signed federation, into
	// B's own cache (federation_test.go covers that path).
	if status, body = do(b.ServerName, bob.Token, "GET", path, ""); status != 200 || body != "x-ray of ward 3" {
		t.Fatalf("download through B: %d %s", status, body)
	}
	bucketB := s3.Prefix + strings.ReplaceAll(b.ID, "_", "-")
	if _, err := s3.Client.StatObject(ctx, bucketB, "remote/"+strings.TrimPrefix(up.ContentURI, "mxc://"), minio.StatObjectOptions{}); err != nil {
		t.Fatalf("B's copy is not a cached remote copy in B's bucket: %v", err)
	}
	if status, _ = do(b.ServerName, alice.Token, "GET", path, ""); status != http.StatusUnauthorized {
		t.Fatalf("A's token on B's host: %d", status)
	}

	if st, resp := shard.Admin(t, "POST", "/_atoll/admin/v1/tenants/"+a.ID+"/suspend", nil); st != 200 {
		t.Fatalf("suspend: %d %v", st, resp)
	}
	if st, resp := shard.Admin(t, "DELETE", "/_atoll/admin/v1/tenants/"+a.ID, nil); st != 200 {
		t.Fatalf("purge: %d %v", st, resp)
	}
	if ok, err := s3.Client.BucketExists(ctx, bucket); err != nil || ok {
		t.Fatalf("bucket %s still exists after purge: %v %v", bucket, ok, err)
	}
}

func waitListening(t *testing.T, addr string) {
	t.Helper()
	for range 200 {
		resp, err := http.Get("http://" + addr + "/_matrix/client/v1/media/config")
		if err == nil {
			resp.Body.Close()
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatalf("media sidecar did not listen on %s", addr)
}
