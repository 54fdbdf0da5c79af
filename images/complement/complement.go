// Package complement builds the image Complement (the Matrix community's black-box homeserver
// test suite) runs: atoll-homeserver and its Complement entrypoint (cmd/atoll-complement) over
// PostgreSQL 15 unpacked from Debian packages, optionally with atoll-media and MinIO, written
// as a `docker load` tarball. No registry and no Docker build are involved.
package complement

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/atoll-matrix/atoll/images/assemble"
	"github.com/atoll-matrix/atoll/images/catalog"
	"github.com/atoll-matrix/atoll/images/debpkg"
	"github.com/atoll-matrix/atoll/images/gobin"
	"github.com/atoll-matrix/atoll/images/layer"
)

// DataDir is where the entrypoint keeps PostgreSQL's data and the generated configuration;
// it belongs to the image's non-root user.
const DataDir = "/var/lib/atoll-complement"

// Commands are the binaries the image carries; the first is the entrypoint.
var Commands = []string{"atoll-complement", "atoll-homeserver"}

// MediaCommands are added with MinIO when the image serves media.
var MediaCommands = []string{"atoll-media"}

// Options configure Build.
type Options struct {
	ModuleDir string // module root
	WorkDir   string // where binaries are compiled
	CacheDir  string // ${ATOLL_CACHE}: debs/ holds downloaded packages
	Version   string
	Revision  string
	Created   time.Time
	// MinIO is a static MinIO binary (scripts/minio.sh caches one); when set, the image also
	// carries it and atoll-media, and the entrypoint serves the media endpoints.
	MinIO string
}

// Build returns the Complement image.
func Build(ctx context.Context, o Options) (v1.Image, error) {
	pg, err := postgresComponent()
	if err != nil {
		return nil, err
	}
	base, err := assemble.BaseTree(assemble.BaseOptions{})
	if err != nil {
		return nil, err
	}
	skip := func(p string) bool {
		for _, s := range pg.Skip {
			if strings.HasPrefix(p, s) {
				return true
			}
		}
		return false
	}
	// initdb runs its bootstrap backend through popen, hence dash for /bin/sh.
	pgTree, versions, err := debpkg.Rootfs{Packages: []string{"postgresql-15", "dash"}, Skip: skip,
		CacheDir: filepath.Join(o.CacheDir, "debs")}.Build(ctx)
	if err != nil {
		return nil, fmt.Errorf("complement image: %w", err)
	}
	bins := &layer.Tree{}
	cmds := Commands
	if o.MinIO != "" {
		cmds = append(slices.Clone(Commands), MediaCommands...)
		if err := bins.AddHostFile(o.MinIO, "/usr/bin/minio", 0o755); err != nil {
			return nil, fmt.Errorf("complement image: %w", err)
		}
	}
	for _, cmd := range cmds {
		out := filepath.Join(o.WorkDir, "complement", cmd)
		b := gobin.Build{ModuleDir: o.ModuleDir, Package: "./cmd/" + cmd, Output: out, Version: o.Version, Revision: o.Revision}
		if err := b.Run(ctx); err != nil {
			return nil, fmt.Errorf("complement image: %w", err)
		}
		if err := bins.AddHostFile(out, "/usr/bin/"+cmd, 0o755); err != nil {
			return nil, fmt.Errorf("complement image: %w", err)
		}
	}
	for _, d := range []string{"/var/lib", DataDir} {
		uid := 0
		if d == DataDir {
			uid = assemble.NonRoot
		}
		if err := bins.AddDir(d, 0o755, uid, uid); err != nil {
			return nil, err
		}
	}
	pkgs := make([]string, 0, len(versions))
	for n, v := range versions {
		pkgs = append(pkgs, n+"="+v)
	}
	slices.Sort(pkgs)
	labels := map[string]string{"org.atoll-matrix.debian-packages": strings.Join(pkgs, " ")}
	if o.MinIO != "" {
		v, _ := os.ReadFile(o.MinIO + ".version")
		labels["org.atoll-matrix.minio-version"] = strings.TrimSpace(string(v))
	}
	return assemble.Image(base, assemble.Spec{
		Title:      "atoll-complement",
		Version:    o.Version,
		Revision:   o.Revision,
		Source:     "https://github.com/atoll-matrix/atoll",
		Created:    o.Created,
		Layers:     []*layer.Tree{pgTree, bins},
		Entrypoint: []string{"/usr/bin/" + Commands[0]},
		Env:        []string{"PATH=/usr/lib/postgresql/15/bin:/usr/local/bin:/usr/bin:/bin"},
		Ports:      []string{"8008/tcp", "8448/tcp"},
		Labels:     labels,
	})
}

// WriteTarball writes img as a `docker load` tarball tagged ref.
func WriteTarball(img v1.Image, ref, path string) error {
	tag, err := name.NewTag(ref)
	if err != nil {
		return fmt.Errorf("image reference %q: %w", ref, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := tarball.WriteToFile(tmp, tag, img); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return os.Rename(tmp, path)
}

// postgresComponent returns the catalog's PostgreSQL image entry, so both images leave out
// the same parts of the packages.
func postgresComponent() (catalog.Component, error) {
	for _, c := range catalog.Components() {
		if c.Name == "postgres" {
			return c, nil
		}
	}
	return catalog.Component{}, errors.New("complement image: the image catalog has no postgres entry")
}
