package main

import (
	"os/exec"
	"strings"
	"testing"
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
