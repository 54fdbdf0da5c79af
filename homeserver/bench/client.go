package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"
)

// HTTP sends requests to one shard; every tenant is reached on the same loopback address
// with its server name in the Host header.
type HTTP struct {
	ClientURL  string
	AdminURL   string
	AdminToken string
	hc         *http.Client
}

// NewHTTP returns a client keeping up to maxConns idle connections to the shard.
func NewHTTP(s *Shard, adminToken string, maxConns int) *HTTP {
	tr := &http.Transport{MaxIdleConns: maxConns, MaxIdleConnsPerHost: maxConns, IdleConnTimeout: 2 * time.Minute}
	return &HTTP{ClientURL: s.ClientURL, AdminURL: s.AdminURL, AdminToken: adminToken,
		hc: &http.Client{Transport: tr, Timeout: 90 * time.Second}}
}

// StatusError is a response other than 200 or 201.
type StatusError struct {
	Method, Path string
	Status       int
	Body         string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%s %s: status %d: %s", e.Method, e.Path, e.Status, e.Body)
}

// Do sends body as JSON to base+path with the given Host and bearer token and decodes a
// JSON answer into out (when out is not nil).
func (h *HTTP) Do(ctx context.Context, base, host, token, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, rd)
	if err != nil {
		return err
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
	resp, err := h.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("%s %s: read body: %w", method, path, err)
	}
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusCreated {
		if len(b) > 300 {
			b = b[:300]
		}
		return &StatusError{Method: method, Path: path, Status: resp.StatusCode, Body: string(b)}
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s %s: decode: %w", method, path, err)
		}
	}
	return nil
}

// Admin calls the admin API.
func (h *HTTP) Admin(ctx context.Context, method, path string, body, out any) error {
	return h.Do(ctx, h.AdminURL, "", h.AdminToken, method, path, body, out)
}

// User is a registered user with one device.
type User struct {
	Host   string // the tenant's server name
	UserID string
	Token  string
}

// Client calls the Client-Server API as u.
func (h *HTTP) Client(ctx context.Context, u *User, method, path string, body, out any) error {
	return h.Do(ctx, h.ClientURL, u.Host, u.Token, method, path, body, out)
}
