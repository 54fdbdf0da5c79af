// Command atoll-media runs the media sidecar: the Matrix content repository for the tenants of
// one homeserver shard, storing media in S3 and metadata in PostgreSQL.
//
//	atoll-media --config /etc/atoll/media.yaml
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/atoll-matrix/atoll/sidecars/media"
	"github.com/atoll-matrix/atoll/sidecars/media/config"
	"github.com/atoll-matrix/atoll/sidecars/media/hsauth"
	"github.com/atoll-matrix/atoll/sidecars/media/hsfed"
	"github.com/atoll-matrix/atoll/sidecars/media/mediadb"
	"github.com/atoll-matrix/atoll/sidecars/media/mediastore"
	"github.com/atoll-matrix/atoll/sidecars/media/preview"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

func main() {
	configPath := flag.String("config", "/etc/atoll/media.yaml", "configuration file")
	flag.Parse()
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *configPath, log); err != nil {
		log.Error("atoll-media failed", "error", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, configPath string, log *slog.Logger) error {
	cfg, err := config.Load(configPath)
	if err != nil {
		return err
	}
	secrets, err := cfg.ReadSecrets()
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	s3, err := mediastore.NewClient(mediastore.ClientOptions{
		Endpoint: cfg.S3.Endpoint, AccessKey: secrets.S3AccessKey, SecretKey: secrets.S3SecretKey,
		Region: cfg.S3.Region, Secure: cfg.S3.Secure, DialTimeout: cfg.S3.DialTimeout,
		ResponseHeaderTimeout: cfg.S3.ResponseHeaderTimeout, MaxRetries: cfg.S3.MaxRetries,
	})
	if err != nil {
		return err
	}
	store, err := mediastore.New(s3, mediastore.Options{
		Mode: cfg.S3.BucketMode, BucketPrefix: cfg.S3.BucketPrefix, SharedBucket: cfg.S3.SharedBucket,
		Region: cfg.S3.Region, PartSize: cfg.S3.PartSize,
	}, reg)
	if err != nil {
		return err
	}
	openCtx, cancel := context.WithTimeout(ctx, time.Minute)
	db, err := mediadb.Open(openCtx, secrets.DatabaseURL, cfg.Database.Schema, cfg.Database.MaxConns)
	cancel()
	if err != nil {
		return err
	}
	defer db.Close()

	// Federation goes through the homeserver, which signs outbound requests as the asking
	// tenant and verifies inbound ones: the sidecar holds no signing key.
	fed := hsfed.New(hsfed.Options{BaseURL: cfg.HomeserverURL, AdminToken: secrets.HomeserverToken,
		LocationClient: preview.NewClient(cfg.Federation.Timeout, cfg.Federation.AllowPrivateAddresses),
		MaxBytes:       cfg.Federation.MaxRemoteBytes})
	deps := media.Deps{
		Config:     cfg,
		AdminToken: secrets.HomeserverToken,
		Auth: hsauth.New(hsauth.Options{BaseURL: cfg.HomeserverURL, AdminToken: secrets.HomeserverToken,
			CacheTTL: cfg.AuthCacheTTL, CacheSize: cfg.AuthCacheSize}),
		Store:      store,
		DB:         db,
		Fetcher:    fed,
		Logger:     log,
		Registerer: reg,
	}
	if !cfg.Federation.AcceptUnsignedRequests { // tests only: serve federation media unverified
		deps.VerifyFederation = fed.Verify
	}
	if cfg.Preview.Enabled {
		deps.Preview = &preview.Fetcher{
			Client:    preview.NewClient(cfg.Preview.Timeout, cfg.Preview.AllowPrivateAddressesForTests),
			MaxBytes:  cfg.Preview.MaxBytes,
			UserAgent: cfg.Preview.UserAgent,
		}
	}
	srv, err := media.New(deps)
	if err != nil {
		return err
	}

	api := &http.Server{Addr: cfg.Listen, Handler: srv.Handler(), ReadHeaderTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}
	metricsMux := http.NewServeMux()
	metricsMux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	metricsMux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if err := db.Ping(r.Context()); err != nil {
			http.Error(w, "database unavailable", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	metricsSrv := &http.Server{Addr: cfg.MetricsListen, Handler: metricsMux, ReadHeaderTimeout: 10 * time.Second}

	errc := make(chan error, 3)
	go func() { errc <- serve(api, "api") }()
	go func() { errc <- serve(metricsSrv, "metrics") }()
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	go func() { errc <- srv.Run(runCtx) }()
	log.Info("atoll-media listening", "listen", cfg.Listen, "metrics_listen", cfg.MetricsListen)

	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	stopRun()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return errors.Join(err, api.Shutdown(shutdownCtx), metricsSrv.Shutdown(shutdownCtx))
}

func serve(s *http.Server, name string) error {
	if err := s.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("%s listener: %w", name, err)
	}
	return nil
}
