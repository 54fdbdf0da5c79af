// Package layer builds reproducible image layers: an in-memory file tree written as a tar
// archive with sorted entries, fixed owners and modes, and one fixed timestamp, so the same
// inputs always give the same layer digest.
package layer

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Kind is the type of a tree entry.
type Kind int

// Entry kinds.
const (
	KindFile Kind = iota
	KindDir
	KindSymlink
)

// Entry is one file, directory or symbolic link in a Tree.
type Entry struct {
	Kind Kind
	Mode int64  // permission bits only
	UID  int    // owner
	GID  int    // group
	Data []byte // KindFile
	Link string // KindSymlink target
}

// Tree is a set of entries keyed by their absolute, cleaned path ("/etc/passwd").
// The zero value is empty and ready to use.
type Tree struct {
	entries map[string]Entry
}

// ErrBadPath reports a path that is not absolute or escapes the root.
var ErrBadPath = errors.New("path must be absolute and inside the root")

func clean(p string) (string, error) {
	if !strings.HasPrefix(p, "/") {
		return "", fmt.Errorf("%q: %w", p, ErrBadPath)
	}
	c := path.Clean(p)
	if c == "/" {
		return "", fmt.Errorf("%q: %w", p, ErrBadPath)
	}
	return c, nil
}

func (t *Tree) put(p string, e Entry) error {
	c, err := clean(p)
	if err != nil {
		return err
	}
	if t.entries == nil {
		t.entries = map[string]Entry{}
	}
	t.entries[c] = e
	return nil
}

// AddFile adds a regular file owned by root.
func (t *Tree) AddFile(p string, mode int64, data []byte) error {
	return t.put(p, Entry{Kind: KindFile, Mode: mode, Data: data})
}

// AddDir adds a directory with the given mode and owner.
func (t *Tree) AddDir(p string, mode int64, uid, gid int) error {
	return t.put(p, Entry{Kind: KindDir, Mode: mode, UID: uid, GID: gid})
}

// AddSymlink adds a symbolic link.
func (t *Tree) AddSymlink(p, target string) error {
	return t.put(p, Entry{Kind: KindSymlink, Mode: 0o777, Link: target})
}

// Remove deletes p and everything below it.
func (t *Tree) Remove(p string) {
	c := path.Clean(p)
	for k := range t.entries {
		if k == c || strings.HasPrefix(k, c+"/") {
			delete(t.entries, k)
		}
	}
}

// Len is the number of entries.
func (t *Tree) Len() int { return len(t.entries) }

// Entry returns the entry at p.
func (t *Tree) Entry(p string) (Entry, bool) {
	e, ok := t.entries[path.Clean(p)]
	return e, ok
}

// AddHostFile copies the host file src to dst with the given mode, following symlinks.
func (t *Tree) AddHostFile(src, dst string, mode int64) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("add host file: %w", err)
	}
	return t.AddFile(dst, mode, b)
}

// AddHostDir copies the host directory src to dst recursively. Regular files keep only their
// executable bit (0755 or 0644), directories are 0755, symlinks are kept as links.
func (t *Tree) AddHostDir(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("walk %s: %w", src, err)
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return fmt.Errorf("walk %s: %w", src, err)
		}
		target := path.Join(dst, filepath.ToSlash(rel))
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			link, err := os.Readlink(p)
			if err != nil {
				return fmt.Errorf("read link %s: %w", p, err)
			}
			return t.AddSymlink(target, link)
		case d.IsDir():
			return t.AddDir(target, 0o755, 0, 0)
		case d.Type().IsRegular():
			info, err := d.Info()
			if err != nil {
				return fmt.Errorf("stat %s: %w", p, err)
			}
			mode := int64(0o644)
			if info.Mode()&0o111 != 0 {
				mode = 0o755
			}
			return t.AddHostFile(p, target, mode)
		default:
			return nil // devices, sockets and pipes have no place in an image
		}
	})
}

// AddTar adds every file, directory and symlink of a tar stream below root; keep decides
// which paths (absolute, cleaned) are kept. Hard links become copies of their target.
// Owners are reset to root; modes keep their permission bits.
func (t *Tree) AddTar(r io.Reader, keep func(p string) bool) error {
	tr := tar.NewReader(r)
	var hardlinks [][2]string
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("read tar: %w", err)
		}
		p := path.Clean("/" + h.Name)
		if p == "/" || (keep != nil && !keep(p)) {
			continue
		}
		mode := h.Mode & 0o7777
		switch h.Typeflag {
		case tar.TypeDir:
			if err := t.AddDir(p, mode, 0, 0); err != nil {
				return err
			}
		case tar.TypeReg:
			b, err := io.ReadAll(tr)
			if err != nil {
				return fmt.Errorf("read tar entry %s: %w", p, err)
			}
			if err := t.AddFile(p, mode, b); err != nil {
				return err
			}
		case tar.TypeSymlink:
			if err := t.AddSymlink(p, h.Linkname); err != nil {
				return err
			}
		case tar.TypeLink:
			hardlinks = append(hardlinks, [2]string{p, path.Clean("/" + h.Linkname)})
		}
	}
	for _, l := range hardlinks {
		e, ok := t.entries[l[1]]
		if !ok {
			return fmt.Errorf("hard link %s: target %s missing", l[0], l[1])
		}
		if err := t.put(l[0], e); err != nil {
			return err
		}
	}
	return nil
}

// Merge copies every entry of o into t; o wins on conflicts.
func (t *Tree) Merge(o *Tree) {
	if t.entries == nil {
		t.entries = map[string]Entry{}
	}
	for k, v := range o.entries {
		t.entries[k] = v
	}
}

// WriteTar writes the tree as a tar stream: parent directories are added where missing
// (0755, root), entries are sorted by path, and every header carries mtime.
func (t *Tree) WriteTar(w io.Writer, mtime time.Time) error {
	all := make(map[string]Entry, len(t.entries))
	for p, e := range t.entries {
		all[p] = e
		for d := path.Dir(p); d != "/"; d = path.Dir(d) {
			if _, ok := t.entries[d]; !ok {
				all[d] = Entry{Kind: KindDir, Mode: 0o755}
			}
		}
	}
	paths := make([]string, 0, len(all))
	for p := range all {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	tw := tar.NewWriter(w)
	mtime = mtime.UTC().Truncate(time.Second)
	for _, p := range paths {
		e := all[p]
		h := &tar.Header{
			Name:    strings.TrimPrefix(p, "/"),
			Mode:    e.Mode,
			Uid:     e.UID,
			Gid:     e.GID,
			ModTime: mtime,
			Format:  tar.FormatPAX,
		}
		switch e.Kind {
		case KindDir:
			h.Typeflag = tar.TypeDir
			h.Name += "/"
		case KindSymlink:
			h.Typeflag = tar.TypeSymlink
			h.Linkname = e.Link
		default:
			h.Typeflag = tar.TypeReg
			h.Size = int64(len(e.Data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return fmt.Errorf("write tar header %s: %w", p, err)
		}
		if e.Kind == KindFile {
			if _, err := tw.Write(e.Data); err != nil {
				return fmt.Errorf("write tar entry %s: %w", p, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("close tar: %w", err)
	}
	return nil
}

// Layer returns the tree as an OCI layer (gzip) whose timestamps are all mtime.
func (t *Tree) Layer(mtime time.Time) (v1.Layer, error) {
	var buf bytes.Buffer
	if err := t.WriteTar(&buf, mtime); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("make layer: %w", err)
	}
	return l, nil
}

// Paths returns every entry's path, sorted.
func (t *Tree) Paths() []string {
	out := make([]string, 0, len(t.entries))
	for p := range t.entries {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}
