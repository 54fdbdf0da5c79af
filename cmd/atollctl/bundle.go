package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"

	"github.com/atoll-matrix/atoll/images/bundle"
)

// bundleCmd runs "atollctl bundle push --bundle FILE --registry HOST": it mirrors every image
// of an air-gapped bundle into a private registry, keeping repositories, tags and digests.
func bundleCmd(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] != "push" {
		return errors.New("usage: atollctl bundle push --bundle FILE --registry HOST[:PORT] [--insecure]")
	}
	fs := flag.NewFlagSet("atollctl bundle push", flag.ContinueOnError)
	file := fs.String("bundle", "", "bundle file written by make bundle")
	registry := fs.String("registry", "", "registry host[:port], optionally with a path prefix")
	insecure := fs.Bool("insecure", false, "use plain HTTP (loopback and private addresses use it anyway)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if *file == "" || *registry == "" {
		return errors.New("bundle push: --bundle and --registry are required")
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	pushed, err := bundle.Push(ctx, bundle.PushOptions{Bundle: *file, Registry: *registry, Insecure: *insecure, Log: log})
	if err != nil {
		return err
	}
	for _, p := range pushed {
		fmt.Printf("%s\t%s@%s\n", p.Component, p.Ref, p.Digest)
	}
	fmt.Printf("install with: helm install atoll <bundle>/%s/atoll-*.tgz -f <bundle>/%s --set global.imageRegistry=%s\n", bundle.ChartDir, bundle.ValuesFile, *registry)
	return nil
}
