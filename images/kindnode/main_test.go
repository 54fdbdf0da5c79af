package main

import (
	"archive/tar"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/atoll-matrix/atoll/images/assemble"
)

// The bundle archive names every image by tag and by its unchanged manifest digest.
func TestBundleNamesByTagAndDigest(t *testing.T) {
	dir := t.TempDir()
	src, err := layout.Write(filepath.Join(dir, "oci"), empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	img, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := src.AppendImage(img, layout.WithAnnotations(map[string]string{assemble.AnnotationRefName: "atoll-matrix/atoll-push:0.1.0"})); err != nil {
		t.Fatal(err)
	}
	dg, _ := img.Digest()
	out := filepath.Join(dir, "bundle.tar")
	if err := bundle([]string{"-layout", filepath.Join(dir, "oci"), "-registry", "atoll.local", "-out", out}); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	var names []string
	blobs := 0
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case h.Name == "index.json":
			var idx struct {
				Manifests []struct {
					Digest      string            `json:"digest"`
					Annotations map[string]string `json:"annotations"`
				} `json:"manifests"`
			}
			if err := json.NewDecoder(tr).Decode(&idx); err != nil {
				t.Fatal(err)
			}
			for _, m := range idx.Manifests {
				if m.Digest != dg.String() {
					t.Errorf("manifest digest %s, want %s", m.Digest, dg)
				}
				names = append(names, m.Annotations[containerdName])
			}
		case filepath.Dir(h.Name) == "blobs/sha256" && h.Typeflag == tar.TypeReg:
			blobs++
		}
	}
	sort.Strings(names)
	want := []string{"atoll.local/atoll-matrix/atoll-push:0.1.0", "atoll.local/atoll-matrix/atoll-push@" + dg.String()}
	if len(names) != 2 || names[0] != want[0] || names[1] != want[1] {
		t.Errorf("names %q, want %q", names, want)
	}
	if blobs != 3 { // manifest, config, one layer
		t.Errorf("%d blobs, want 3", blobs)
	}
}
