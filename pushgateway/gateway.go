// Package pushgateway implements the Matrix Push Gateway API
// (POST /_matrix/push/v1/notify): it decodes notifications from
// homeservers, de-duplicates retried ones, delivers each device's
// notification through its app's provider (APNs, FCM, Web Push,
// UnifiedPush) with bounded retries and per-app concurrency limits, and
// reports permanently dead pushkeys back as rejected.
package pushgateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/atoll-matrix/atoll/pushgateway/apns"
	"github.com/atoll-matrix/atoll/pushgateway/config"
	"github.com/atoll-matrix/atoll/pushgateway/dedup"
	"github.com/atoll-matrix/atoll/pushgateway/fcm"
	"github.com/atoll-matrix/atoll/pushgateway/push"
	"github.com/atoll-matrix/atoll/pushgateway/unifiedpush"
	"github.com/atoll-matrix/atoll/pushgateway/webpush"
)

// sender is what every provider client provides.
type sender interface {
	Send(ctx context.Context, n *push.Notification, d push.Device) error
	Close()
}

// app is one configured app (ID or glob) with its provider and limit.
type app struct {
	provider string
	s        sender
	sem      chan struct{}
}

// Gateway is the push gateway: an http.Handler for the Push Gateway API.
type Gateway struct {
	cfg   *config.Config
	log   *slog.Logger
	m     *metrics
	apps  map[string]*app // by config key
	dedup *dedup.Cache
}

// New builds the gateway and one provider client per configured app.
// cfg must have been validated (config.Load does).
func New(cfg *config.Config, log *slog.Logger, reg prometheus.Registerer) (*Gateway, error) {
	g := &Gateway{
		cfg:   cfg,
		log:   log,
		m:     newMetrics(reg),
		apps:  make(map[string]*app, len(cfg.Apps)),
		dedup: dedup.New(cfg.Dedup.TTL, cfg.Dedup.MaxEntries, nil),
	}
	ids := make([]string, 0, len(cfg.Apps))
	for id := range cfg.Apps {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		a := cfg.Apps[id]
		s, err := newSender(a)
		if err != nil {
			g.Close()
			return nil, fmt.Errorf("app %s: %w", id, err)
		}
		g.apps[id] = &app{provider: a.Type, s: s, sem: make(chan struct{}, a.MaxConcurrency)}
	}
	return g, nil
}

func newSender(a *config.App) (sender, error) {
	switch a.Type {
	case config.TypeAPNs:
		return apns.New(*a.APNs, nil)
	case config.TypeFCM:
		return fcm.New(*a.FCM, nil)
	case config.TypeWebPush:
		return webpush.New(*a.WebPush, nil)
	case config.TypeUnifiedPush:
		return unifiedpush.New(*a.UnifiedPush, nil), nil
	}
	return nil, fmt.Errorf("unknown app type %q", a.Type)
}

// Close releases the providers' idle connections.
func (g *Gateway) Close() {
	for _, a := range g.apps {
		a.s.Close()
	}
}

// MetricsHandler serves /metrics from gatherer and /health.
func MetricsHandler(gatherer prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /health", health)
	return mux
}

func health(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("ok\n"))
}

// Serve runs the API on ln and metrics on metricsLn until ctx ends, then
// shuts both down gracefully, letting in-flight notifies finish.
func (g *Gateway) Serve(ctx context.Context, ln, metricsLn net.Listener, gatherer prometheus.Gatherer) error {
	api := &http.Server{
		Handler:           g,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      g.cfg.NotifyTimeout + 30*time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(g.log.Handler(), slog.LevelWarn),
	}
	met := &http.Server{
		Handler:           MetricsHandler(gatherer),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(g.log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 2)
	go func() { errc <- api.Serve(ln) }()
	go func() { errc <- met.Serve(metricsLn) }()
	g.log.Info("push gateway listening", "listen", ln.Addr().String(), "metrics_listen", metricsLn.Addr().String())
	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	shutCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), g.cfg.NotifyTimeout+5*time.Second)
	defer cancel()
	err := errors.Join(api.Shutdown(shutCtx), met.Shutdown(shutCtx))
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		err = errors.Join(fmt.Errorf("serve: %w", serveErr), err)
	}
	g.log.Info("push gateway stopped")
	return err
}
