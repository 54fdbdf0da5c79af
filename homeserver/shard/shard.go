// Package shard is one homeserver process hosting many tenants: it loads a tenant when a
// request for its host arrives, holds the tenant's lease while it is loaded, forwards requests
// for tenants another shard owns, and evicts idle tenants so they cost nothing.
package shard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/atoll-matrix/atoll/homeserver/clientapi"
	"github.com/atoll-matrix/atoll/homeserver/rooms"
	"github.com/atoll-matrix/atoll/homeserver/storage"
	"github.com/atoll-matrix/atoll/homeserver/tenant"
)

// Config is what a shard needs to know about itself.
type Config struct {
	Name          string
	AdvertiseURL  string
	IdleEvict     time.Duration
	MaxLoaded     int
	LeaseDuration time.Duration
	// OnLoad runs after a tenant is loaded (e.g. to resume its pending push deliveries).
	OnLoad func(*clientapi.Tenant)
}

// Shard hosts tenants.
type Shard struct {
	cfg      Config
	log      *slog.Logger
	pool     *pgxpool.Pool
	registry *tenant.Registry

	mu     sync.Mutex
	loaded map[string]*entry // by tenant ID
	hosts  map[string]hostEntry

	metrics *metrics
}

type entry struct {
	t        *clientapi.Tenant
	record   *tenant.Tenant
	lastUsed time.Time
}

// hostEntry caches which tenant a host belongs to, and who owns it.
type hostEntry struct {
	id      string
	expires time.Time
}

type metrics struct {
	loaded    prometheus.Gauge
	loads     prometheus.Counter
	evictions prometheus.Counter
	forwarded prometheus.Counter
}

// New returns a shard; Run keeps its leases and evicts idle tenants.
func New(cfg Config, log *slog.Logger, reg prometheus.Registerer, pool *pgxpool.Pool, registry *tenant.Registry) *Shard {
	f := promauto.With(reg)
	s := &Shard{
		cfg: cfg, log: log, pool: pool, registry: registry,
		loaded: map[string]*entry{}, hosts: map[string]hostEntry{},
		metrics: &metrics{
			loaded: f.NewGauge(prometheus.GaugeOpts{Name: "atoll_homeserver_tenants_loaded", Help: "Tenants loaded on this shard."}),
			loads:  f.NewCounter(prometheus.CounterOpts{Name: "atoll_homeserver_tenant_loads_total", Help: "Tenant loads (first use after start or eviction)."}),
			evictions: f.NewCounter(prometheus.CounterOpts{Name: "atoll_homeserver_tenant_evictions_total",
				Help: "Tenants evicted for idleness or to stay under the loaded-tenant cap."}),
			forwarded: f.NewCounter(prometheus.CounterOpts{Name: "atoll_homeserver_requests_forwarded_total",
				Help: "Requests forwarded to the shard owning their tenant."}),
		},
	}
	f.NewGaugeFunc(prometheus.GaugeOpts{Name: "atoll_homeserver_db_pool_acquired_conns", Help: "Database connections in use."},
		func() float64 { return float64(pool.Stat().AcquiredConns()) })
	f.NewGaugeFunc(prometheus.GaugeOpts{Name: "atoll_homeserver_db_pool_total_conns", Help: "Database connections open."},
		func() float64 { return float64(pool.Stat().TotalConns()) })
	return s
}

// errOwnedElsewhere carries the owner of a tenant whose lease another shard holds.
type errOwnedElsewhere struct{ owner string }

func (e errOwnedElsewhere) Error() string { return "tenant owned by shard " + e.owner }

// Resolve implements clientapi.Resolver: it returns the loaded tenant for host, loading it
// and taking its lease on first use.
func (s *Shard) Resolve(ctx context.Context, host string) (*clientapi.Tenant, error) {
	host = strings.ToLower(host)
	now := time.Now()
	s.mu.Lock()
	if he, ok := s.hosts[host]; ok && now.Before(he.expires) {
		if e := s.loaded[he.id]; e != nil {
			e.lastUsed = now
			s.mu.Unlock()
			return e.t, nil
		}
	}
	s.mu.Unlock()

	rec, err := s.registry.ByHost(ctx, host)
	if err != nil {
		return nil, err
	}
	if rec.Status == tenant.Suspended {
		return nil, clientapi.ErrSuspended
	}
	// Loaded already (the host cache only expired, or another of the tenant's names was
	// used): no lease or migration work on this path.
	s.mu.Lock()
	if e := s.loaded[rec.ID]; e != nil {
		e.lastUsed = now
		s.hosts[host] = hostEntry{id: rec.ID, expires: now.Add(30 * time.Second)}
		s.mu.Unlock()
		return e.t, nil
	}
	s.mu.Unlock()
	return s.load(ctx, host, rec)
}

func (s *Shard) load(ctx context.Context, host string, rec *tenant.Tenant) (*clientapi.Tenant, error) {
	if _, err := s.registry.AcquireLease(ctx, rec.ID, s.cfg.Name, s.cfg.LeaseDuration); err != nil {
		if errors.Is(err, tenant.ErrLeaseHeld) {
			fresh, gerr := s.registry.Get(ctx, rec.ID)
			if gerr == nil {
				return nil, errOwnedElsewhere{owner: fresh.Owner}
			}
		}
		return nil, err
	}
	// A tenant created by an older binary is migrated when a newer shard first loads it.
	if _, err := storage.Migrate(ctx, s.pool, rec.Schema()); err != nil {
		return nil, fmt.Errorf("migrate tenant %s: %w", rec.ID, err)
	}
	t := &clientapi.Tenant{
		Host: &rooms.Host{
			TenantID:   rec.ID,
			ServerName: rec.ServerName,
			KeyID:      gomatrixserverlib.KeyID(rec.KeyID),
			Key:        rec.PrivateKey,
			Store:      storage.New(s.pool, rec.Schema()),
		},
		Settings: rec.Settings,
	}
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.loaded[rec.ID]; e != nil {
		// Another request loaded it meanwhile; keep that one.
		e.lastUsed = now
		s.hosts[host] = hostEntry{id: rec.ID, expires: now.Add(30 * time.Second)}
		return e.t, nil
	}
	s.loaded[rec.ID] = &entry{t: t, record: rec, lastUsed: now}
	s.hosts[host] = hostEntry{id: rec.ID, expires: now.Add(30 * time.Second)}
	s.metrics.loads.Inc()
	s.metrics.loaded.Set(float64(len(s.loaded)))
	if len(s.loaded) > s.cfg.MaxLoaded {
		s.evictLocked(ctx, len(s.loaded)-s.cfg.MaxLoaded, 0)
	}
	if s.cfg.OnLoad != nil {
		s.cfg.OnLoad(t)
	}
	return t, nil
}

// Loaded returns the tenant if it is loaded on this shard, nil otherwise.
func (s *Shard) Loaded(id string) *clientapi.Tenant {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.loaded[id]; e != nil {
		return e.t
	}
	return nil
}

// Forget drops a tenant from the shard (after suspension, settings changes or purge) and
// releases its lease; the next request loads it afresh.
func (s *Shard) Forget(ctx context.Context, id string) {
	s.mu.Lock()
	_, ok := s.loaded[id]
	delete(s.loaded, id)
	for h, he := range s.hosts {
		if he.id == id {
			delete(s.hosts, h)
		}
	}
	s.metrics.loaded.Set(float64(len(s.loaded)))
	s.mu.Unlock()
	if ok {
		if err := s.registry.ReleaseLease(ctx, id, s.cfg.Name); err != nil {
			s.log.WarnContext(ctx, "release lease failed", "tenant", id, "err", err)
		}
	}
}

// evictLocked evicts up to n least recently used tenants idle for at least minIdle.
func (s *Shard) evictLocked(ctx context.Context, n int, minIdle time.Duration) {
	type cand struct {
		id   string
		used time.Time
	}
	var cands []cand
	now := time.Now()
	for id, e := range s.loaded {
		if now.Sub(e.lastUsed) >= minIdle {
			cands = append(cands, cand{id, e.lastUsed})
		}
	}
	sort.Slice(cands, func(i, j int) bool { return cands[i].used.Before(cands[j].used) })
	if n > len(cands) {
		n = len(cands)
	}
	for _, c := range cands[:n] {
		delete(s.loaded, c.id)
		for h, he := range s.hosts {
			if he.id == c.id {
				delete(s.hosts, h)
			}
		}
		s.metrics.evictions.Inc()
		id := c.id
		go func() {
			// Releasing lets another shard take the tenant without waiting for expiry.
			if err := s.registry.ReleaseLease(context.WithoutCancel(ctx), id, s.cfg.Name); err != nil {
				s.log.Warn("release lease failed", "tenant", id, "err", err)
			}
		}()
	}
	s.metrics.loaded.Set(float64(len(s.loaded)))
}

// LoadedCount is the number of loaded tenants.
func (s *Shard) LoadedCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.loaded)
}

// Run renews leases and evicts idle tenants until ctx ends, then releases every lease.
func (s *Shard) Run(ctx context.Context) error {
	if err := s.registry.RegisterShard(ctx, s.cfg.Name, s.cfg.AdvertiseURL); err != nil {
		return err
	}
	renew := time.NewTicker(s.cfg.LeaseDuration / 3)
	defer renew.Stop()
	evict := time.NewTicker(s.cfg.IdleEvict/4 + time.Second)
	defer evict.Stop()
	for {
		select {
		case <-ctx.Done():
			s.releaseAll()
			return nil
		case <-renew.C:
			owned, err := s.registry.RenewLeases(ctx, s.cfg.Name, s.cfg.LeaseDuration)
			if err != nil {
				s.log.WarnContext(ctx, "renew leases failed", "err", err)
				continue
			}
			s.dropLost(owned)
			_ = s.registry.RegisterShard(ctx, s.cfg.Name, s.cfg.AdvertiseURL)
		case <-evict.C:
			s.mu.Lock()
			s.evictLocked(ctx, len(s.loaded), s.cfg.IdleEvict)
			s.mu.Unlock()
		}
	}
}

// dropLost unloads tenants whose lease this shard no longer holds (taken over after an outage).
func (s *Shard) dropLost(owned []string) {
	have := make(map[string]bool, len(owned))
	for _, id := range owned {
		have[id] = true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for id := range s.loaded {
		if !have[id] {
			delete(s.loaded, id)
			for h, he := range s.hosts {
				if he.id == id {
					delete(s.hosts, h)
				}
			}
		}
	}
	s.metrics.loaded.Set(float64(len(s.loaded)))
}

func (s *Shard) releaseAll() {
	s.mu.Lock()
	ids := make([]string, 0, len(s.loaded))
	for id := range s.loaded {
		ids = append(ids, id)
	}
	s.loaded = map[string]*entry{}
	s.hosts = map[string]hostEntry{}
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, id := range ids {
		_ = s.registry.ReleaseLease(ctx, id, s.cfg.Name)
	}
}

// Handler wraps the client API: requests for tenants another shard owns are forwarded to it,
// so the ingress needs a single route.
func (s *Shard) Handler(client http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Atoll-Forwarded") == "" && r.URL.Path != "/_matrix/client/versions" {
			if _, err := s.Resolve(r.Context(), hostOnly(r.Host)); err != nil {
				var owned errOwnedElsewhere
				if errors.As(err, &owned) && owned.owner != "" {
					if s.forward(w, r, owned.owner) {
						return
					}
				}
			}
		}
		client.ServeHTTP(w, r)
	})
}

func hostOnly(h string) string {
	if i := strings.LastIndexByte(h, ':'); i > 0 && !strings.Contains(h[i:], "]") {
		return h[:i]
	}
	return h
}

func (s *Shard) forward(w http.ResponseWriter, r *http.Request, owner string) bool {
	target, err := s.registry.ShardURL(r.Context(), owner)
	if err != nil || target == "" {
		return false
	}
	u, err := url.Parse(target)
	if err != nil {
		return false
	}
	s.metrics.forwarded.Inc()
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.Out.Host = r.Host
			pr.Out.Header.Set("X-Atoll-Forwarded", s.cfg.Name)
		},
		FlushInterval: -1,
	}
	proxy.ServeHTTP(w, r)
	return true
}

// LoadByID loads a tenant by ID (the federation sender's way in), taking its lease.
func (s *Shard) LoadByID(ctx context.Context, id string) (*clientapi.Tenant, error) {
	if t := s.Loaded(id); t != nil {
		return t, nil
	}
	rec, err := s.registry.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if rec.Status == tenant.Suspended {
		return nil, clientapi.ErrSuspended
	}
	return s.load(ctx, string(rec.ServerName), rec)
}

// SetAdvertiseURL sets where other shards forward to, once the listener is known (before Run).
func (s *Shard) SetAdvertiseURL(u string) { s.cfg.AdvertiseURL = u }
