// Package assemble turns layers and a run specification into a reproducible OCI image:
// a base layer (users, CA certificates, time zones, writable /tmp) under the caller's layers,
// a non-root user, OCI labels and one fixed creation time.
package assemble

import (
	"fmt"
	"maps"
	"slices"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/atoll-matrix/atoll/images/layer"
)

// NonRoot is the uid and gid every image runs as.
const NonRoot = 65532

// Host paths the base layer copies from the build machine.
const (
	DefaultCACertificates = "/etc/ssl/certs/ca-certificates.crt"
	DefaultZoneinfo       = "/usr/share/zoneinfo"
)

// OCI annotation and label keys written on every image.
const (
	AnnotationVersion  = "org.opencontainers.image.version"
	AnnotationRevision = "org.opencontainers.image.revision"
	AnnotationSource   = "org.opencontainers.image.source"
	AnnotationTitle    = "org.opencontainers.image.title"
	AnnotationCreated  = "org.opencontainers.image.created"
	AnnotationLicenses = "org.opencontainers.image.licenses"
	AnnotationRefName  = "org.opencontainers.image.ref.name"
)

// BaseOptions says where the base layer's host files come from.
type BaseOptions struct {
	CACertificates string // default DefaultCACertificates
	Zoneinfo       string // default DefaultZoneinfo
}

// BaseTree returns the files every image carries: /etc/passwd and /etc/group with root and
// nonroot (65532), nsswitch.conf, the CA bundle, the zoneinfo database, /tmp (1777) and
// the nonroot home directory.
func BaseTree(o BaseOptions) (*layer.Tree, error) {
	if o.CACertificates == "" {
		o.CACertificates = DefaultCACertificates
	}
	if o.Zoneinfo == "" {
		o.Zoneinfo = DefaultZoneinfo
	}
	t := &layer.Tree{}
	files := []struct {
		path string
		data string
	}{
		{"/etc/passwd", "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"},
		{"/etc/group", "root:x:0:\nnonroot:x:65532:\n"},
		{"/etc/nsswitch.conf", "hosts: files dns\n"},
	}
	for _, f := range files {
		if err := t.AddFile(f.path, 0o644, []byte(f.data)); err != nil {
			return nil, err
		}
	}
	if err := t.AddHostFile(o.CACertificates, "/etc/ssl/certs/ca-certificates.crt", 0o644); err != nil {
		return nil, fmt.Errorf("ca certificates: %w", err)
	}
	if err := t.AddHostDir(o.Zoneinfo, "/usr/share/zoneinfo"); err != nil {
		return nil, fmt.Errorf("zoneinfo: %w", err)
	}
	for _, d := range []struct {
		path     string
		mode     int64
		uid, gid int
	}{
		{"/tmp", 0o1777, 0, 0},
		{"/home/nonroot", 0o700, NonRoot, NonRoot},
		{"/root", 0o700, 0, 0},
	} {
		if err := t.AddDir(d.path, d.mode, d.uid, d.gid); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// Spec describes one image.
type Spec struct {
	Title      string            // component name, e.g. atoll-homeserver
	Version    string            // image version (also the tag)
	Revision   string            // source revision (git commit)
	Source     string            // source repository URL
	Created    time.Time         // fixed creation time (SOURCE_DATE_EPOCH)
	Layers     []*layer.Tree     // above the base layer, in order
	Entrypoint []string          // absolute path of the binary first
	Cmd        []string          // default arguments
	Env        []string          // KEY=value, PATH is added when missing
	WorkingDir string            // default /home/nonroot
	Ports      []string          // "8008/tcp"
	Volumes    []string          // declared volumes
	Labels     map[string]string // extra labels
	Platform   v1.Platform       // default linux/amd64
}

// Annotations returns the OCI annotations of s, the same set written as config labels.
func (s Spec) Annotations() map[string]string {
	a := map[string]string{
		AnnotationTitle:    s.Title,
		AnnotationVersion:  s.Version,
		AnnotationRevision: s.Revision,
		AnnotationSource:   s.Source,
		AnnotationCreated:  s.Created.UTC().Format(time.RFC3339),
	}
	maps.Copy(a, s.Labels)
	return a
}

// Image builds the image of s on the base tree. The result is byte-for-byte the same
// for the same inputs.
func Image(base *layer.Tree, s Spec) (v1.Image, error) {
	if len(s.Entrypoint) == 0 {
		return nil, fmt.Errorf("image %s: entrypoint is required", s.Title)
	}
	created := s.Created.UTC().Truncate(time.Second)
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	for i, t := range append([]*layer.Tree{base}, s.Layers...) {
		l, err := t.Layer(created)
		if err != nil {
			return nil, fmt.Errorf("image %s layer %d: %w", s.Title, i, err)
		}
		img, err = mutate.Append(img, mutate.Addendum{Layer: l, History: v1.History{
			Created:   v1.Time{Time: created},
			CreatedBy: fmt.Sprintf("atoll-images: %s layer %d", s.Title, i),
		}})
		if err != nil {
			return nil, fmt.Errorf("image %s: append layer %d: %w", s.Title, i, err)
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("image %s: config: %w", s.Title, err)
	}
	cf = cf.DeepCopy()
	p := s.Platform
	if p.OS == "" {
		p = v1.Platform{OS: "linux", Architecture: "amd64"}
	}
	cf.OS, cf.Architecture, cf.Variant = p.OS, p.Architecture, p.Variant
	cf.Created = v1.Time{Time: created}
	env := slices.Clone(s.Env)
	if !slices.ContainsFunc(env, func(e string) bool { return len(e) > 5 && e[:5] == "PATH=" }) {
		env = append(env, "PATH=/usr/local/bin:/usr/bin:/bin")
	}
	env = append(env, "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt", "ZONEINFO=/usr/share/zoneinfo")
	wd := s.WorkingDir
	if wd == "" {
		wd = "/home/nonroot"
	}
	cf.Config = v1.Config{
		User:       fmt.Sprintf("%d:%d", NonRoot, NonRoot),
		Entrypoint: s.Entrypoint,
		Cmd:        s.Cmd,
		Env:        env,
		WorkingDir: wd,
		Labels:     s.Annotations(),
	}
	if len(s.Ports) > 0 {
		cf.Config.ExposedPorts = map[string]struct{}{}
		for _, port := range s.Ports {
			cf.Config.ExposedPorts[port] = struct{}{}
		}
	}
	if len(s.Volumes) > 0 {
		cf.Config.Volumes = map[string]struct{}{}
		for _, v := range s.Volumes {
			cf.Config.Volumes[v] = struct{}{}
		}
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("image %s: set config: %w", s.Title, err)
	}
	out, ok := mutate.Annotations(img, s.Annotations()).(v1.Image)
	if !ok {
		return nil, fmt.Errorf("image %s: annotations did not keep the image type", s.Title)
	}
	return out, nil
}
