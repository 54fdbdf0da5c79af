// Package debpkg builds image root filesystems from Debian packages: it downloads .debs with
// apt-get, unpacks the requested packages and adds exactly the shared libraries their ELF
// files need, found by following DT_NEEDED through the packages' dependency closure.
package debpkg

import (
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/atoll-matrix/atoll/images/layer"
)

// ErrUnresolved reports shared libraries no package of the closure provides.
var ErrUnresolved = errors.New("unresolved shared libraries")

// Rootfs describes a root filesystem made from packages.
type Rootfs struct {
	Packages []string          // unpacked completely (minus Skip)
	Skip     func(string) bool // paths to leave out of Packages, in addition to docs
	CacheDir string            // where .debs are downloaded and reused
}

// libDirs returns the directories searched, in order, for a DT_NEEDED name.
func libDirs() []string {
	return []string{"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/lib", "/usr/lib"}
}

// DefaultSkip leaves out documentation, manuals, translations and package metadata.
func DefaultSkip(p string) bool {
	for _, pre := range []string{"/usr/share/doc", "/usr/share/man", "/usr/share/info", "/usr/share/locale", "/usr/share/lintian", "/usr/share/bug", "/etc/init.d", "/etc/logrotate.d", "/lib/systemd", "/usr/lib/systemd", "/etc/systemd"} {
		if p == pre || strings.HasPrefix(p, pre+"/") {
			return true
		}
	}
	return false
}

// Build returns the tree and the version of every package it took files from.
func (r Rootfs) Build(ctx context.Context) (*layer.Tree, map[string]string, error) {
	closure, err := Closure(ctx, r.Packages)
	if err != nil {
		return nil, nil, err
	}
	debs, err := Download(ctx, r.CacheDir, append(append([]string{}, r.Packages...), closure...))
	if err != nil {
		return nil, nil, err
	}
	versions := map[string]string{}
	tree := &layer.Tree{}
	for _, p := range r.Packages {
		if err := Unpack(ctx, debs[p], tree, func(f string) bool {
			return !DefaultSkip(f) && (r.Skip == nil || !r.Skip(f))
		}); err != nil {
			return nil, nil, err
		}
		versions[p] = versionOf(debs[p])
	}
	pool := &layer.Tree{}
	owner := map[string]string{}
	for _, p := range closure {
		t := &layer.Tree{}
		if err := Unpack(ctx, debs[p], t, func(f string) bool { return !DefaultSkip(f) }); err != nil {
			return nil, nil, err
		}
		for _, f := range t.Paths() {
			if _, ok := owner[f]; !ok {
				owner[f] = p
			}
		}
		pool.Merge(t)
	}
	used, err := addNeeded(tree, pool, owner)
	if err != nil {
		return nil, nil, err
	}
	for p := range used {
		versions[p] = versionOf(debs[p])
	}
	return tree, versions, nil
}

// addNeeded copies into tree every library (and its symlinks) that an ELF file of tree
// needs, transitively, taking them from pool. It returns the packages used.
func addNeeded(tree, pool *layer.Tree, owner map[string]string) (map[string]bool, error) {
	used := map[string]bool{}
	seen := map[string]bool{}
	var missing []string
	queue := tree.Paths()
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if seen[p] {
			continue
		}
		seen[p] = true
		e, ok := tree.Entry(p)
		if !ok || e.Kind != layer.KindFile || !bytes.HasPrefix(e.Data, []byte("\x7fELF")) {
			continue
		}
		f, err := elf.NewFile(bytes.NewReader(e.Data))
		if err != nil {
			continue
		}
		needed, _ := f.ImportedLibraries()
		interp := ""
		if s := f.Section(".interp"); s != nil {
			if b, err := s.Data(); err == nil {
				interp = strings.TrimRight(string(b), "\x00")
			}
		}
		f.Close()
		if interp != "" {
			needed = append(needed, interp)
		}
		for _, n := range needed {
			if found := resolve(tree, n, path.Dir(p)); found != "" {
				continue
			}
			src := resolve(pool, n, path.Dir(p))
			if src == "" {
				missing = append(missing, fmt.Sprintf("%s (needed by %s)", n, p))
				continue
			}
			added, err := copyChain(tree, pool, src)
			if err != nil {
				return nil, err
			}
			for _, a := range added {
				used[owner[a]] = true
				queue = append(queue, a)
			}
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return nil, fmt.Errorf("%w: %s", ErrUnresolved, strings.Join(missing, ", "))
	}
	delete(used, "")
	return used, nil
}

// resolve finds the path of a needed library in t: absolute names as they are, others in
// the library directories and beside the file that needs them.
func resolve(t *layer.Tree, name, dir string) string {
	if strings.HasPrefix(name, "/") {
		if _, ok := t.Entry(name); ok {
			return name
		}
		return ""
	}
	for _, d := range append([]string{dir}, libDirs()...) {
		if _, ok := t.Entry(path.Join(d, name)); ok {
			return path.Join(d, name)
		}
	}
	return ""
}

// copyChain copies p from pool to tree, following symlinks; it returns the paths copied.
func copyChain(tree, pool *layer.Tree, p string) ([]string, error) {
	var out []string
	for range 16 {
		e, ok := pool.Entry(p)
		if !ok {
			return nil, fmt.Errorf("library %s: not in the package closure", p)
		}
		switch e.Kind {
		case layer.KindSymlink:
			if err := tree.AddSymlink(p, e.Link); err != nil {
				return nil, err
			}
			out = append(out, p)
			if strings.HasPrefix(e.Link, "/") {
				p = path.Clean(e.Link)
			} else {
				p = path.Join(path.Dir(p), e.Link)
			}
		case layer.KindFile:
			if err := tree.AddFile(p, e.Mode, e.Data); err != nil {
				return nil, err
			}
			return append(out, p), nil
		default:
			return nil, fmt.Errorf("library %s: not a file", p)
		}
	}
	return nil, fmt.Errorf("library %s: too many symlinks", p)
}

// Closure returns the shared-library packages (lib*, zlib1g) in the recursive Depends and
// Pre-Depends of roots, the candidates for their DT_NEEDED entries.
func Closure(ctx context.Context, roots []string) ([]string, error) {
	args := append([]string{"depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances"}, roots...)
	out, err := exec.CommandContext(ctx, "apt-cache", args...).Output()
	if err != nil {
		return nil, fmt.Errorf("apt-cache depends %s: %w", strings.Join(roots, " "), err)
	}
	isRoot := map[string]bool{}
	for _, r := range roots {
		isRoot[r] = true
	}
	set := map[string]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		if line == "" || strings.HasPrefix(line, " ") || strings.HasPrefix(line, "<") || isRoot[line] {
			continue
		}
		if (strings.HasPrefix(line, "lib") && !strings.HasSuffix(line, "-perl") && !strings.HasPrefix(line, "libperl")) || line == "zlib1g" {
			set[line] = true
		}
	}
	names := make([]string, 0, len(set))
	for n := range set {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, nil
}

// Download fetches the .deb of every package into dir with apt-get download, reusing files
// already there, and returns package name -> .deb path.
func Download(ctx context.Context, dir string, pkgs []string) (map[string]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("deb cache: %w", err)
	}
	found := func() (map[string]string, []string, error) {
		have := map[string]string{}
		var need []string
		for _, p := range pkgs {
			m, err := filepath.Glob(filepath.Join(dir, p+"_*.deb"))
			if err != nil {
				return nil, nil, fmt.Errorf("deb cache: %w", err)
			}
			if len(m) == 0 {
				need = append(need, p)
				continue
			}
			sort.Strings(m)
			have[p] = m[len(m)-1]
		}
		return have, need, nil
	}
	have, need, err := found()
	if err != nil || len(need) == 0 {
		return have, err
	}
	cmd := exec.CommandContext(ctx, "apt-get", append([]string{"download", "-q"}, need...)...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("apt-get download: %w: %s", err, bytes.TrimSpace(stderr.Bytes()))
	}
	have, need, err = found()
	if err != nil {
		return nil, err
	}
	if len(need) > 0 {
		return nil, fmt.Errorf("apt-get download: missing %s", strings.Join(need, " "))
	}
	return have, nil
}

// Unpack adds the files of a .deb whose paths keep accepts to tree.
func Unpack(ctx context.Context, deb string, tree *layer.Tree, keep func(string) bool) error {
	out, err := exec.CommandContext(ctx, "dpkg-deb", "--fsys-tarfile", deb).Output()
	if err != nil {
		return fmt.Errorf("unpack %s: %w", filepath.Base(deb), err)
	}
	if err := tree.AddTar(bytes.NewReader(out), keep); err != nil {
		return fmt.Errorf("unpack %s: %w", filepath.Base(deb), err)
	}
	return nil
}

// versionOf reads the version from a .deb file name (name_version_arch.deb).
func versionOf(deb string) string {
	parts := strings.Split(strings.TrimSuffix(filepath.Base(deb), ".deb"), "_")
	if len(parts) < 3 {
		return ""
	}
	return strings.ReplaceAll(parts[1], "%3a", ":")
}
