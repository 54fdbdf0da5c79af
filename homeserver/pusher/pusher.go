// Package pusher delivers a tenant's notifications to its users' HTTP pushers through the
// Push Gateway API (POST to the pusher's data.url): one worker per shard, woken when push
// verdicts are stored, retrying failures with exponential backoff and keeping each pusher's
// delivery position in the tenant schema so a restart neither resends nor skips.
package pusher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/atoll-matrix/atoll/homeserver/storage"
	"github.com/atoll-matrix/atoll/pushgateway/safedial"
)

// NotifyPath is the only path a push gateway URL may have.
const NotifyPath = "/_matrix/push/v1/notify"

// Config tunes a Worker. Zero values take the documented defaults.
type Config struct {
	// AllowedHosts are globs (path.Match syntax) of the hosts push gateways may be reached
	// at; empty allows any host. A pusher whose URL is off the list gets nothing.
	AllowedHosts []string
	// AllowHTTP permits http:// gateway URLs (in-cluster gateways, tests); otherwise https only.
	AllowHTTP bool
	// AllowPrivate permits gateways on private, loopback and link-local addresses.
	AllowPrivate bool
	// Timeout bounds one request to a gateway (default 10s).
	Timeout time.Duration
	// MinBackoff and MaxBackoff bound the wait after a failed delivery, doubling per
	// consecutive failure (defaults 1s and 10m).
	MinBackoff, MaxBackoff time.Duration
	// GiveUpAfter drops a notification whose event is older than this while its pusher keeps
	// failing (default 24h).
	GiveUpAfter time.Duration
	// Concurrency is how many tenants deliver at once (default 4).
	Concurrency int
	// BatchSize is how many notifications one pass reads per pusher (default 50).
	BatchSize int
}

func (c *Config) defaults() {
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Second
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = time.Second
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = 10 * time.Minute
	}
	if c.GiveUpAfter == 0 {
		c.GiveUpAfter = 24 * time.Hour
	}
	if c.Concurrency == 0 {
		c.Concurrency = 4
	}
	if c.BatchSize == 0 {
		c.BatchSize = 50
	}
}

// Worker delivers notifications of the tenants it is woken for.
type Worker struct {
	log     *slog.Logger
	cfg     Config
	client  *http.Client
	allow   *safedial.AllowList
	metrics *metrics
	now     func() time.Time

	mu      sync.Mutex
	pending map[string]*storage.Store // schema -> store with work to look at
	retry   map[string]retryEntry     // schema -> when to look again
	running map[string]bool
	wakeCh  chan struct{}
	cancel  context.CancelFunc
	done    chan struct{}
	wg      sync.WaitGroup
}

type retryEntry struct {
	store *storage.Store
	at    time.Time
}

// New returns a worker; Start runs it.
func New(log *slog.Logger, reg prometheus.Registerer, cfg Config) *Worker {
	cfg.defaults()
	globs := cfg.AllowedHosts
	if len(globs) == 0 {
		globs = []string{"*"}
	}
	return &Worker{
		log:     log,
		cfg:     cfg,
		client:  safedial.NewClient(safedial.Options{AllowPrivate: cfg.AllowPrivate, MaxConnsPerHost: 16}),
		allow:   safedial.NewAllowList(globs),
		metrics: newMetrics(reg),
		now:     time.Now,
		pending: map[string]*storage.Store{},
		retry:   map[string]retryEntry{},
		running: map[string]bool{},
		wakeCh:  make(chan struct{}, 1),
	}
}

// Wake asks the worker to deliver the tenant's pending notifications. Call it when push
// verdicts were stored and once when a tenant is loaded, so a restart resumes delivery.
func (w *Worker) Wake(store *storage.Store) {
	w.mu.Lock()
	w.pending[store.Schema()] = store
	w.mu.Unlock()
	w.signal()
}

func (w *Worker) signal() {
	select {
	case w.wakeCh <- struct{}{}:
	default:
	}
}

// Start runs the worker until Stop (or ctx ends).
func (w *Worker) Start(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	w.mu.Lock()
	w.cancel = cancel
	w.done = make(chan struct{})
	w.mu.Unlock()
	go w.loop(ctx)
}

// Stop ends the worker and waits for deliveries in flight.
func (w *Worker) Stop() {
	w.mu.Lock()
	cancel, done := w.cancel, w.done
	w.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	<-done
}

func (w *Worker) loop(ctx context.Context) {
	defer close(w.done)
	defer w.wg.Wait()
	tick := time.NewTicker(w.tickInterval())
	defer tick.Stop()
	for {
		w.dispatch(ctx)
		select {
		case <-ctx.Done():
			return
		case <-w.wakeCh:
		case <-tick.C:
		}
	}
}

func (w *Worker) tickInterval() time.Duration {
	d := w.cfg.MinBackoff / 2
	if d < 5*time.Millisecond {
		d = 5 * time.Millisecond
	}
	if d > time.Second {
		d = time.Second
	}
	return d
}

func (w *Worker) dispatch(ctx context.Context) {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := w.now()
	for schema, r := range w.retry {
		if !r.at.After(now) {
			w.pending[schema] = r.store
			delete(w.retry, schema)
		}
	}
	for schema, store := range w.pending {
		if w.running[schema] {
			continue
		}
		if len(w.running) >= w.cfg.Concurrency {
			return
		}
		delete(w.pending, schema)
		w.running[schema] = true
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			next, err := w.deliverTenant(ctx, store)
			if err != nil && ctx.Err() == nil {
				w.log.Error("push delivery failed", "schema", schema, "error", err)
				if next.IsZero() {
					next = w.now().Add(w.cfg.MinBackoff)
				}
			}
			w.mu.Lock()
			delete(w.running, schema)
			if !next.IsZero() {
				if r, ok := w.retry[schema]; !ok || next.Before(r.at) {
					w.retry[schema] = retryEntry{store: store, at: next}
				}
			}
			w.mu.Unlock()
			w.signal()
		}()
	}
}

// ErrNotAllowed means a pusher's URL is not one the worker may send to.
var ErrNotAllowed = errors.New("push gateway URL not allowed")

// CheckURL validates a pusher's gateway URL against the worker's rules.
func (w *Worker) CheckURL(raw string) error {
	u, err := w.allow.CheckURL(raw, w.cfg.AllowHTTP)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNotAllowed, err)
	}
	if u.Path != NotifyPath || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%w: path must be %s", ErrNotAllowed, NotifyPath)
	}
	return nil
}
