// Package hsauth is the media sidecar's client for the homeserver's internal auth API: it turns a
// request Host and a user's access token into a tenant and user, and a Host into a tenant, caching
// successful answers briefly in a bounded cache.
//
// The contract (served by the homeserver's admin listener, authorised by the admin token):
//
//	POST {base}/_atoll/internal/v1/auth {"host": "...", "access_token": "..."}
//	  -> 200 {"tenant_id","server_name","user_id","device_id","admin"}
//	  -> 401 {"errcode":"M_UNKNOWN_TOKEN"} | 404 {"errcode":"M_NOT_FOUND"} (unknown host)
//	GET  {base}/_atoll/internal/v1/tenants/by-host/{host} -> 200 {"tenant_id","server_name"}
package hsauth

import (
	"bytes"
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Identity is an authenticated user of a tenant.
type Identity struct {
	TenantID   string `json:"tenant_id"`
	ServerName string `json:"server_name"`
	UserID     string `json:"user_id"`
	DeviceID   string `json:"device_id"`
	Admin      bool   `json:"admin"`
}

// Tenant is a tenant found by host.
type Tenant struct {
	TenantID   string `json:"tenant_id"`
	ServerName string `json:"server_name"`
}

// MatrixError is an error answer of the homeserver, to be passed on to the client as it is.
type MatrixError struct {
	Status  int
	ErrCode string `json:"errcode"`
	Message string `json:"error"`
}

func (e *MatrixError) Error() string {
	return fmt.Sprintf("homeserver answered %d %s", e.Status, e.ErrCode)
}

// ErrUnavailable wraps failures to reach or understand the homeserver.
var ErrUnavailable = errors.New("homeserver auth unavailable")

// Client calls the homeserver. It is safe for concurrent use.
type Client struct {
	base  string
	token string
	http  *http.Client
	ttl   time.Duration
	now   func() time.Time

	mu    sync.Mutex
	max   int
	order *list.List // front: newest
	byKey map[string]*list.Element
}

type entry struct {
	key     string
	expires time.Time
	id      *Identity
	tenant  *Tenant
}

// Options configure a Client.
type Options struct {
	BaseURL    string // the homeserver's admin listener
	AdminToken string
	HTTPClient *http.Client
	CacheTTL   time.Duration // 0 disables caching
	CacheSize  int
	Now        func() time.Time // tests; default time.Now
}

// New returns a Client.
func New(o Options) *Client {
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Client{
		base: strings.TrimRight(o.BaseURL, "/"), token: o.AdminToken, http: o.HTTPClient,
		ttl: o.CacheTTL, now: o.Now, max: o.CacheSize, order: list.New(), byKey: map[string]*list.Element{},
	}
}

// Authenticate resolves a user's access token presented on host.
func (c *Client) Authenticate(ctx context.Context, host, accessToken string) (Identity, error) {
	sum := sha256.Sum256([]byte(accessToken)) // the cache never holds tokens themselves
	key := "a\x00" + host + "\x00" + string(sum[:])
	if e := c.lookup(key); e != nil && e.id != nil {
		return *e.id, nil
	}
	body, err := json.Marshal(map[string]string{"host": host, "access_token": accessToken})
	if err != nil {
		return Identity{}, fmt.Errorf("encode auth request: %w", err)
	}
	var id Identity
	if err := c.call(ctx, http.MethodPost, "/_atoll/internal/v1/auth", body, &id); err != nil {
		return Identity{}, err
	}
	if id.TenantID == "" || id.ServerName == "" || id.UserID == "" {
		return Identity{}, fmt.Errorf("auth answer without tenant, server or user: %w", ErrUnavailable)
	}
	c.store(&entry{key: key, id: &id})
	return id, nil
}

// TenantByHost resolves the tenant served on host.
func (c *Client) TenantByHost(ctx context.Context, host string) (Tenant, error) {
	key := "h\x00" + host
	if e := c.lookup(key); e != nil && e.tenant != nil {
		return *e.tenant, nil
	}
	var t Tenant
	if err := c.call(ctx, http.MethodGet, "/_atoll/internal/v1/tenants/by-host/"+url.PathEscape(host), nil, &t); err != nil {
		return Tenant{}, err
	}
	if t.TenantID == "" || t.ServerName == "" {
		return Tenant{}, fmt.Errorf("tenant answer without tenant or server: %w", ErrUnavailable)
	}
	c.store(&entry{key: key, tenant: &t})
	return t, nil
}

func (c *Client) call(ctx context.Context, method, path string, body []byte, out any) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, errors.Join(ErrUnavailable, err))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return fmt.Errorf("read %s answer: %w", path, errors.Join(ErrUnavailable, err))
	}
	if resp.StatusCode != http.StatusOK {
		me := &MatrixError{Status: resp.StatusCode}
		if json.Unmarshal(data, me) != nil || !strings.HasPrefix(me.ErrCode, "M_") || resp.StatusCode >= 500 {
			return fmt.Errorf("%s answered %d: %w", path, resp.StatusCode, ErrUnavailable)
		}
		return me
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decode %s answer: %w", path, errors.Join(ErrUnavailable, err))
	}
	return nil
}

func (c *Client) lookup(key string) *entry {
	if c.ttl <= 0 {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.byKey[key]
	if !ok {
		return nil
	}
	e := el.Value.(*entry)
	if c.now().After(e.expires) {
		c.order.Remove(el)
		delete(c.byKey, key)
		return nil
	}
	c.order.MoveToFront(el)
	return e
}

func (c *Client) store(e *entry) {
	if c.ttl <= 0 || c.max <= 0 {
		return
	}
	e.expires = c.now().Add(c.ttl)
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.byKey[e.key]; ok {
		el.Value = e
		c.order.MoveToFront(el)
		return
	}
	c.byKey[e.key] = c.order.PushFront(e)
	for c.order.Len() > c.max {
		old := c.order.Back()
		c.order.Remove(old)
		delete(c.byKey, old.Value.(*entry).key)
	}
}

// Forget drops every cached answer for host (used when a tenant is deleted).
func (c *Client) Forget(host string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for el := c.order.Front(); el != nil; {
		next := el.Next()
		k := el.Value.(*entry).key
		if strings.HasPrefix(k, "a\x00"+host+"\x00") || k == "h\x00"+host {
			c.order.Remove(el)
			delete(c.byKey, k)
		}
		el = next
	}
}

// CacheLen reports the number of cached answers.
func (c *Client) CacheLen() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}
