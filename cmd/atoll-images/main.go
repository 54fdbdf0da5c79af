// Command atoll-images builds Atoll's OCI images into an OCI layout (make images) and
// packs the air-gapped bundle (make bundle), without a Docker daemon.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/atoll-matrix/atoll/images/bundle"
	"github.com/atoll-matrix/atoll/images/catalog"
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	err := run(ctx, log, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "atoll-images:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, log *slog.Logger, args []string) error {
	fs := flag.NewFlagSet("atoll-images", flag.ContinueOnError)
	cache := os.Getenv("ATOLL_CACHE")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache", "atoll")
	}
	var (
		module   = fs.String("module", ".", "module root holding cmd/")
		out      = fs.String("out", "out/images", "OCI layout directory to write")
		work     = fs.String("work", "out/build", "directory for compiled binaries")
		cacheDir = fs.String("cache", cache, "cache directory (debs/, bin/minio)")
		version  = fs.String("version", "0.1.0", "image version and tag")
		revision = fs.String("revision", "unknown", "source revision")
		source   = fs.String("source", "https://github.com/atoll-matrix/atoll", "source repository")
		only     = fs.String("only", "", "comma-separated images to build (default all)")
		bundleTo = fs.String("bundle", "", "after building, write the air-gapped bundle to this file")
		chartDir = fs.String("chart", "charts/atoll", "chart directory packed into the bundle")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	created := time.Unix(0, 0).UTC()
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("SOURCE_DATE_EPOCH: %w", err)
		}
		created = time.Unix(n, 0).UTC()
	}
	var names []string
	if *only != "" {
		names = strings.Split(*only, ",")
	}
	built, err := catalog.Build(ctx, catalog.Options{
		ModuleDir: *module, Out: *out, WorkDir: *work, CacheDir: *cacheDir,
		Version: *version, Revision: *revision, Source: *source, Created: created,
		Only: names, Log: log,
	})
	if err != nil {
		return err
	}
	for _, b := range built {
		fmt.Printf("%s\t%s@%s\n", b.Component.Name, b.Ref, b.Digest)
	}
	if *bundleTo == "" {
		return nil
	}
	if err := bundle.Create(ctx, bundle.CreateOptions{Layout: *out, Chart: *chartDir, Out: *bundleTo, Created: created}); err != nil {
		return err
	}
	fmt.Printf("bundle\t%s\n", *bundleTo)
	return nil
}
