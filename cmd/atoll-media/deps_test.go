package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDeps keeps the sidecar's binary small: it must not link the homeserver's Matrix library.
func TestDeps(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 50 {
		t.Fatalf("go list -deps listed only %d packages: %s", len(deps), out)
	}
	for _, d := range deps {
		for _, bad := range []string{"github.com/matrix-org/gomatrixserverlib", "github.com/atoll-matrix/atoll/homeserver"} {
			if d == bad || strings.HasPrefix(d, bad+"/") {
				t.Errorf("atoll-media links %s", d)
			}
		}
	}
}
