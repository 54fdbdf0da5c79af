package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"gopkg.in/yaml.v3"
)

// writeHomeserverConfig writes the shard's configuration (regenerated on every start: the
// admin token is new each time) and returns its path.
// caFile, when not empty, is trusted for other servers' certificates (Complement's CA signs
// those of its own federation servers and of the other homeservers).
// mediaURL, when not empty, is the media sidecar: tenant creation makes its bucket there and
// the shard forwards federation media requests to it.
func writeHomeserverConfig(dir, dbURL, token, logLevel, caFile, mediaURL string) (string, error) {
	tokenFile := filepath.Join(dir, "admin-token")
	if err := os.WriteFile(tokenFile, []byte(token), 0o600); err != nil {
		return "", fmt.Errorf("admin token: %w", err)
	}
	cfg := map[string]any{
		"shard":    map[string]any{"name": "complement"},
		"listen":   map[string]any{"client": homeserverAddr, "admin": adminAddr, "metrics": ""},
		"database": map[string]any{"url": dbURL, "max_conns": 20},
		"admin":    map[string]any{"token_file": tokenFile},
		// The same shard name takes its own lease back at once after a restart.
		"tenants": map[string]any{"lease_duration": "10s"},
		// Complement's push gateway listens on the host, over plain HTTP.
		"push": map[string]any{"allow_http": true, "allow_private": true},
		"log":  map[string]any{"level": logLevel, "format": "text"},
	}
	if mediaURL != "" {
		cfg["media"] = map[string]any{"url": mediaURL}
	}
	if caFile != "" {
		cfg["federation"] = map[string]any{"trust_roots_file": caFile}
	}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "homeserver.yaml")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return "", fmt.Errorf("homeserver config: %w", err)
	}
	return path, nil
}

// adminClient calls the shard's admin API.
type adminClient struct {
	base  string
	token string
	http  *http.Client
}

func (c adminClient) call(ctx context.Context, method, path string, body any) (int, map[string]any, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, nil, err
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		return resp.StatusCode, nil, fmt.Errorf("admin API %s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(b))
	}
	return resp.StatusCode, out, nil
}

// ensureTenant waits for the admin API and creates the tenant unless it exists already
// (a committed container starting again).
func (c adminClient) ensureTenant(ctx context.Context, exited chan error, id, serverName, secret string) error {
	path := "/_atoll/admin/v1/tenants/" + url.PathEscape(id)
	for {
		status, out, err := c.call(ctx, "GET", path, nil)
		switch {
		case err == nil && status == http.StatusOK:
			if got, _ := out["server_name"].(string); got != serverName {
				return fmt.Errorf("tenant %s exists with server name %q, not %q", id, got, serverName)
			}
			return nil
		case err == nil && status == http.StatusNotFound:
			settings := map[string]any{"registration": "open", "shared_secret": secret}
			status, out, err := c.call(ctx, "POST", "/_atoll/admin/v1/tenants",
				map[string]any{"id": id, "server_name": serverName, "settings": settings})
			if err != nil {
				return fmt.Errorf("create tenant: %w", err)
			}
			if status >= 300 {
				return fmt.Errorf("create tenant: HTTP %d: %v: %v", status, out["errcode"], out["error"])
			}
			return nil
		case err == nil:
			return fmt.Errorf("look up tenant: HTTP %d: %v: %v", status, out["errcode"], out["error"])
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("admin API did not answer: %w", err)
		case e := <-exited:
			exited <- e
			return fmt.Errorf("atoll-homeserver %w: %v", errExited, e)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
