// Package process assembles one atoll-homeserver process from its configuration: the database
// pool, the control schema, the shard, the room engine and the HTTP listeners. The binary and
// the black-box test harness both start shards through it.
package process

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/atoll-matrix/atoll/homeserver/adminapi"
	"github.com/atoll-matrix/atoll/homeserver/clientapi"
	"github.com/atoll-matrix/atoll/homeserver/config"
	"github.com/atoll-matrix/atoll/homeserver/federation"
	"github.com/atoll-matrix/atoll/homeserver/notifier"
	"github.com/atoll-matrix/atoll/homeserver/presence"
	"github.com/atoll-matrix/atoll/homeserver/push"
	"github.com/atoll-matrix/atoll/homeserver/pusher"
	"github.com/atoll-matrix/atoll/homeserver/ratelimit"
	"github.com/atoll-matrix/atoll/homeserver/rooms"
	"github.com/atoll-matrix/atoll/homeserver/shard"
	"github.com/atoll-matrix/atoll/homeserver/tenant"
	"github.com/atoll-matrix/atoll/homeserver/typing"
	"github.com/atoll-matrix/atoll/internal/pgdb"
)

// Options are knobs tests and benchmarks set; production leaves them zero.
type Options struct {
	BcryptCost int
}

// Process is a running homeserver: its parts and listeners.
type Process struct {
	cfg        config.Config
	log        *slog.Logger
	Registry   *prometheus.Registry
	Pool       *pgxpool.Pool
	Tenants    *tenant.Registry
	Shard      *shard.Shard
	Engine     *rooms.Engine
	Notifier   *notifier.Notifier
	Typing     *typing.Tracker
	Presence   *presence.Tracker
	Pusher     *pusher.Worker
	Push       *push.Queue
	Federation *federation.Server
	Sender     *federation.Sender
	transport  *federation.Transport
	redis      *redis.Client

	client, admin, metrics http.Handler
	listeners              []net.Listener
	handlers               []http.Handler // what each listener serves
	// Addresses of the listeners once Listen has run.
	ClientAddr, FederationAddr, AdminAddr, MetricsAddr string
}

// New connects to the database, migrates the control schema and wires every part.
func New(ctx context.Context, cfg config.Config, log *slog.Logger, opts Options) (*Process, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	pool, err := openDatabase(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	registry, err := tenant.Open(ctx, pool)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("open control schema: %w", err)
	}
	p := &Process{cfg: cfg, log: log, Registry: reg, Pool: pool, Tenants: registry}
	p.Notifier = notifier.New(reg)
	p.Typing = typing.New(p.Notifier.Notify)
	p.Presence = presence.New(presence.Config{}, nil, p.Notifier.Notify)
	p.Pusher = pusher.New(log.With("component", "pusher"), reg, pusher.Config{
		AllowedHosts: cfg.Push.AllowedHosts, AllowHTTP: cfg.Push.AllowHTTP, AllowPrivate: cfg.Push.AllowPrivate})
	p.Push = push.NewQueue(log, push.NewEvaluator(log, p.Pusher.Wake))
	p.Engine = rooms.New(log, reg, func(ev rooms.Persisted) {
		p.Notifier.Notify(ev.TenantID)
		p.presenceOnJoin(ev)
		if !ev.Remote && p.Federation != nil {
			p.Federation.Wake() // the event is in the outbox if other servers share the room
		}
		if t := p.Shard.Loaded(ev.TenantID); t != nil {
			// Push rules run off the request path, in order within a tenant.
			p.Push.Enqueue(t.Store, t.ServerName, ev)
		}
	})
	p.Shard = shard.New(shard.Config{
		Name: cfg.Shard.Name, AdvertiseURL: cfg.Shard.AdvertiseURL, IdleEvict: cfg.Tenants.IdleEvict,
		MaxLoaded: cfg.Tenants.MaxLoaded, LeaseDuration: cfg.Tenants.LeaseDuration,
		OnLoad: func(t *clientapi.Tenant) { p.Pusher.Wake(t.Store); p.Presence.Reload(t.TenantID) },
	}, log, reg, pool, registry)
	tlsConfig, err := trustRoots(cfg.Federation.TrustRootsFile)
	if err != nil {
		pool.Close()
		return nil, err
	}
	p.transport, err = federation.NewTransport(registry, cfg.Federation.LocalURL, cfg.Federation.Servers, tlsConfig)
	if err != nil {
		pool.Close()
		return nil, err
	}
	p.Federation = federation.New(federation.Config{Log: log, Registry: reg, Pool: pool, Tenants: p.Shard, Control: registry,
		Engine: p.Engine, Transport: p.transport, Typing: p.Typing, Presence: p.Presence, Notify: p.Notifier.Notify})
	p.Engine.SetInTx(p.Federation.Enqueue)
	p.Engine.ObserveStateResolution(p.Federation.ObserveStateResolution)
	p.Sender = p.Federation.NewSender(pool, cfg.Shard.Name, func(ctx context.Context, id string) (*rooms.Host, error) {
		t, err := p.Shard.LoadByID(ctx, id)
		if err != nil {
			return nil, err
		}
		return t.Host, nil
	})
	if cfg.Federation.MaxBackoff > 0 {
		p.Sender.MaxBackoff = cfg.Federation.MaxBackoff
	}
	var limiter *ratelimit.Limiter
	if cfg.Redis.URL != "" {
		ropts, err := redis.ParseURL(cfg.Redis.URL)
		if err != nil {
			pool.Close()
			return nil, fmt.Errorf("redis url: %w", err)
		}
		p.redis = redis.NewClient(ropts)
		limiter = ratelimit.New(p.redis, log, reg)
		p.Presence.SetMirror(presence.NewMirror(p.redis, log, reg))
	}
	api := clientapi.New(log, reg, p.Shard, p.Engine, p.Notifier, p.Typing, clientapi.Options{BcryptCost: opts.BcryptCost, Remote: p.Federation, Keys: p.Federation, Limiter: limiter, Ephemeral: p.Federation, Presence: p.Presence})
	mux := http.NewServeMux()
	fed := p.Federation.Handler()
	mux.Handle("/_matrix/federation/", fed)
	mux.Handle("/_matrix/key/", fed)
	if cfg.Media.URL != "" {
		media, err := mediaProxy(cfg.Media.URL)
		if err != nil {
			pool.Close()
			return nil, err
		}
		mux.Handle(mediaFederationPrefix, media)
	}
	mux.Handle("/", api.Handler())
	p.client = p.Shard.Handler(mux)
	if cfg.Listen.Admin != "" {
		p.admin = adminapi.New(log, reg, cfg.Admin.Token, pool, registry, p.Shard, p.Shard,
			adminapi.NewMediaBuckets(cfg.Media.URL, cfg.Admin.Token), p.Federation).Handler()
	}
	p.metrics = promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
	return p, nil
}

// Listen opens the configured listeners (port 0 picks a free port; see the *Addr fields).
func (p *Process) Listen() error {
	var fedTLS *tls.Config
	if p.cfg.Listen.Federation != "" {
		cert, err := tls.LoadX509KeyPair(p.cfg.TLS.CertFile, p.cfg.TLS.KeyFile)
		if err != nil {
			return fmt.Errorf("federation listener certificate: %w", err)
		}
		// The federation listener serves the client listener's handler; "h2" lets net/http
		// speak HTTP/2 on it.
		fedTLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}}
	}
	open := func(addr string, dst *string, h http.Handler, tlsConfig *tls.Config) error {
		if addr == "" {
			return nil
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("listen on %s: %w", addr, err)
		}
		*dst = l.Addr().String()
		if tlsConfig != nil {
			l = tls.NewListener(l, tlsConfig)
		}
		p.listeners = append(p.listeners, l)
		p.handlers = append(p.handlers, h)
		return nil
	}
	if err := open(p.cfg.Listen.Client, &p.ClientAddr, p.client, nil); err != nil {
		return err
	}
	if err := open(p.cfg.Listen.Federation, &p.FederationAddr, p.client, fedTLS); err != nil {
		return err
	}
	if p.cfg.Federation.LocalURL == "" {
		p.transport.SetLocalURL("http://" + p.ClientAddr)
	}
	if p.cfg.Shard.AdvertiseURL == "" {
		p.Shard.SetAdvertiseURL("http://" + p.ClientAddr)
	}
	if err := open(p.cfg.Listen.Admin, &p.AdminAddr, p.admin, nil); err != nil {
		return err
	}
	return open(p.cfg.Listen.Metrics, &p.MetricsAddr, p.metrics, nil)
}

// Run serves until ctx ends, then shuts down gracefully: listeners stop accepting, in-flight
// requests finish (long-polls end with the context), leases are released.
func (p *Process) Run(ctx context.Context) error {
	if p.listeners == nil {
		if err := p.Listen(); err != nil {
			return err
		}
	}
	errc := make(chan error, len(p.listeners)+1)
	var servers []*http.Server
	for i, l := range p.listeners {
		srv := &http.Server{Handler: p.handlers[i], ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
			BaseContext: func(net.Listener) context.Context { return ctx }}
		servers = append(servers, srv)
		go func() {
			if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		}()
	}
	p.Pusher.Start(ctx)
	p.Sender.Start(ctx)
	shardCtx, stopShard := context.WithCancel(context.WithoutCancel(ctx))
	shardDone := make(chan error, 1)
	go func() { shardDone <- p.Shard.Run(shardCtx) }()
	presenceDone := p.runPresence(shardCtx)
	typingTick := time.NewTicker(time.Second)
	defer typingTick.Stop()
	p.log.Info("homeserver started", "shard", p.cfg.Shard.Name, "client", p.ClientAddr, "federation", p.FederationAddr, "admin", p.AdminAddr, "metrics", p.MetricsAddr)
	var runErr error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case err := <-errc:
			runErr = err
			break loop
		case <-typingTick.C:
			p.Typing.Expire()
		}
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, srv := range servers {
		_ = srv.Shutdown(shutdownCtx)
	}
	p.Push.Stop()
	p.Pusher.Stop()
	p.Sender.Stop()
	stopShard()
	<-shardDone
	<-presenceDone
	p.Pool.Close()
	if p.redis != nil {
		_ = p.redis.Close()
	}
	p.log.Info("homeserver stopped")
	return runErr
}

// trustRoots returns the TLS configuration for outbound federation: the system's roots plus
// the PEM bundle at path, if any.
func trustRoots(path string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if path == "" {
		return cfg, nil
	}
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("federation trust roots: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("federation trust roots: no certificate in %s", path)
	}
	cfg.RootCAs = pool
	return cfg, nil
}

// openDatabase connects, waiting up to a minute for PostgreSQL: during an upgrade the database
// may restart beside the shards, and a shard that waits comes up without a crash loop.
func openDatabase(ctx context.Context, cfg config.Config, log *slog.Logger) (*pgxpool.Pool, error) {
	deadline := time.Now().Add(time.Minute)
	for {
		pool, err := pgdb.Open(ctx, cfg.Database.URL, cfg.Database.MaxConns)
		if err == nil {
			return pool, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, err
		}
		log.Warn("database not reachable yet, retrying", "err", err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
}
