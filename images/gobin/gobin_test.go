package gobin_test

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/atoll-matrix/atoll/images/gobin"
)

func TestFlags(t *testing.T) {
	b := gobin.Build{Package: "./cmd/x", Output: "/out/x", Version: "1.2.3", Revision: "abc"}
	want := []string{"build", "-trimpath", "-buildvcs=false", "-ldflags", "-s -w -buildid= -X main.version=1.2.3 -X main.revision=abc", "-o", "/out/x", "./cmd/x"}
	if got := b.Flags(); !slices.Equal(got, want) {
		t.Errorf("Flags() = %q, want %q", got, want)
	}
	env := b.Env()
	for _, e := range []string{"CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64"} {
		if !slices.Contains(env, e) {
			t.Errorf("env lacks %s", e)
		}
	}
}

func TestHasMain(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files map[string]string
		want  bool
	}{
		{"missing dir", nil, false},
		{"main with func main", map[string]string{"main.go": "package main\n\nfunc main() {\n}\n"}, true},
		{"main without func main", map[string]string{"bundle.go": "package main\n\nfunc bundleCmd() {}\n"}, false},
		{"library", map[string]string{"x.go": "package x\n"}, false},
		{"func main only in a test", map[string]string{"a.go": "package main\n", "a_test.go": "package main\n\nfunc main() {\n}\n"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "cmd")
			if tc.files != nil {
				os.MkdirAll(dir, 0o755)
			}
			for n, s := range tc.files {
				if err := os.WriteFile(filepath.Join(dir, n), []byte(s), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, err := gobin.HasMain(dir)
			if err != nil || got != tc.want {
				t.Errorf("HasMain = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}
