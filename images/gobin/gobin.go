// Package gobin compiles reproducible static Go binaries for images: CGO disabled,
// -trimpath, no VCS stamping, an empty build ID and the version variables set by -ldflags.
package gobin

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Build describes one binary.
type Build struct {
	ModuleDir string // directory holding go.mod
	Package   string // e.g. ./cmd/atoll-homeserver
	Output    string // file to write
	Version   string // written to main.version
	Revision  string // written to main.revision
	GOOS      string // default linux
	GOARCH    string // default amd64
	GoBin     string // go command, default "go"
}

// Flags returns the go build arguments for b (without the go command itself).
func (b Build) Flags() []string {
	ldflags := fmt.Sprintf("-s -w -buildid= -X main.version=%s -X main.revision=%s", b.Version, b.Revision)
	return []string{"build", "-trimpath", "-buildvcs=false", "-ldflags", ldflags, "-o", b.Output, b.Package}
}

// Env returns the environment of the compiler process.
func (b Build) Env() []string {
	goos, goarch := b.GOOS, b.GOARCH
	if goos == "" {
		goos = "linux"
	}
	if goarch == "" {
		goarch = "amd64"
	}
	return append(os.Environ(), "CGO_ENABLED=0", "GOOS="+goos, "GOARCH="+goarch)
}

// Run compiles b.
func (b Build) Run(ctx context.Context) error {
	if err := os.MkdirAll(filepath.Dir(b.Output), 0o755); err != nil {
		return fmt.Errorf("build %s: %w", b.Package, err)
	}
	goBin := b.GoBin
	if goBin == "" {
		goBin = "go"
	}
	cmd := exec.CommandContext(ctx, goBin, b.Flags()...)
	cmd.Dir = b.ModuleDir
	cmd.Env = b.Env()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("build %s: %w: %s", b.Package, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return nil
}

// HasMain reports whether dir holds a command that can be built: Go files of package main,
// one of which defines func main.
func HasMain(dir string) (bool, error) {
	ents, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read %s: %w", dir, err)
	}
	isMain, hasFunc := false, false
	for _, e := range ents {
		name := e.Name()
		if e.IsDir() || filepath.Ext(name) != ".go" || len(name) > 8 && name[len(name)-8:] == "_test.go" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return false, fmt.Errorf("read %s: %w", name, err)
		}
		if bytes.Contains(b, []byte("\npackage main\n")) || bytes.HasPrefix(b, []byte("package main\n")) {
			isMain = true
			hasFunc = hasFunc || bytes.Contains(b, []byte("\nfunc main() {"))
		}
	}
	return isMain && hasFunc, nil
}
