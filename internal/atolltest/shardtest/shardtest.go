// Package shardtest starts real homeserver shards for black-box tests: a process on loopback
// with real PostgreSQL, tenants created through the admin API and users registered through the
// Client-Server API, all over HTTP.
package shardtest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/atoll-matrix/atoll/homeserver/config"
	"github.com/atoll-matrix/atoll/homeserver/process"
	"github.com/atoll-matrix/atoll/internal/atolltest/pgtest"
	"github.com/atoll-matrix/atoll/internal/pgdb"
)

// AdminToken is the admin API token of test shards.
const AdminToken = "test-admin-token-0123456789"

// Shard is a running homeserver process.
type Shard struct {
	Process   *process.Process
	ClientURL string
	AdminURL  string
	HTTP      *http.Client

	cfg  config.Config
	stop func() // ends the running process; nil while stopped
}

var seq atomic.Int64

// New starts a shard on loopback and stops it when the test ends; opts adjust its
// configuration before it starts.
func New(t testing.TB, opts ...func(*config.Config)) *Shard {
	t.Helper()
	cfg := config.Default()
	cfg.Shard.Name = fmt.Sprintf("test-%d-%d", time.Now().UnixNano()%1e6, seq.Add(1))
	cfg.Listen = config.Listen{Client: "127.0.0.1:0", Admin: "127.0.0.1:0", Metrics: "127.0.0.1:0"}
	cfg.Database.URL = pgtest.URL(t)
	cfg.Database.MaxConns = 10
	cfg.Admin.Token = AdminToken
	cfg.Log.Level = "warn"
	// Test push gateways listen on loopback over plain HTTP.
	cfg.Push.AllowHTTP, cfg.Push.AllowPrivate = true, true
	for _, o := range opts {
		o(&cfg)
	}
	s := &Shard{cfg: cfg, HTTP: &http.Client{Timeout: 60 * time.Second}}
	s.start(t)
	t.Cleanup(func() {
		if s.stop != nil {
			s.stop()
		}
	})
	return s
}

// start runs a process with s's configuration; the listen addresses of a previous run are
// reused, so URLs other shards were given stay valid.
func (s *Shard) start(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	p, err := process.New(ctx, s.cfg, log, process.Options{BcryptCost: 4})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if err := p.Listen(); err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := p.Run(ctx); err != nil {
			t.Errorf("shard stopped: %v", err)
		}
	}()
	s.stop = func() {
		cancel()
		<-done
	}
	s.Process, s.ClientURL, s.AdminURL = p, "http://"+p.ClientAddr, "http://"+p.AdminAddr
	s.cfg.Listen = config.Listen{Client: p.ClientAddr, Admin: p.AdminAddr, Metrics: "127.0.0.1:0"}
}

// Stop shuts the shard's process down gracefully (listeners close, leases are released);
// its tenants' data stays in the database. Restart starts it again.
func (s *Shard) Stop(t testing.TB) {
	t.Helper()
	if s.stop == nil {
		t.Fatal("shardtest: Stop of a stopped shard")
	}
	s.stop()
	s.stop = nil
	s.HTTP.CloseIdleConnections()
}

// Restart starts a new process for a stopped shard, on the same database, shard name and
// listen addresses.
func (s *Shard) Restart(t testing.TB) {
	t.Helper()
	if s.stop != nil {
		t.Fatal("shardtest: Restart of a running shard")
	}
	s.start(t)
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// Tenant is a tenant created for a test.
type Tenant struct {
	Shard      *Shard
	ID         string
	ServerName string
}

// CreateTenant creates a tenant with open registration (through the admin API) whose schema is
// dropped when the test ends.
func (s *Shard) CreateTenant(t testing.TB, id string) *Tenant {
	t.Helper()
	id = strings.ToLower(id) + fmt.Sprintf("_%d%d", time.Now().UnixNano()%1e7, seq.Add(1))
	server := strings.ReplaceAll(id, "_", "-") + ".test"
	status, body := s.Admin(t, "POST", "/_atoll/admin/v1/tenants", map[string]any{
		"id": id, "server_name": server, "settings": map[string]any{"registration": "open", "shared_secret": "complement"},
	})
	if status != http.StatusCreated {
		t.Fatalf("create tenant %s: %d %v", id, status, body)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		pool := s.Process.Pool
		_, _ = pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{pgdb.SchemaName(id)}.Sanitize()+" CASCADE")
		_, _ = pool.Exec(ctx, "DELETE FROM atoll_control.tenants WHERE id = $1", id)
	})
	return &Tenant{Shard: s, ID: id, ServerName: server}
}

// Admin calls the admin API.
func (s *Shard) Admin(t testing.TB, method, path string, body any) (int, map[string]any) {
	t.Helper()
	return do(t, s.HTTP, method, s.AdminURL+path, "", AdminToken, body)
}

// Client is a logged-in device.
type Client struct {
	Tenant   *Tenant
	UserID   string
	DeviceID string
	Token    string
	Password string
}

// Register creates a user with password "password-<localpart>" and logs in a first device.
func (tn *Tenant) Register(t testing.TB, localpart string) *Client {
	t.Helper()
	pw := "password-" + localpart
	anon := &Client{Tenant: tn}
	status, body := anon.Do(t, "POST", "/_matrix/client/v3/register", map[string]any{
		"username": localpart, "password": pw, "auth": map[string]any{"type": "m.login.dummy"},
	})
	if status != http.StatusOK {
		t.Fatalf("register %s: %d %v", localpart, status, body)
	}
	return &Client{Tenant: tn, UserID: body["user_id"].(string), DeviceID: body["device_id"].(string), Token: body["access_token"].(string), Password: pw}
}

// Login logs the same user in on another device.
func (c *Client) Login(t testing.TB, deviceID string) *Client {
	t.Helper()
	anon := &Client{Tenant: c.Tenant}
	status, body := anon.Do(t, "POST", "/_matrix/client/v3/login", map[string]any{
		"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": c.UserID},
		"password": c.Password, "device_id": deviceID,
	})
	if status != http.StatusOK {
		t.Fatalf("login %s: %d %v", c.UserID, status, body)
	}
	return &Client{Tenant: c.Tenant, UserID: c.UserID, DeviceID: body["device_id"].(string), Token: body["access_token"].(string), Password: c.Password}
}

// Do sends a request to the client API with the tenant's Host and the device's token (none
// for an anonymous client). body is JSON-encoded unless it is []byte or a string.
func (c *Client) Do(t testing.TB, method, path string, body any) (int, map[string]any) {
	t.Helper()
	return do(t, c.Tenant.Shard.HTTP, method, c.Tenant.Shard.ClientURL+path, c.Tenant.ServerName, c.Token, body)
}

// DoRaw is Do returning the raw body.
func (c *Client) DoRaw(t testing.TB, method, path string, body any) (int, []byte) {
	t.Helper()
	return doRaw(t, c.Tenant.Shard.HTTP, method, c.Tenant.Shard.ClientURL+path, c.Tenant.ServerName, c.Token, body)
}

func do(t testing.TB, hc *http.Client, method, url, host, token string, body any) (int, map[string]any) {
	t.Helper()
	status, b := doRaw(t, hc, method, url, host, token, body)
	var out map[string]any
	if len(b) > 0 {
		if err := json.Unmarshal(b, &out); err != nil {
			// Some endpoints answer with arrays; wrap them.
			var arr []any
			if json.Unmarshal(b, &arr) == nil {
				return status, map[string]any{"array": arr}
			}
			t.Fatalf("%s %s: %d, body is not JSON: %q", method, url, status, truncate(b))
		}
	}
	return status, out
}

func truncate(b []byte) string {
	if len(b) > 300 {
		return string(b[:300])
	}
	return string(b)
}

func doRaw(t testing.TB, hc *http.Client, method, url, host, token string, body any) (int, []byte) {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	case string:
		rd = strings.NewReader(b)
	default:
		js, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(js)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return resp.StatusCode, b
}

// MustOK fails the test unless status is 200.
func MustOK(t testing.TB, what string, status int, body map[string]any) map[string]any {
	t.Helper()
	if status != http.StatusOK {
		t.Fatalf("%s: status %d: %v", what, status, body)
	}
	return body
}

// MustDo is Do failing the test unless the status is 200.
func (c *Client) MustDo(t testing.TB, method, path string, body any) map[string]any {
	t.Helper()
	status, out := c.Do(t, method, path, body)
	if status != http.StatusOK {
		t.Fatalf("%s %s: status %d: %v", method, path, status, out)
	}
	return out
}
