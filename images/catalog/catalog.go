// Package catalog is the table of Atoll's images and the build that writes all of them into
// one OCI image layout: Go components compiled from cmd/<name>, and the stack's third-party
// servers (PostgreSQL and Redis from Debian packages, MinIO from a cached binary).
package catalog

import (
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"

	"github.com/atoll-matrix/atoll/images/assemble"
	"github.com/atoll-matrix/atoll/images/debpkg"
	"github.com/atoll-matrix/atoll/images/gobin"
	"github.com/atoll-matrix/atoll/images/layer"
)

// Kind says where an image's files come from.
type Kind int

// Image kinds.
const (
	KindGo     Kind = iota // Go commands built from this module
	KindDebian             // Debian packages
	KindBinary             // a prebuilt static binary from the cache
)

// Repository prefix of every image; the chart's image.repository values use the same names.
const RepositoryPrefix = "atoll-matrix/"

// Component is one image.
type Component struct {
	Name       string   // image name, also the chart's component key in images.lock.yaml
	Kind       Kind     // source of the files
	Commands   []string // KindGo: cmd/<name> directories; the first is the entrypoint
	Packages   []string // KindDebian: packages to unpack
	Skip       []string // KindDebian: path prefixes to leave out
	Script     string   // KindDebian: entrypoint script written to /usr/local/bin/<Name>-entrypoint
	Binary     string   // KindBinary: path relative to the cache dir
	Entrypoint []string // KindDebian, KindBinary
	Ports      []string
	Env        []string
	Dirs       []string // directories owned by nonroot (65532), e.g. data and run dirs
}

// Repository is the image repository without registry, e.g. atoll-matrix/atoll-homeserver.
func (c Component) Repository() string { return RepositoryPrefix + c.Name }

// Components lists every image. Commands that do not exist yet are skipped by Build.
func Components() []Component {
	return []Component{
		{Name: "atoll-homeserver", Kind: KindGo, Commands: []string{"atoll-homeserver", "atollctl"}, Ports: []string{"8008/tcp", "8081/tcp", "9090/tcp"}},
		{Name: "atoll-media", Kind: KindGo, Commands: []string{"atoll-media"}, Ports: []string{"8090/tcp", "9091/tcp"}},
		{Name: "atoll-push", Kind: KindGo, Commands: []string{"atoll-push"}, Ports: []string{"8095/tcp", "9092/tcp"}},
		{Name: "atollctl", Kind: KindGo, Commands: []string{"atollctl"}},
		{
			Name:     "postgres",
			Kind:     KindDebian,
			Packages: []string{"postgresql-15", "postgresql-client-15", "dash"},
			// JIT needs LLVM (100+ MB); the chart turns jit off.
			Skip:       []string{"/usr/lib/postgresql/15/lib/llvmjit", "/usr/lib/postgresql/15/lib/bitcode", "/usr/share/postgresql-common", "/usr/lib/postgresql/15/bin/pg_upgrade"},
			Script:     postgresEntrypoint,
			Entrypoint: []string{"/usr/local/bin/postgres-entrypoint"},
			Env:        []string{"PATH=/usr/lib/postgresql/15/bin:/usr/local/bin:/usr/bin:/bin", "PGDATA=/var/lib/postgresql/data/pgdata"},
			Ports:      []string{"5432/tcp"},
			Dirs:       []string{"/var/lib/postgresql", "/var/run/postgresql"},
		},
		{
			Name:       "redis",
			Kind:       KindDebian,
			Packages:   []string{"redis-tools", "redis-server"},
			Entrypoint: []string{"/usr/bin/redis-server"},
			Ports:      []string{"6379/tcp"},
			Dirs:       []string{"/data"},
		},
		{
			Name:       "minio",
			Kind:       KindBinary,
			Binary:     "bin/minio",
			Entrypoint: []string{"/usr/bin/minio"},
			Ports:      []string{"9000/tcp"},
			Dirs:       []string{"/data"},
		},
	}
}

// postgresEntrypoint initialises the data directory on first start (scram-sha-256 for
// TCP, the password from POSTGRES_PASSWORD_FILE, database POSTGRES_DB owned by
// POSTGRES_USER) and then runs postgres.
const postgresEntrypoint = `#!/bin/sh
set -eu
: "${PGDATA:=/var/lib/postgresql/data/pgdata}"
: "${POSTGRES_USER:=atoll}"
: "${POSTGRES_DB:=atoll}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
	if [ -z "${POSTGRES_PASSWORD_FILE:-}" ]; then
		echo "postgres-entrypoint: POSTGRES_PASSWORD_FILE is required" >&2
		exit 1
	fi
	initdb -D "$PGDATA" --username="$POSTGRES_USER" --pwfile="$POSTGRES_PASSWORD_FILE" \
		--auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --locale=C
	echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
	echo "CREATE DATABASE \"$POSTGRES_DB\" OWNER \"$POSTGRES_USER\";" |
		postgres --single -D "$PGDATA" -c jit=off template1 >/dev/null
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' -c jit=off -c unix_socket_directories=/var/run/postgresql "$@"
`

// Options configure Build.
type Options struct {
	ModuleDir string    // module root (holds cmd/)
	Out       string    // OCI layout directory, replaced
	WorkDir   string    // where binaries are compiled
	CacheDir  string    // ${ATOLL_CACHE:-$HOME/.cache/atoll}: debs/ and bin/minio
	Version   string    // tag and org.opencontainers.image.version
	Revision  string    // org.opencontainers.image.revision
	Source    string    // org.opencontainers.image.source
	Created   time.Time // SOURCE_DATE_EPOCH
	Only      []string  // component names to build; empty means all
	Base      assemble.BaseOptions
	Log       *slog.Logger
}

// Built is one image written to the layout.
type Built struct {
	Component Component
	Digest    v1.Hash
	Ref       string // repository:tag
	Versions  map[string]string
}

// Build builds every component it can into a new OCI layout at o.Out and reports what it
// built. Components whose inputs are missing are skipped with a log line saying why.
func Build(ctx context.Context, o Options) ([]Built, error) {
	if o.Log == nil {
		return nil, errors.New("build images: a logger is required")
	}
	if err := os.RemoveAll(o.Out); err != nil {
		return nil, fmt.Errorf("build images: %w", err)
	}
	lp, err := layout.Write(o.Out, empty.Index)
	if err != nil {
		return nil, fmt.Errorf("build images: create layout: %w", err)
	}
	base, err := assemble.BaseTree(o.Base)
	if err != nil {
		return nil, fmt.Errorf("build images: %w", err)
	}
	want := map[string]bool{}
	for _, n := range o.Only {
		want[n] = true
	}
	var out []Built
	for _, c := range Components() {
		if len(want) > 0 && !want[c.Name] {
			continue
		}
		img, versions, err := Image(ctx, c, base, o)
		if errors.Is(err, ErrMissingInput) {
			o.Log.Warn("image skipped", "image", c.Name, "reason", err.Error())
			continue
		}
		if err != nil {
			return nil, err
		}
		ref := c.Repository() + ":" + o.Version
		if err := lp.AppendImage(img, layout.WithAnnotations(map[string]string{assemble.AnnotationRefName: ref})); err != nil {
			return nil, fmt.Errorf("write image %s: %w", c.Name, err)
		}
		d, err := img.Digest()
		if err != nil {
			return nil, fmt.Errorf("digest image %s: %w", c.Name, err)
		}
		o.Log.Info("image built", "image", c.Name, "ref", ref, "digest", d.String())
		out = append(out, Built{Component: c, Digest: d, Ref: ref, Versions: versions})
	}
	return out, nil
}

// ErrMissingInput reports a component whose sources are absent (a command not written
// yet, the MinIO binary not built): Build skips it.
var ErrMissingInput = errors.New("input missing")

// Image builds the image of one component.
func Image(ctx context.Context, c Component, base *layer.Tree, o Options) (v1.Image, map[string]string, error) {
	spec := assemble.Spec{
		Title:    c.Name,
		Version:  o.Version,
		Revision: o.Revision,
		Source:   o.Source,
		Created:  o.Created,
		Ports:    c.Ports,
		Env:      c.Env,
	}
	files := &layer.Tree{}
	var versions map[string]string
	switch c.Kind {
	case KindGo:
		for _, cmd := range c.Commands {
			ok, err := gobin.HasMain(filepath.Join(o.ModuleDir, "cmd", cmd))
			if err != nil {
				return nil, nil, err
			}
			if !ok {
				return nil, nil, fmt.Errorf("cmd/%s has no main package: %w", cmd, ErrMissingInput)
			}
			bin := filepath.Join(o.WorkDir, c.Name, cmd)
			b := gobin.Build{ModuleDir: o.ModuleDir, Package: "./cmd/" + cmd, Output: bin, Version: o.Version, Revision: o.Revision}
			if err := b.Run(ctx); err != nil {
				return nil, nil, fmt.Errorf("image %s: %w", c.Name, err)
			}
			if err := files.AddHostFile(bin, "/usr/bin/"+cmd, 0o755); err != nil {
				return nil, nil, fmt.Errorf("image %s: %w", c.Name, err)
			}
		}
		spec.Entrypoint = []string{"/usr/bin/" + c.Commands[0]}
	case KindDebian:
		skip := func(p string) bool {
			for _, s := range c.Skip {
				if strings.HasPrefix(p, s) {
					return true
				}
			}
			return false
		}
		t, v, err := debpkg.Rootfs{Packages: c.Packages, Skip: skip, CacheDir: filepath.Join(o.CacheDir, "debs")}.Build(ctx)
		if err != nil {
			return nil, nil, fmt.Errorf("image %s: %w", c.Name, err)
		}
		files, versions = t, v
		spec.Entrypoint = c.Entrypoint
		spec.Labels = map[string]string{"org.atoll-matrix.debian-packages": packageList(v)}
	case KindBinary:
		src := filepath.Join(o.CacheDir, c.Binary)
		if _, err := os.Stat(src); err != nil {
			return nil, nil, fmt.Errorf("%s not found (run scripts/minio.sh to build it): %w", src, ErrMissingInput)
		}
		if err := checkStatic(src); err != nil {
			return nil, nil, fmt.Errorf("image %s: %w", c.Name, err)
		}
		if err := files.AddHostFile(src, c.Entrypoint[0], 0o755); err != nil {
			return nil, nil, fmt.Errorf("image %s: %w", c.Name, err)
		}
		spec.Entrypoint = c.Entrypoint
		if v, err := os.ReadFile(src + ".version"); err == nil {
			spec.Labels = map[string]string{"org.atoll-matrix.upstream-version": strings.TrimSpace(string(v))}
		}
	}
	if c.Script != "" {
		if err := files.AddFile(c.Entrypoint[0], 0o755, []byte(c.Script)); err != nil {
			return nil, nil, err
		}
	}
	for _, d := range c.Dirs {
		if err := files.AddDir(d, 0o755, assemble.NonRoot, assemble.NonRoot); err != nil {
			return nil, nil, err
		}
	}
	spec.Layers = []*layer.Tree{files}
	img, err := assemble.Image(base, spec)
	if err != nil {
		return nil, nil, err
	}
	return img, versions, nil
}

// checkStatic refuses a binary that needs a dynamic loader: the image has no libc.
func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	if f.Section(".interp") != nil {
		return fmt.Errorf("%s is dynamically linked; build it with CGO_ENABLED=0", path)
	}
	return nil
}

func packageList(v map[string]string) string {
	names := make([]string, 0, len(v))
	for n, ver := range v {
		names = append(names, n+"="+ver)
	}
	slices.Sort(names)
	return strings.Join(names, " ")
}
