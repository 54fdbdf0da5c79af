package main

import (
	"bytes"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDeps keeps the push gateway binary small and independent of the
// homeserver: it must not link the database driver or the Matrix
// server library.
func TestDeps(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	bad := []string{
		"github.com/jackc/pgx",
		"github.com/matrix-org/gomatrixserverlib",
		"github.com/redis/go-redis",
		"github.com/minio/minio-go",
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("suspiciously few deps: %v", deps)
	}
	for _, d := range deps {
		for _, b := range bad {
			if d == b || strings.HasPrefix(d, b+"/") {
				t.Errorf("atoll-push links %s", d)
			}
		}
	}
}

func TestRunBadConfig(t *testing.T) {
	tests := []struct {
		name, path, want string
	}{
		{"missing file", "/nonexistent/push.yaml", "read config"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := run(tt.path, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("run: %v, want %q", err, tt.want)
			}
		})
	}
}

// TestSIGTERM runs the real binary with a config file, waits for health on
// both listeners and checks SIGTERM ends it cleanly.
func TestSIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "atoll-push")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	api, metrics := freeAddr(t), freeAddr(t)
	cfg := "listen: " + api + "\nmetrics_listen: " + metrics + "\napps:\n  org.example.up.*:\n    type: unifiedpush\n    unifiedpush:\n      allowed_endpoints: [ntfy.example.org]\n"
	cfgPath := filepath.Join(dir, "push.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(bin, "--config", cfgPath)
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-done
		}
	})
	for _, u := range []string{"http://" + api + "/health", "http://" + metrics + "/health"} {
		deadline := time.Now().Add(10 * time.Second)
		for {
			resp, err := http.Get(u)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s not healthy: %v\n%s", u, err, stderr.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit: %v\n%s", err, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no exit after SIGTERM")
	}
	if !strings.Contains(stderr.String(), "push gateway stopped") {
		t.Errorf("log lacks shutdown message:\n%s", stderr.String())
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
