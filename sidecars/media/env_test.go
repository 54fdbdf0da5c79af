package media_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/atoll-matrix/atoll/internal/atolltest/s3test"
	"github.com/atoll-matrix/atoll/sidecars/media"
	"github.com/atoll-matrix/atoll/sidecars/media/config"
	"github.com/atoll-matrix/atoll/sidecars/media/fedmedia"
	"github.com/atoll-matrix/atoll/sidecars/media/hsauth"
	"github.com/atoll-matrix/atoll/sidecars/media/hsauth/hsauthtest"
	"github.com/atoll-matrix/atoll/sidecars/media/mediadb"
	"github.com/atoll-matrix/atoll/sidecars/media/mediadb/mediadbtest"
	"github.com/atoll-matrix/atoll/sidecars/media/mediastore"
	"github.com/atoll-matrix/atoll/sidecars/media/preview"
	"github.com/minio/minio-go/v7"
	"github.com/prometheus/client_golang/prometheus"
)

// Tenants and users every test environment has. Each tenant is served on its own Host by the
// same sidecar, so media moves between them over the federation API on loopback.
const (
	hostA, hostB   = "a.example", "b.example"
	tenantA        = "tenant_a"
	tenantB        = "tenant_b"
	aliceToken     = "tok-alice"
	malloryToken   = "tok-mallory" // a second user of tenant A
	bobToken       = "tok-bob"
	federationAuth = "X-Matrix origin=test"
)

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.t.IsZero() {
		return time.Now()
	}
	return c.t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

type env struct {
	t      testing.TB
	hs     *hsauthtest.Homeserver
	s3     *s3test.S3
	db     *mediadb.DB
	store  *mediastore.Store
	cfg    config.Config
	reg    *prometheus.Registry
	srv    *media.Server
	http   *httptest.Server
	clock  *clock
	fedHit *int64 // federation downloads served
	mu     sync.Mutex
}

type envOption func(*envOptions)

type envOptions struct {
	cfg func(*config.Config)
}

func withConfig(f func(*config.Config)) envOption {
	return func(o *envOptions) { o.cfg = f }
}

func testConfig(s3 *s3test.S3, dbURL, schema string) config.Config {
	c := config.Default()
	c.HomeserverTokenFile = "/unused"
	c.S3.Endpoint = s3.Endpoint
	c.S3.AccessKeyFile, c.S3.SecretKeyFile = "/unused", "/unused"
	c.S3.BucketPrefix = s3.Prefix
	c.S3.SharedBucket = s3.Bucket
	c.S3.MaxRetries = 1
	c.Database.URL = dbURL
	c.Database.Schema = schema
	c.MaxUploadBytes = 200 << 20
	c.Federation.AcceptUnsignedRequests = false
	c.Preview.Enabled = true
	c.Preview.AllowPrivateAddressesForTests = true
	c.Preview.MaxBytes = 1 << 20
	c.Retention.LocalMaxAge = 0
	return c
}

// newEnv starts a sidecar against the test MinIO and PostgreSQL, with the fake homeserver.
func newEnv(t testing.TB, opts ...envOption) *env {
	t.Helper()
	var o envOptions
	for _, f := range opts {
		f(&o)
	}
	s3 := s3test.New(t)
	db, schema := mediadbtest.Open(t)
	hs := hsauthtest.New(t)
	hs.AddTenant(tenantA, hostA)
	hs.AddTenant(tenantB, hostB)
	hs.AddUser(hostA, aliceToken, hsauthtest.User{UserID: "@alice:" + hostA, DeviceID: "A1"})
	hs.AddUser(hostA, malloryToken, hsauthtest.User{UserID: "@mallory:" + hostA, DeviceID: "M1"})
	hs.AddUser(hostB, bobToken, hsauthtest.User{UserID: "@bob:" + hostB, DeviceID: "B1"})

	cfg := testConfig(s3, mediadbtest.URL(t), schema)
	if o.cfg != nil {
		o.cfg(&cfg)
	}
	e := &env{t: t, hs: hs, s3: s3, db: db, cfg: cfg, clock: &clock{}, fedHit: new(int64)}
	client, err := mediastore.NewClient(mediastore.ClientOptions{
		Endpoint: s3.Endpoint, AccessKey: s3.AccessKey, SecretKey: s3.SecretKey,
		DialTimeout: cfg.S3.DialTimeout, ResponseHeaderTimeout: cfg.S3.ResponseHeaderTimeout, MaxRetries: cfg.S3.MaxRetries,
	})
	if err != nil {
		t.Fatal(err)
	}
	e.start(client)
	return e
}

// start (re)creates the sidecar over the same database and buckets, as a restart does.
func (e *env) start(client *minio.Client) {
	t := e.t
	t.Helper()
	e.reg = prometheus.NewRegistry()
	store, err := mediastore.New(client, mediastore.Options{
		Mode: e.cfg.S3.BucketMode, BucketPrefix: e.cfg.S3.BucketPrefix, SharedBucket: e.cfg.S3.SharedBucket, PartSize: e.cfg.S3.PartSize,
	}, e.reg)
	if err != nil {
		t.Fatal(err)
	}
	e.store = store
	mux := http.NewServeMux()
	e.http = httptest.NewServer(mux)
	t.Cleanup(e.http.Close)
	base := e.http.URL
	srv, err := media.New(media.Deps{
		Config:     e.cfg,
		AdminToken: e.hs.AdminToken,
		Auth:       hsauth.New(hsauth.Options{BaseURL: e.hs.URL, AdminToken: e.hs.AdminToken, CacheTTL: time.Second, CacheSize: 100}),
		Store:      store,
		DB:         e.db,
		Fetcher: &fedmedia.HTTPFetcher{
			Client: &http.Client{Timeout: 30 * time.Second},
			// Every tenant is served by this sidecar on loopback.
			BaseURL: func(context.Context, string) (string, error) { return base, nil },
			// The signing hook: here it names the destination in Host (the loopback URL cannot)
			// and adds the header the verification hook below checks. Real X-Matrix signing is
			// the federation code's.
			Sign: func(req *http.Request, _, destination string) error {
				req.Host = destination
				req.Header.Set("Authorization", federationAuth)
				return nil
			},
			MaxBytes: e.cfg.Federation.MaxRemoteBytes,
		},
		Preview: &preview.Fetcher{
			Client:    preview.NewClient(5*time.Second, e.cfg.Preview.AllowPrivateAddressesForTests),
			MaxBytes:  e.cfg.Preview.MaxBytes,
			UserAgent: "test",
		},
		VerifyFederation: func(r *http.Request) error {
			if r.Header.Get("Authorization") != federationAuth {
				return errors.New("unsigned")
			}
			e.mu.Lock()
			*e.fedHit++
			e.mu.Unlock()
			return nil
		},
		Logger:     slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Registerer: e.reg,
		Now:        e.clock.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	e.srv = srv
	mux.Handle("/", srv.Handler())
}

func (e *env) federationHits() int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return *e.fedHit
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// request sends a request to the sidecar as if to host, with token as the bearer token.
func (e *env) request(method, host, path, token string, body io.Reader, size int64, hdr map[string]string) *http.Response {
	e.t.Helper()
	req, err := http.NewRequest(method, e.http.URL+path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Host = host
	if size >= 0 && body != nil {
		req.ContentLength = size
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp
}

// do sends a request and returns status and body.
func (e *env) do(method, host, path, token string, body string, hdr map[string]string) (int, []byte, http.Header) {
	e.t.Helper()
	var rd io.Reader
	size := int64(-1)
	if body != "" || method == http.MethodPost || method == http.MethodPut {
		rd, size = strings.NewReader(body), int64(len(body))
	}
	resp := e.request(method, host, path, token, rd, size, hdr)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.StatusCode, b, resp.Header
}

// upload stores content as host's user and returns the mxc URI's server name and media ID.
func (e *env) upload(host, token, contentType, content string) (string, string) {
	e.t.Helper()
	status, body, _ := e.do(http.MethodPost, host, "/_matrix/media/v3/upload?filename=f.bin", token, content, map[string]string{"Content-Type": contentType})
	if status != http.StatusOK {
		e.t.Fatalf("upload: %d %s", status, body)
	}
	var out struct {
		ContentURI string `json:"content_uri"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		e.t.Fatal(err)
	}
	rest, _ := strings.CutPrefix(out.ContentURI, "mxc://")
	server, id, _ := strings.Cut(rest, "/")
	return server, id
}

// wantError checks a Matrix error answer.
func wantError(t testing.TB, status int, body []byte, wantStatus int, wantCode string) {
	t.Helper()
	var me struct {
		ErrCode string `json:"errcode"`
		Error   string `json:"error"`
	}
	if status != wantStatus || json.Unmarshal(body, &me) != nil || me.ErrCode != wantCode || me.Error == "" {
		t.Fatalf("got %d %s, want %d %s", status, body, wantStatus, wantCode)
	}
}

// rowCount counts local (or cached remote) media rows of tenant.
func (e *env) rowCount(tenant string, remote bool) int {
	e.t.Helper()
	n := 0
	refs, err := e.db.Older(context.Background(), remote, time.Now().Add(100*365*24*time.Hour), 100000)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, r := range refs {
		if r.TenantID == tenant {
			n++
		}
	}
	return n
}

// objects lists the object keys of tenant in its bucket.
func (e *env) objects(tenant string) []string {
	e.t.Helper()
	bucket, prefix, err := e.store.Location(tenant)
	if err != nil {
		e.t.Fatal(err)
	}
	return e.s3.Objects(e.t, bucket, prefix)
}

func (e *env) counter(name string, labels ...string) float64 {
	e.t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue metric
				}
			}
			if c := m.GetCounter(); c != nil {
				total += c.GetValue()
			}
		}
	}
	return total
}
