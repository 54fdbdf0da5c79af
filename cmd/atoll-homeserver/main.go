// Command atoll-homeserver runs one shard: a homeserver process hosting many tenants.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/atoll-matrix/atoll/homeserver/config"
	"github.com/atoll-matrix/atoll/homeserver/process"
)

var version = "dev"

func main() {
	configPath := flag.String("config", "/etc/atoll/homeserver.yaml", "configuration file")
	shardName := flag.String("shard-name", "", "shard name (overrides shard.name; the chart passes the pod name)")
	advertiseURL := flag.String("advertise-url", "", "URL other shards forward to (overrides shard.advertise_url)")
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	if *showVersion {
		fmt.Println(version)
		return
	}
	if err := run(*configPath, *shardName, *advertiseURL); err != nil {
		fmt.Fprintln(os.Stderr, "atoll-homeserver:", err)
		os.Exit(1)
	}
}

func run(path, shardName, advertiseURL string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	cfg, err := config.ParseWithShard(b, shardName)
	if err != nil {
		return err
	}
	if advertiseURL != "" {
		cfg.Shard.AdvertiseURL = advertiseURL
	}
	log := newLogger(cfg.Log)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	p, err := process.New(ctx, cfg, log, process.Options{})
	if err != nil {
		return err
	}
	return p.Run(ctx)
}

func newLogger(c config.Log) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "text" {
		return slog.New(slog.NewTextHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, opts))
}
