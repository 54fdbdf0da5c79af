package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"gopkg.in/yaml.v3"
)

// The media sidecar and its S3 (MinIO) on loopback, when the image carries them.
const (
	mediaAddr = "127.0.0.1:18090"
	minioAddr = "127.0.0.1:19000"
	// Loopback-only test credentials; they must not change between starts of a committed
	// container, since MinIO keeps its configuration encrypted with them.
	minioUser     = "complement"
	minioPassword = "complement-secret"
)

// mediaEnabled reports whether both binaries are present.
func (o options) mediaEnabled() bool {
	if o.media == "" || o.minio == "" {
		return false
	}
	for _, p := range []string{o.media, o.minio} {
		if _, err := os.Stat(p); err != nil {
			return false
		}
	}
	return true
}

// startMinio starts MinIO on the data directory and waits until it answers.
func startMinio(ctx context.Context, bin, dataDir string) (*child, error) {
	dir := filepath.Join(dataDir, "minio")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("minio data: %w", err)
	}
	cmd := exec.Command(bin, "server", "--quiet", "--address", minioAddr, "--console-address", "127.0.0.1:19001", dir)
	cmd.Env = append(os.Environ(), "MINIO_ROOT_USER="+minioUser, "MINIO_ROOT_PASSWORD="+minioPassword,
		"MINIO_BROWSER=off", "MINIO_UPDATE=off", "HOME="+dataDir)
	c, err := startChild("minio", cmd)
	if err != nil {
		return nil, err
	}
	hc := &http.Client{Timeout: 2 * time.Second}
	for {
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+minioAddr+"/minio/health/live", nil)
		resp, err := hc.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return c, nil
			}
		}
		select {
		case <-ctx.Done():
			return c, fmt.Errorf("minio did not answer: %w", ctx.Err())
		case e := <-c.done:
			c.done <- e
			return c, fmt.Errorf("minio %w: %v", errExited, e)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// writeMediaConfig writes the sidecar's configuration and returns its path.
func writeMediaConfig(dir, dbURL, tokenFile string) (string, error) {
	access, secret := filepath.Join(dir, "s3-access-key"), filepath.Join(dir, "s3-secret-key")
	if err := os.WriteFile(access, []byte(minioUser), 0o600); err != nil {
		return "", err
	}
	if err := os.WriteFile(secret, []byte(minioPassword), 0o600); err != nil {
		return "", err
	}
	cfg := map[string]any{
		"listen":                mediaAddr,
		"metrics_listen":        "127.0.0.1:0", // empty would mean :http
		"homeserver_url":        "http://" + adminAddr,
		"homeserver_token_file": tokenFile,
		"s3": map[string]any{"endpoint": minioAddr, "secure": false,
			"access_key_file": access, "secret_key_file": secret, "bucket_mode": "bucket"},
		"database": map[string]any{"url": dbURL, "schema": "atoll_media", "max_conns": 4},
		// Complement's media tests still use the unauthenticated /_matrix/media/v3 endpoints.
		"legacy_media_before": "2100-01-01T00:00:00Z",
		// Complement serves the pages to preview and remote media from the Docker host.
		// Federation media requests are verified by the homeserver, as in production.
		"preview":    map[string]any{"enabled": true, "allow_private_addresses_for_tests": true},
		"federation": map[string]any{"allow_private_addresses": true},
	}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "media.yaml")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return "", fmt.Errorf("media config: %w", err)
	}
	return path, nil
}
