// Package bundle is the air-gapped install bundle: one tar holding an OCI layout with every
// image, the packaged Helm chart, a lock of image digests and a values file that selects
// every image by digest; and the push that mirrors it into a private registry.
package bundle

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"sigs.k8s.io/yaml"
)

// Files inside the bundle.
const (
	LayoutDir  = "oci"                // the OCI image layout
	ChartDir   = "chart"              // chart/<name>-<version>.tgz
	LockFile   = "images.lock.yaml"   // component -> repository, tag, digest
	ValuesFile = "values-bundle.yaml" // chart values selecting every image by digest
)

const refNameAnnotation = "org.opencontainers.image.ref.name"

// ValuesPaths maps an image to where the chart sets it (dot-separated path of the image
// block in the umbrella chart's values).
var valuesPaths = map[string]string{
	"atoll-homeserver": "homeserver.image",
	"atoll-media":      "homeserver.media.image",
	"atoll-push":       "push.image",
	"atollctl":         "atollctl.image",
	"postgres":         "postgres.image",
	"redis":            "redis.image",
	"minio":            "minio.image",
}

// ValuesPath returns the values path of an image's block in the chart, e.g. "push.image".
func ValuesPath(component string) (string, bool) {
	p, ok := valuesPaths[component]
	return p, ok
}

// Image is one entry of the lock.
type Image struct {
	Repository string `json:"repository"`
	Tag        string `json:"tag"`
	Digest     string `json:"digest"`
}

// Lock is images.lock.yaml.
type Lock struct {
	Images map[string]Image `json:"images"`
}

// ReadLayout lists the images of an OCI layout by component, from their ref.name annotations
// (repository:tag, the repository's last element naming the component).
func ReadLayout(dir string) (Lock, error) {
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return Lock{}, fmt.Errorf("read layout %s: %w", dir, err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return Lock{}, fmt.Errorf("read layout %s: %w", dir, err)
	}
	lock := Lock{Images: map[string]Image{}}
	for _, d := range m.Manifests {
		ref := d.Annotations[refNameAnnotation]
		repo, tag, ok := strings.Cut(ref, ":")
		if !ok {
			return Lock{}, fmt.Errorf("read layout %s: manifest %s has no repository:tag ref.name", dir, d.Digest)
		}
		lock.Images[path.Base(repo)] = Image{Repository: repo, Tag: tag, Digest: d.Digest.String()}
	}
	return lock, nil
}

// Values returns the chart values that select every locked image by digest.
func (l Lock) Values() (map[string]any, error) {
	out := map[string]any{}
	names := make([]string, 0, len(l.Images))
	for n := range l.Images {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		p, ok := valuesPaths[n]
		if !ok {
			return nil, fmt.Errorf("image %s: the chart has no values for it", n)
		}
		im := l.Images[n]
		cur := out
		keys := strings.Split(p, ".")
		for _, k := range keys[:len(keys)-1] {
			next, ok := cur[k].(map[string]any)
			if !ok {
				next = map[string]any{}
				cur[k] = next
			}
			cur = next
		}
		cur[keys[len(keys)-1]] = map[string]any{"repository": im.Repository, "tag": im.Tag, "digest": im.Digest}
	}
	return out, nil
}

// CreateOptions configure Create.
type CreateOptions struct {
	Layout  string    // OCI layout with the images (out/images)
	Chart   string    // chart directory (charts/atoll)
	Out     string    // bundle file to write
	Created time.Time // timestamp of every tar entry
}

// Create writes the bundle.
func Create(ctx context.Context, o CreateOptions) error {
	lock, err := ReadLayout(o.Layout)
	if err != nil {
		return fmt.Errorf("create bundle: %w", err)
	}
	values, err := lock.Values()
	if err != nil {
		return fmt.Errorf("create bundle: %w", err)
	}
	lockYAML, err := yaml.Marshal(lock)
	if err != nil {
		return fmt.Errorf("create bundle: lock: %w", err)
	}
	valuesYAML, err := yaml.Marshal(values)
	if err != nil {
		return fmt.Errorf("create bundle: values: %w", err)
	}
	ch, err := loader.Load(o.Chart)
	if err != nil {
		return fmt.Errorf("create bundle: load chart: %w", err)
	}
	tmp, err := os.MkdirTemp("", "atoll-bundle-")
	if err != nil {
		return fmt.Errorf("create bundle: %w", err)
	}
	defer os.RemoveAll(tmp)
	chartFile, err := chartutil.Save(ch, tmp)
	if err != nil {
		return fmt.Errorf("create bundle: package chart: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	f, err := os.Create(o.Out)
	if err != nil {
		return fmt.Errorf("create bundle: %w", err)
	}
	tw := tar.NewWriter(f)
	w := tarWriter{tw: tw, mtime: o.Created.UTC()}
	header := "# Generated by atoll-images: install with -f " + ValuesFile + " --set global.imageRegistry=HOST\n"
	werr := errors.Join(
		w.file(LockFile, []byte(header+string(lockYAML))),
		w.file(ValuesFile, []byte(header+string(valuesYAML))),
		w.hostFile(chartFile, ChartDir+"/"+filepath.Base(chartFile)),
		w.tree(o.Layout, LayoutDir),
		tw.Close(),
	)
	if err := errors.Join(werr, f.Close()); err != nil {
		os.Remove(o.Out)
		return fmt.Errorf("create bundle: %w", err)
	}
	return nil
}

type tarWriter struct {
	tw    *tar.Writer
	mtime time.Time
}

func (w tarWriter) file(name string, b []byte) error {
	if err := w.tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), ModTime: w.mtime, Typeflag: tar.TypeReg, Format: tar.FormatPAX}); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if _, err := w.tw.Write(b); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}

func (w tarWriter) hostFile(src, name string) error {
	f, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := w.tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: st.Size(), ModTime: w.mtime, Typeflag: tar.TypeReg, Format: tar.FormatPAX}); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if _, err := io.Copy(w.tw, f); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}

// tree writes the regular files below dir, sorted, under prefix.
func (w tarWriter) tree(dir, prefix string) error {
	var files []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("walk %s: %w", dir, err)
	}
	sort.Strings(files)
	for _, p := range files {
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return fmt.Errorf("walk %s: %w", dir, err)
		}
		if err := w.hostFile(p, prefix+"/"+filepath.ToSlash(rel)); err != nil {
			return err
		}
	}
	return nil
}

// Extract unpacks a bundle into dir (which must exist), refusing paths outside it.
func Extract(file, dir string) error {
	f, err := os.Open(file)
	if err != nil {
		return fmt.Errorf("extract bundle: %w", err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("extract bundle: %w", err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		clean := path.Clean(h.Name)
		if path.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, "../") {
			return fmt.Errorf("extract bundle: unsafe path %q", h.Name)
		}
		dst := filepath.Join(dir, filepath.FromSlash(clean))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return fmt.Errorf("extract bundle: %w", err)
		}
		out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
		if err != nil {
			return fmt.Errorf("extract bundle: %w", err)
		}
		_, cerr := io.Copy(out, tr)
		if err := errors.Join(cerr, out.Close()); err != nil {
			return fmt.Errorf("extract bundle %s: %w", clean, err)
		}
	}
}

// PushOptions configure Push.
type PushOptions struct {
	Bundle   string // bundle file
	Registry string // host[:port][/prefix] of the private registry
	Insecure bool   // plain HTTP
	Remote   []remote.Option
	Log      *slog.Logger
}

// Pushed is one image mirrored into the registry.
type Pushed struct {
	Component string
	Ref       string // registry/repository:tag
	Digest    string
}

// Push mirrors every image of the bundle into the registry under the same repository,
// tag and digest, and checks the registry reports the digest the lock names.
func Push(ctx context.Context, o PushOptions) ([]Pushed, error) {
	if o.Log == nil {
		return nil, errors.New("push bundle: a logger is required")
	}
	dir, err := os.MkdirTemp("", "atoll-bundle-push-")
	if err != nil {
		return nil, fmt.Errorf("push bundle: %w", err)
	}
	defer os.RemoveAll(dir)
	if err := Extract(o.Bundle, dir); err != nil {
		return nil, err
	}
	lock, err := ReadLayout(filepath.Join(dir, LayoutDir))
	if err != nil {
		return nil, fmt.Errorf("push bundle: %w", err)
	}
	lp, err := layout.FromPath(filepath.Join(dir, LayoutDir))
	if err != nil {
		return nil, fmt.Errorf("push bundle: %w", err)
	}
	var nameOpts []name.Option
	if o.Insecure {
		nameOpts = append(nameOpts, name.Insecure)
	}
	opts := append([]remote.Option{remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain)}, o.Remote...)
	names := make([]string, 0, len(lock.Images))
	for n := range lock.Images {
		names = append(names, n)
	}
	sort.Strings(names)
	var out []Pushed
	for _, n := range names {
		im := lock.Images[n]
		h, err := v1.NewHash(im.Digest)
		if err != nil {
			return nil, fmt.Errorf("push %s: %w", n, err)
		}
		img, err := lp.Image(h)
		if err != nil {
			return nil, fmt.Errorf("push %s: read image: %w", n, err)
		}
		ref, err := name.NewTag(strings.TrimSuffix(o.Registry, "/")+"/"+im.Repository+":"+im.Tag, nameOpts...)
		if err != nil {
			return nil, fmt.Errorf("push %s: %w", n, err)
		}
		if err := remote.Write(ref, img, opts...); err != nil {
			return nil, fmt.Errorf("push %s to %s: %w", n, ref, err)
		}
		desc, err := remote.Head(ref.Context().Digest(im.Digest), opts...)
		if err != nil {
			return nil, fmt.Errorf("push %s: check %s: %w", n, ref, err)
		}
		if desc.Digest.String() != im.Digest {
			return nil, fmt.Errorf("push %s: registry has %s, lock says %s", n, desc.Digest, im.Digest)
		}
		o.Log.Info("image pushed", "image", n, "ref", ref.String(), "digest", im.Digest)
		out = append(out, Pushed{Component: n, Ref: ref.String(), Digest: im.Digest})
	}
	return out, nil
}
