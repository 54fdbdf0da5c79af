package catalog_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/atoll-matrix/atoll/images/assemble"
	"github.com/atoll-matrix/atoll/images/catalog"
)

// fakeModule writes a module with cmd/atollctl printing its version, the shape of the
// real commands (main.version set by -ldflags).
func fakeModule(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{
		"go.mod": "module example.com/fake\n\ngo 1.22\n",
		"cmd/atollctl/main.go": `package main

import (
	"fmt"
	"os"
	"time"
)

var version = "dev"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "--version" {
		_, err := time.LoadLocation("Europe/Berlin")
		fmt.Printf("atollctl %s uid=%d tz=%v\n", version, os.Getuid(), err == nil)
		return
	}
	os.Exit(2)
}
`,
	}
	for p, s := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func build(t *testing.T, module string) (catalog.Built, string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "layout")
	built, err := catalog.Build(context.Background(), catalog.Options{
		ModuleDir: module,
		Out:       out,
		WorkDir:   t.TempDir(),
		CacheDir:  t.TempDir(),
		Version:   "1.2.3",
		Revision:  "abc123",
		Source:    "https://example.com/atoll",
		Created:   time.Unix(1700000000, 0),
		Only:      []string{"atollctl", "atoll-media"},
		Log:       slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(built) != 1 || built[0].Component.Name != "atollctl" {
		t.Fatalf("built %+v, want only atollctl (atoll-media has no command in the fake module)", built)
	}
	return built[0], out
}

func TestBuildIsReproducibleAndRuns(t *testing.T) {
	module := fakeModule(t)
	a, outA := build(t, module)
	b, _ := build(t, module)
	if a.Digest != b.Digest {
		t.Fatalf("two builds gave %s and %s", a.Digest, b.Digest)
	}
	lp, err := layout.FromPath(outA)
	if err != nil {
		t.Fatal(err)
	}
	img, err := lp.Image(a.Digest)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.Config.User != "65532:65532" {
		t.Errorf("user %q", cf.Config.User)
	}
	for k, want := range map[string]string{
		assemble.AnnotationVersion:  "1.2.3",
		assemble.AnnotationRevision: "abc123",
		assemble.AnnotationSource:   "https://example.com/atoll",
	} {
		if cf.Config.Labels[k] != want {
			t.Errorf("label %s = %q, want %q", k, cf.Config.Labels[k], want)
		}
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if m.Annotations[assemble.AnnotationVersion] != "1.2.3" {
		t.Errorf("manifest annotations %v", m.Annotations)
	}
	if !cf.Created.Time.Equal(time.Unix(1700000000, 0)) {
		t.Errorf("created %v", cf.Created)
	}

	root := extract(t, img)
	for _, p := range []string{"etc/ssl/certs/ca-certificates.crt", "usr/share/zoneinfo/Europe/Berlin", "etc/passwd", "usr/bin/atollctl"} {
		if _, err := os.Stat(filepath.Join(root, p)); err != nil {
			t.Errorf("image lacks %s: %v", p, err)
		}
	}
	if os.Getuid() != 0 {
		t.Skip("running the entrypoint in a chroot needs root")
	}
	out := runAsNonRoot(t, root, cf.Config.Entrypoint[0], "--version")
	if want := "atollctl 1.2.3 uid=65532 tz=true"; strings.TrimSpace(out) != want {
		t.Errorf("entrypoint printed %q, want %q", out, want)
	}
}

// extract unpacks the image's flattened root filesystem into a temp dir.
func extract(t *testing.T, img v1.Image) string {
	t.Helper()
	root := t.TempDir()
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return root
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(root, filepath.Clean("/"+h.Name))
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, os.FileMode(h.Mode)&os.ModePerm); err != nil {
				t.Fatal(err)
			}
			os.Chmod(p, os.FileMode(h.Mode)&os.ModePerm|modeBits(h.Mode))
			os.Lchown(p, h.Uid, h.Gid)
		case tar.TypeSymlink:
			os.MkdirAll(filepath.Dir(p), 0o755)
			if err := os.Symlink(h.Linkname, p); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			os.MkdirAll(filepath.Dir(p), 0o755)
			var buf bytes.Buffer
			if _, err := io.Copy(&buf, tr); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, buf.Bytes(), os.FileMode(h.Mode)&os.ModePerm); err != nil {
				t.Fatal(err)
			}
			os.Chmod(p, os.FileMode(h.Mode)&os.ModePerm|modeBits(h.Mode))
			os.Lchown(p, h.Uid, h.Gid)
		}
	}
}

func modeBits(m int64) os.FileMode {
	var out os.FileMode
	if m&0o1000 != 0 {
		out |= os.ModeSticky
	}
	if m&0o4000 != 0 {
		out |= os.ModeSetuid
	}
	return out
}

// runAsNonRoot runs a command inside root as uid/gid 65532 and returns its output.
func runAsNonRoot(t *testing.T, root string, argv ...string) string {
	t.Helper()
	os.Chmod(root, 0o755)
	// A container runtime provides /dev/null; the chroot gets one too.
	if err := os.MkdirAll(filepath.Join(root, "dev"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "dev", "null")); err != nil {
		if err := syscall.Mknod(filepath.Join(root, "dev", "null"), syscall.S_IFCHR|0o666, 1<<8|3); err != nil {
			t.Fatal(err)
		}
		os.Chmod(filepath.Join(root, "dev", "null"), 0o666)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Path = argv[0]
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=/home/nonroot"}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Chroot:     root,
		Credential: &syscall.Credential{Uid: assemble.NonRoot, Gid: assemble.NonRoot},
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("run %v in image: %v: %s", argv, err, out)
	}
	return string(out)
}

func TestComponentsTable(t *testing.T) {
	seen := map[string]bool{}
	for _, c := range catalog.Components() {
		if seen[c.Name] {
			t.Errorf("duplicate component %s", c.Name)
		}
		seen[c.Name] = true
		if c.Kind == catalog.KindGo && len(c.Commands) == 0 {
			t.Errorf("%s: Go image without commands", c.Name)
		}
		if c.Kind != catalog.KindGo && len(c.Entrypoint) == 0 {
			t.Errorf("%s: no entrypoint", c.Name)
		}
	}
	for _, want := range []string{"atoll-homeserver", "atoll-media", "atoll-push", "atollctl", "postgres", "redis", "minio"} {
		if !seen[want] {
			t.Errorf("component %s missing", want)
		}
	}
}

func TestMissingMinioIsSkipped(t *testing.T) {
	var logs bytes.Buffer
	built, err := catalog.Build(context.Background(), catalog.Options{
		ModuleDir: t.TempDir(), Out: filepath.Join(t.TempDir(), "l"), WorkDir: t.TempDir(), CacheDir: t.TempDir(),
		Version: "1", Only: []string{"minio"}, Log: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	if err != nil || len(built) != 0 {
		t.Fatalf("built %v, err %v", built, err)
	}
	if !strings.Contains(logs.String(), "scripts/minio.sh") {
		t.Errorf("log does not say how to get minio: %s", logs.String())
	}
}
