package main

import (
	"bufio"
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

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/minio/minio-go/v7"

	"github.com/atoll-matrix/atoll/homeserver/config"
	"github.com/atoll-matrix/atoll/internal/atolltest/s3test"
	"github.com/atoll-matrix/atoll/internal/atolltest/shardtest"
	"github.com/atoll-matrix/atoll/sidecars/media/mediadb/mediadbtest"
)

// TestFederationThroughHomeserver runs one sidecar for two tenants of a real shard, with
// federation signed and verified by the homeserver (accept_unsigned_requests off): bob of B
// downloads alice of A's media through B, which fetches it over X-Matrix-signed federation
// from A's federation media endpoint (reached through the shard's listener, which forwards it
// to the sidecar), then serves it from B's cache. Unsigned, forged and misaddressed requests to
// the federation endpoint are refused; media A does not have is a 404.
func TestFederationThroughHomeserver(t *testing.T) {
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

	a := shard.CreateTenant(t, "fed_a")
	b := shard.CreateTenant(t, "fed_b")
	alice := a.Register(t, "alice")
	bob := b.Register(t, "bob")

	do := func(base, host, auth, method, path, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		req.Host = host
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(out)
	}
	sidecar := "http://" + listen
	const content = "minutes of the harbour board"
	status, body := do(sidecar, a.ServerName, "Bearer "+alice.Token, "POST", "/_matrix/media/v3/upload", content)
	var up struct {
		ContentURI string `json:"content_uri"`
	}
	if status != 200 || json.Unmarshal([]byte(body), &up) != nil {
		t.Fatalf("upload: %d %s", status, body)
	}
	mxc := strings.TrimPrefix(up.ContentURI, "mxc://")
	mediaID := strings.TrimPrefix(mxc, a.ServerName+"/")

	// bob@B reads A's media: fetched over signed federation, then from B's cache.
	path := "/_matrix/client/v1/media/download/" + mxc
	for i := range 2 {
		if status, body = do(sidecar, b.ServerName, "Bearer "+bob.Token, "GET", path, ""); status != 200 || body != content {
			t.Fatalf("read %d through B: %d %s", i+1, status, body)
		}
	}
	if got := metricValue(t, metrics, `atoll_media_remote_fetches_total{result="ok"}`); got != "1" {
		t.Fatalf("remote fetches = %s, want 1 (the second read must come from B's cache)", got)
	}
	// The homeserver fetched it (once) and verified A's side of it (at least once).
	if got := metricValue(t, shard.Process.MetricsAddr, `atoll_admin_http_requests_total{code="200",route="internal.federation_media_download"}`); got != "1" {
		t.Fatalf("homeserver federation fetches = %q, want 1", got)
	}
	if got := metricValue(t, shard.Process.MetricsAddr, `atoll_admin_http_requests_total{code="200",route="internal.federation_verify"}`); got == "" {
		t.Fatal("the sidecar did not have the homeserver verify the federation request")
	}
	bucketB := s3.Prefix + strings.ReplaceAll(b.ID, "_", "-")
	if _, err := s3.Client.StatObject(ctx, bucketB, "remote/"+a.ServerName+"/"+mediaID, minio.StatObjectOptions{}); err != nil {
		t.Fatalf("cached copy not in B's bucket: %v", err)
	}

	// Media A does not have.
	if status, body = do(sidecar, b.ServerName, "Bearer "+bob.Token, "GET", "/_matrix/client/v1/media/download/"+a.ServerName+"/nosuchmedia", ""); status != 404 || !strings.Contains(body, "M_NOT_FOUND") {
		t.Fatalf("missing remote media: %d %s", status, body)
	}

	// The federation endpoint, straight at the sidecar and through the shard's listener.
	fedPath := "/_matrix/federation/v1/media/download/" + mediaID
	recB, err := shard.Process.Tenants.Get(ctx, b.ID)
	if err != nil {
		t.Fatal(err)
	}
	sign := func(destination string) string {
		t.Helper()
		fr := fclient.NewFederationRequest("GET", recB.ServerName, spec.ServerName(destination), fedPath)
		if err := fr.Sign(recB.ServerName, gomatrixserverlib.KeyID(recB.KeyID), recB.PrivateKey); err != nil {
			t.Fatal(err)
		}
		req, err := fr.HTTPRequest()
		if err != nil {
			t.Fatal(err)
		}
		return req.Header.Get("Authorization")
	}
	for _, base := range []string{sidecar, shard.ClientURL} {
		for _, tc := range []struct {
			name, auth string
			want       int
		}{
			{"unsigned", "", 401},
			{"forged", fmt.Sprintf(`X-Matrix origin="%s",destination="%s",key="%s",sig="c2lnbmF0dXJl"`, recB.ServerName, a.ServerName, recB.KeyID), 401},
			{"signed for another server", sign("elsewhere.test"), 401},
			{"signed", sign(a.ServerName), 200},
		} {
			t.Run(tc.name, func(t *testing.T) {
				status, body := do(base, a.ServerName, tc.auth, "GET", fedPath, "")
				if status != tc.want {
					t.Fatalf("%s%s: %d %s", base, fedPath, status, body)
				}
				if status == 200 && !strings.Contains(body, content) {
					t.Fatalf("signed request: body %q", body)
				}
				if status == 401 && !strings.Contains(body, "M_UNAUTHORIZED") {
					t.Fatalf("refusal: %s", body)
				}
			})
		}
	}
}

// metricValue reads one sample of the sidecar's metrics ("" when absent).
func metricValue(t *testing.T, addr, sample string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), sample+" "); ok {
			return v
		}
	}
	return ""
}
