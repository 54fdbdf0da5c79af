package catalog_test

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/layout"

	"github.com/atoll-matrix/atoll/images/catalog"
)

// TestDebianImagesRun builds the PostgreSQL and Redis images from Debian packages (cached
// under ATOLL_CACHE/debs after the first download) and runs their binaries as nonroot.
func TestDebianImagesRun(t *testing.T) {
	if testing.Short() {
		t.Skip("downloads Debian packages on first run")
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		t.Skip("apt-get not available")
	}
	if os.Getuid() != 0 {
		t.Skip("running in a chroot needs root")
	}
	cache := os.Getenv("ATOLL_CACHE")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			t.Fatal(err)
		}
		cache = filepath.Join(home, ".cache", "atoll")
	}
	out := filepath.Join(t.TempDir(), "layout")
	built, err := catalog.Build(context.Background(), catalog.Options{
		Out: out, WorkDir: t.TempDir(), CacheDir: cache, Version: "1", Created: time.Unix(0, 0),
		Only: []string{"postgres", "redis"}, Log: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(built) != 2 {
		t.Fatalf("built %d images", len(built))
	}
	lp, err := layout.FromPath(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range built {
		img, err := lp.Image(b.Digest)
		if err != nil {
			t.Fatal(err)
		}
		root := extract(t, img)
		switch b.Component.Name {
		case "redis":
			if got := runAsNonRoot(t, root, "/usr/bin/redis-server", "--version"); !strings.Contains(got, "Redis server v=7") {
				t.Errorf("redis-server --version: %q", got)
			}
		case "postgres":
			if got := runAsNonRoot(t, root, "/usr/lib/postgresql/15/bin/postgres", "--version"); !strings.Contains(got, "(PostgreSQL) 15") {
				t.Errorf("postgres --version: %q", got)
			}
			if err := os.WriteFile(filepath.Join(root, "tmp", "pw"), []byte("secret\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			got := runAsNonRoot(t, root, "/usr/lib/postgresql/15/bin/initdb", "-D", "/tmp/pgdata", "--username=atoll", "--pwfile=/tmp/pw", "--locale=C", "--encoding=UTF8")
			if !strings.Contains(got, "Success") {
				t.Errorf("initdb: %q", got)
			}
		}
	}
}

// TestMinioImageRuns builds the S3 image from the cached MinIO binary (scripts/minio.sh build)
// and runs it as nonroot.
func TestMinioImageRuns(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("running in a chroot needs root")
	}
	cache := os.Getenv("ATOLL_CACHE")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			t.Fatal(err)
		}
		cache = filepath.Join(home, ".cache", "atoll")
	}
	if _, err := os.Stat(filepath.Join(cache, "bin", "minio")); err != nil {
		t.Skip("no MinIO binary; run scripts/minio.sh build")
	}
	out := filepath.Join(t.TempDir(), "layout")
	built, err := catalog.Build(context.Background(), catalog.Options{
		Out: out, WorkDir: t.TempDir(), CacheDir: cache, Version: "1", Created: time.Unix(0, 0),
		Only: []string{"minio"}, Log: slog.New(slog.DiscardHandler),
	})
	if err != nil || len(built) != 1 {
		t.Fatalf("built %v, err %v", built, err)
	}
	lp, err := layout.FromPath(out)
	if err != nil {
		t.Fatal(err)
	}
	img, err := lp.Image(built[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	if got := runAsNonRoot(t, extract(t, img), "/usr/bin/minio", "--version"); !strings.Contains(got, "minio version") {
		t.Errorf("minio --version: %q", got)
	}
}

// TestAtollctlImageRuns builds the real atollctl image from this module and runs
// "atollctl version" in it as nonroot.
func TestAtollctlImageRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles atollctl")
	}
	if os.Getuid() != 0 {
		t.Skip("running in a chroot needs root")
	}
	out := filepath.Join(t.TempDir(), "layout")
	var logs strings.Builder
	built, err := catalog.Build(context.Background(), catalog.Options{
		ModuleDir: "../..", Out: out, WorkDir: t.TempDir(), CacheDir: t.TempDir(), Version: "9.8.7", Created: time.Unix(0, 0),
		Only: []string{"atollctl"}, Log: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(built) == 0 {
		t.Skipf("atollctl not buildable yet: %s", logs.String())
	}
	lp, err := layout.FromPath(out)
	if err != nil {
		t.Fatal(err)
	}
	img, err := lp.Image(built[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	if got := runAsNonRoot(t, extract(t, img), "/usr/bin/atollctl", "version"); strings.TrimSpace(got) != "9.8.7" {
		t.Errorf("atollctl version printed %q, want the -ldflags version 9.8.7", got)
	}
}
