package bundle_test

import (
	"context"
	"io"
	"log"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"sigs.k8s.io/yaml"

	"github.com/atoll-matrix/atoll/images/assemble"
	"github.com/atoll-matrix/atoll/images/bundle"
	"github.com/atoll-matrix/atoll/images/layer"
)

var components = []string{"atoll-homeserver", "atoll-media", "atoll-push", "atollctl", "postgres", "redis", "minio"}

// writeLayout writes a small image per component, named as the catalog names them.
func writeLayout(t *testing.T) (string, map[string]v1.Hash) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "images")
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	base := &layer.Tree{}
	if err := base.AddFile("/etc/passwd", 0o644, []byte("nonroot:x:65532:65532::/:/sbin/nologin\n")); err != nil {
		t.Fatal(err)
	}
	digests := map[string]v1.Hash{}
	for _, c := range components {
		files := &layer.Tree{}
		if err := files.AddFile("/usr/bin/"+c, 0o755, []byte("#!"+c)); err != nil {
			t.Fatal(err)
		}
		img, err := assemble.Image(base, assemble.Spec{Title: c, Version: "0.1.0", Created: time.Unix(0, 0), Layers: []*layer.Tree{files}, Entrypoint: []string{"/usr/bin/" + c}})
		if err != nil {
			t.Fatal(err)
		}
		if err := lp.AppendImage(img, layout.WithAnnotations(map[string]string{assemble.AnnotationRefName: "atoll-matrix/" + c + ":0.1.0"})); err != nil {
			t.Fatal(err)
		}
		if digests[c], err = img.Digest(); err != nil {
			t.Fatal(err)
		}
	}
	return dir, digests
}

// CreateBundle writes a bundle from a fake layout and the real chart.
func createBundle(t *testing.T) (string, map[string]v1.Hash) {
	t.Helper()
	dir, digests := writeLayout(t)
	out := filepath.Join(t.TempDir(), "atoll-bundle.tar")
	err := bundle.Create(context.Background(), bundle.CreateOptions{Layout: dir, Chart: "../../charts/atoll", Out: out, Created: time.Unix(0, 0)})
	if err != nil {
		t.Fatal(err)
	}
	return out, digests
}

func TestRoundTrip(t *testing.T) {
	file, digests := createBundle(t)
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")

	pushed, err := bundle.Push(context.Background(), bundle.PushOptions{Bundle: file, Registry: host, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if len(pushed) != len(components) {
		t.Fatalf("pushed %d images, want %d", len(pushed), len(components))
	}

	// Install from what the bundle carries: its chart and values, plus the registry.
	dir := t.TempDir()
	if err := bundle.Extract(file, dir); err != nil {
		t.Fatal(err)
	}
	charts, err := filepath.Glob(filepath.Join(dir, bundle.ChartDir, "atoll-*.tgz"))
	if err != nil || len(charts) != 1 {
		t.Fatalf("packaged chart: %v %v", charts, err)
	}
	ch, err := loader.Load(charts[0])
	if err != nil {
		t.Fatal(err)
	}
	vals, err := chartutil.ReadValuesFile(filepath.Join(dir, bundle.ValuesFile))
	if err != nil {
		t.Fatal(err)
	}
	vals["global"] = map[string]any{"imageRegistry": host}
	// The push gateway is off by default (it needs an app); turn it on so every image is used.
	if push, ok := vals["push"].(map[string]any); ok {
		push["enabled"] = true
		push["apps"] = map[string]any{"org.example.up": map[string]any{"type": "unifiedpush"}}
	} else {
		vals["push"] = map[string]any{"enabled": true, "apps": map[string]any{"org.example.up": map[string]any{"type": "unifiedpush"}}}
	}
	install := action.NewInstall(&action.Configuration{})
	install.ClientOnly, install.DryRun, install.ReleaseName, install.Namespace = true, true, "atoll", "matrix"
	rel, err := install.Run(ch, vals.AsMap())
	if err != nil {
		t.Fatal(err)
	}
	manifests := rel.Manifest
	for _, h := range rel.Hooks {
		manifests += "\n---\n" + h.Manifest
	}
	seen := map[string]bool{}
	for _, line := range strings.Split(manifests, "\n") {
		line = strings.TrimSpace(line)
		ref, ok := strings.CutPrefix(line, "image: ")
		if !ok {
			continue
		}
		ref = strings.Trim(ref, `"`)
		if !strings.HasPrefix(ref, host+"/") || !strings.Contains(ref, "@sha256:") {
			t.Errorf("image %q is not pinned by digest in %s", ref, host)
			continue
		}
		if seen[ref] {
			continue
		}
		seen[ref] = true
		d, err := name.NewDigest(ref)
		if err != nil {
			t.Fatal(err)
		}
		img, err := remote.Image(d)
		if err != nil {
			t.Fatalf("pull %s: %v", ref, err)
		}
		got, err := img.Digest()
		if err != nil {
			t.Fatal(err)
		}
		c := strings.TrimPrefix(d.Context().RepositoryStr(), "atoll-matrix/")
		if got != digests[c] || d.DigestStr() != digests[c].String() {
			t.Errorf("%s: pulled %s, built %s", ref, got, digests[c])
		}
	}
	// homeserver+media, push, postgres, redis, minio and atollctl (hook and tests).
	if len(seen) != len(components) {
		t.Errorf("chart referenced %d distinct images, want %d: %v", len(seen), len(components), seen)
	}
}

func TestLockAndValues(t *testing.T) {
	file, digests := createBundle(t)
	dir := t.TempDir()
	if err := bundle.Extract(file, dir); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, bundle.LockFile))
	if err != nil {
		t.Fatal(err)
	}
	var lock bundle.Lock
	if err := yaml.UnmarshalStrict(b, &lock); err != nil {
		t.Fatal(err)
	}
	for _, c := range components {
		im := lock.Images[c]
		if im.Digest != digests[c].String() || im.Repository != "atoll-matrix/"+c || im.Tag != "0.1.0" {
			t.Errorf("lock %s = %+v", c, im)
		}
		if _, ok := bundle.ValuesPath(c); !ok {
			t.Errorf("%s has no values path", c)
		}
	}
}

func TestExtractRefusesEscapes(t *testing.T) {
	// A bundle is untrusted input on the mirror host: paths may not leave the directory.
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.tar")
	writeTar(t, bad, "../escape", "x")
	if err := bundle.Extract(bad, t.TempDir()); err == nil || !strings.Contains(err.Error(), "unsafe path") {
		t.Fatalf("Extract = %v, want unsafe path", err)
	}
}
