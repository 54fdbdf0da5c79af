package layer_test

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/atoll-matrix/atoll/images/layer"
)

func TestWriteTarIsSortedAndNormalised(t *testing.T) {
	mtime := time.Unix(1700000000, 0)
	build := func(order []string) []byte {
		t.Helper()
		tr := &layer.Tree{}
		for _, p := range order {
			if err := tr.AddFile(p, 0o644, []byte(p)); err != nil {
				t.Fatal(err)
			}
		}
		if err := tr.AddSymlink("/usr/bin/sh", "dash"); err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := tr.WriteTar(&buf, mtime); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	a := build([]string{"/etc/b", "/etc/a", "/usr/bin/x"})
	b := build([]string{"/usr/bin/x", "/etc/a", "/etc/b"})
	if !bytes.Equal(a, b) {
		t.Fatal("insertion order changed the tar bytes")
	}
	var names []string
	r := tar.NewReader(bytes.NewReader(a))
	for {
		h, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		if !h.ModTime.Equal(mtime) || h.Uid != 0 || h.Gid != 0 {
			t.Errorf("%s: mtime %v uid %d gid %d", h.Name, h.ModTime, h.Uid, h.Gid)
		}
	}
	want := "etc/ etc/a etc/b usr/ usr/bin/ usr/bin/sh usr/bin/x"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("entries %q, want %q", got, want)
	}
}

func TestBadPaths(t *testing.T) {
	for _, p := range []string{"relative", "/", ""} {
		t.Run(p, func(t *testing.T) {
			tr := &layer.Tree{}
			if err := tr.AddFile(p, 0o644, nil); !errors.Is(err, layer.ErrBadPath) {
				t.Errorf("AddFile(%q) = %v, want ErrBadPath", p, err)
			}
		})
	}
}

func TestAddTarKeepsFilterAndResolvesHardLinks(t *testing.T) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range []*tar.Header{
		{Name: "./usr/bin/a", Typeflag: tar.TypeReg, Mode: 0o4755, Size: 1, Uid: 7},
		{Name: "./usr/bin/b", Typeflag: tar.TypeLink, Linkname: "./usr/bin/a"},
		{Name: "./usr/share/doc/x", Typeflag: tar.TypeReg, Mode: 0o644, Size: 1},
	} {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			tw.Write([]byte("x"))
		}
	}
	tw.Close()
	tr := &layer.Tree{}
	err := tr.AddTar(&buf, func(p string) bool { return !strings.HasPrefix(p, "/usr/share/doc") })
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(tr.Paths(), " "); got != "/usr/bin/a /usr/bin/b" {
		t.Fatalf("paths %q", got)
	}
	e, _ := tr.Entry("/usr/bin/b")
	if e.Kind != layer.KindFile || string(e.Data) != "x" || e.UID != 0 || e.Mode != 0o4755 {
		t.Errorf("hard link copy = %+v", e)
	}
}
