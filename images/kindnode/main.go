// Command kindnode writes the image archives an air-gapped kind cluster needs, as Docker
// archives (`docker save` format) that `ctr images import` and `kind load image-archive` read.
//
//	go run ./images/kindnode control-plane -bin DIR -coredns FILE -pause FILE -rootfs TAR -out DIR REF...
//
// makes one archive per REF (the list `kubeadm config images list` prints) from binaries built
// locally: kube-apiserver, kube-controller-manager, kube-scheduler and etcd as a single static
// binary on PATH; kube-proxy on top of the node's Debian rootfs (it runs iptables); CoreDNS at
// /coredns and pause at /pause, as their upstream images have them. scripts/kind-node.sh calls it.
//
//	go run ./images/kindnode bundle -layout DIR -registry HOST -out TAR
//
// converts an atoll-images OCI layout (index.json names each image atoll-matrix/<image>:<version>)
// into one OCI archive whose images are named HOST/atoll-matrix/<image>:<version> and
// HOST/atoll-matrix/<image>@<digest>, for `kind load image-archive`.
//
//	go run ./images/kindnode binary -bin FILE -ref REF -out TAR
//
// makes an image of one static binary (the e2e suite's helpers, e.g. e2e/fakepush). The e2e suite (e2e/) calls it through scripts/e2e.sh.
package main

import (
	"archive/tar"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/atoll-matrix/atoll/images/assemble"
	"github.com/atoll-matrix/atoll/images/layer"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: kindnode control-plane|bundle|binary [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "control-plane":
		err = controlPlane(os.Args[2:])
	case "bundle":
		err = bundle(os.Args[2:])
	case "binary":
		err = binary(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "kindnode:", err)
		os.Exit(1)
	}
}

func controlPlane(args []string) error {
	fs := flag.NewFlagSet("control-plane", flag.ExitOnError)
	bin := fs.String("bin", "", "directory with kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy and etcd")
	coredns := fs.String("coredns", "", "CoreDNS binary")
	pause := fs.String("pause", "", "pause binary")
	rootfs := fs.String("rootfs", "", "Debian rootfs tar, the base of kube-proxy's image")
	out := fs.String("out", "", "output directory, one <name>.tar per image")
	fs.Parse(args)
	if *bin == "" || *coredns == "" || *pause == "" || *rootfs == "" || *out == "" || fs.NArg() == 0 {
		return errors.New("control-plane: -bin, -coredns, -pause, -rootfs, -out and at least one image reference are required")
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	for _, ref := range fs.Args() {
		tag, err := name.NewTag(ref)
		if err != nil {
			return fmt.Errorf("image reference %q: %w", ref, err)
		}
		base := path.Base(tag.RepositoryStr())
		var img v1.Image
		switch base {
		case "kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd":
			img, err = binaryImage(filepath.Join(*bin, base), "/usr/local/bin/"+base, nil)
		case "kube-proxy":
			img, err = kubeProxyImage(filepath.Join(*bin, base), *rootfs)
		case "coredns":
			img, err = binaryImage(*coredns, "/coredns", []string{"/coredns"})
		case "pause":
			img, err = binaryImage(*pause, "/pause", []string{"/pause"})
		default:
			return fmt.Errorf("no recipe for image %s", ref)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", ref, err)
		}
		if err := writeArchive(filepath.Join(*out, base+".tar"), map[name.Reference]v1.Image{tag: img}); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "kindnode: %s\n", ref)
	}
	return nil
}

// binaryImage is one static binary on an empty base, plus /tmp.
func binaryImage(src, dst string, entrypoint []string) (v1.Image, error) {
	t := &layer.Tree{}
	if err := t.AddHostFile(src, dst, 0o755); err != nil {
		return nil, err
	}
	if err := t.AddDir("/tmp", 0o1777, 0, 0); err != nil {
		return nil, err
	}
	l, err := t.Layer(time.Unix(0, 0))
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(empty.Image, l)
	if err != nil {
		return nil, err
	}
	return configure(img, entrypoint)
}

// kubeProxyStart stands in for kube-proxy (the DaemonSet runs /usr/local/bin/kube-proxy): like
// the upstream image's iptables-wrapper, it makes iptables the variant (legacy or nft) that
// already holds the node's rules, then runs the real binary.
const kubeProxyStart = `#!/bin/sh
legacy=$( (iptables-legacy-save; ip6tables-legacy-save) 2>/dev/null | grep -c '^-')
nft=$( (iptables-nft-save; ip6tables-nft-save) 2>/dev/null | grep -c '^-')
mode=nft
[ "${legacy:-0}" -gt "${nft:-0}" ] && mode=legacy
for t in iptables ip6tables; do update-alternatives --set "$t" "/usr/sbin/$t-$mode" >/dev/null; done
exec /usr/local/bin/kube-proxy.bin "$@"
`

func kubeProxyImage(src, rootfs string) (v1.Image, error) {
	base, err := tarball.LayerFromFile(rootfs)
	if err != nil {
		return nil, err
	}
	t := &layer.Tree{}
	if err := t.AddHostFile(src, "/usr/local/bin/kube-proxy.bin", 0o755); err != nil {
		return nil, err
	}
	if err := t.AddFile("/usr/local/bin/kube-proxy", 0o755, []byte(kubeProxyStart)); err != nil {
		return nil, err
	}
	l, err := t.Layer(time.Unix(0, 0))
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(empty.Image, base, l)
	if err != nil {
		return nil, err
	}
	return configure(img, nil)
}

func configure(img v1.Image, entrypoint []string) (v1.Image, error) {
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	cf.Config.Entrypoint = entrypoint
	return mutate.ConfigFile(img, cf)
}

func binary(args []string) error {
	fs := flag.NewFlagSet("binary", flag.ExitOnError)
	bin := fs.String("bin", "", "static binary, run as the image's entrypoint")
	ref := fs.String("ref", "", "image reference")
	out := fs.String("out", "", "output archive")
	fs.Parse(args)
	if *bin == "" || *ref == "" || *out == "" {
		return errors.New("binary: -bin, -ref and -out are required")
	}
	tag, err := name.NewTag(*ref)
	if err != nil {
		return err
	}
	dst := "/" + filepath.Base(*bin)
	img, err := binaryImage(*bin, dst, []string{dst})
	if err != nil {
		return err
	}
	return writeArchive(*out, map[name.Reference]v1.Image{tag: img})
}

func bundle(args []string) error {
	fs := flag.NewFlagSet("bundle", flag.ExitOnError)
	dir := fs.String("layout", "", "OCI image layout written by atoll-images")
	registry := fs.String("registry", "", "registry host the chart is told to use (global.imageRegistry)")
	out := fs.String("out", "", "output archive")
	fs.Parse(args)
	if *dir == "" || *registry == "" || *out == "" {
		return errors.New("bundle: -layout, -registry and -out are required")
	}
	src, err := layout.FromPath(*dir)
	if err != nil {
		return err
	}
	idx, err := src.ImageIndex()
	if err != nil {
		return err
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(*out), ".kindnode-bundle-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	dst, err := layout.Write(tmp, empty.Index)
	if err != nil {
		return err
	}
	// Each image is listed twice, named by tag and by digest: containerd's CRI resolves only
	// names it has, and values-bundle.yaml pins every image by digest. The manifests are copied
	// as they are, so the digests stay the ones in images.lock.yaml.
	for _, d := range m.Manifests {
		ref := d.Annotations[assemble.AnnotationRefName]
		if ref == "" || !strings.Contains(ref, ":") {
			return fmt.Errorf("%s: manifest %s has no %s <repository>:<tag> annotation", *dir, d.Digest, assemble.AnnotationRefName)
		}
		tag, err := name.NewTag(*registry + "/" + ref)
		if err != nil {
			return fmt.Errorf("%s: %w", ref, err)
		}
		img, err := idx.Image(d.Digest)
		if err != nil {
			return fmt.Errorf("%s: %w", ref, err)
		}
		byDigest := tag.Context().Digest(d.Digest.String())
		for _, n := range []string{tag.Name(), byDigest.Name()} {
			if err := dst.AppendImage(img, layout.WithAnnotations(map[string]string{containerdName: n})); err != nil {
				return err
			}
		}
		fmt.Fprintf(os.Stderr, "kindnode: %s (%s)\n", tag, d.Digest)
	}
	if len(m.Manifests) == 0 {
		return fmt.Errorf("%s: no images", *dir)
	}
	return tarDir(tmp, *out)
}

// containerdName is the index annotation `ctr images import` takes an image's name from.
const containerdName = "io.containerd.image.name"

// tarDir writes the files under dir into a tar archive at file.
func tarDir(dir, file string) error {
	f, err := os.Create(file + ".tmp")
	if err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		info, err := e.Info()
		if err != nil {
			return err
		}
		h, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		h.Name = filepath.ToSlash(rel)
		if e.IsDir() {
			h.Name += "/"
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if e.IsDir() {
			return nil
		}
		r, err := os.Open(p)
		if err != nil {
			return err
		}
		defer r.Close()
		_, err = io.Copy(tw, r)
		return err
	})
	if err == nil {
		err = tw.Close()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(file + ".tmp")
		return err
	}
	return os.Rename(file+".tmp", file)
}

func writeArchive(file string, imgs map[name.Reference]v1.Image) error {
	tmp := file + ".tmp"
	if err := tarball.MultiRefWriteToFile(tmp, imgs); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", file, err)
	}
	return os.Rename(tmp, file)
}
