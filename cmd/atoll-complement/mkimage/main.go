// Command mkimage builds the Complement image of atoll-homeserver (package images/complement)
// and writes it as a tarball for `docker load`: go run ./cmd/atoll-complement/mkimage.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"time"

	"github.com/atoll-matrix/atoll/images/complement"
)

func main() {
	cache := os.Getenv("ATOLL_CACHE")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache", "atoll")
	}
	module := flag.String("module", ".", "module root holding cmd/")
	work := flag.String("work", "out/build", "directory for compiled binaries")
	cacheDir := flag.String("cache", cache, "cache directory (debs/)")
	out := flag.String("out", "out/complement/atoll-complement.tar", "docker load tarball to write")
	ref := flag.String("tag", "atoll-complement:latest", "image reference written into the tarball")
	revision := flag.String("revision", "unknown", "source revision")
	minio := flag.String("minio", filepath.Join(cache, "bin", "minio"), "static MinIO binary; with it the image serves media through atoll-media (\"\" or a missing file: no media)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if *minio != "" {
		if _, err := os.Stat(*minio); err != nil {
			fmt.Fprintf(os.Stderr, "mkimage: no MinIO binary at %s (scripts/minio.sh builds one): the image serves no media\n", *minio)
			*minio = ""
		}
	}
	img, err := complement.Build(ctx, complement.Options{ModuleDir: *module, WorkDir: *work, CacheDir: *cacheDir,
		Version: "complement", Revision: *revision, Created: time.Unix(0, 0).UTC(), MinIO: *minio})
	if err == nil {
		err = complement.WriteTarball(img, *ref, *out)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
	d, _ := img.Digest()
	media := "media"
	if *minio == "" {
		media = "no-media"
	}
	fmt.Printf("%s\t%s\t%s\t%s\n", *ref, d, *out, media)
}
