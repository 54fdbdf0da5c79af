package push

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/atoll-matrix/atoll/homeserver/rooms"
	"github.com/atoll-matrix/atoll/homeserver/storage"
)

// Queue runs an Evaluator off the request path: events are processed in the order they were
// enqueued within a tenant, tenants in parallel, one goroutine per tenant with work.
type Queue struct {
	log     *slog.Logger
	eval    *Evaluator
	timeout time.Duration

	mu      sync.Mutex
	tenants map[string]*tenantQueue
	stopped bool
	wg      sync.WaitGroup
}

type job struct {
	store  *storage.Store
	server spec.ServerName
	p      rooms.Persisted
}

type tenantQueue struct {
	jobs    []job
	running bool
}

// NewQueue returns a queue feeding eval.
func NewQueue(log *slog.Logger, eval *Evaluator) *Queue {
	return &Queue{log: log, eval: eval, timeout: 30 * time.Second, tenants: map[string]*tenantQueue{}}
}

// Enqueue schedules p for evaluation; it never blocks on the database. After Stop it does
// nothing.
func (q *Queue) Enqueue(store *storage.Store, server spec.ServerName, p rooms.Persisted) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.stopped {
		return
	}
	tq := q.tenants[p.TenantID]
	if tq == nil {
		tq = &tenantQueue{}
		q.tenants[p.TenantID] = tq
	}
	tq.jobs = append(tq.jobs, job{store: store, server: server, p: p})
	if tq.running {
		return
	}
	tq.running = true
	q.wg.Add(1)
	go q.drain(p.TenantID, tq)
}

func (q *Queue) drain(tenantID string, tq *tenantQueue) {
	defer q.wg.Done()
	for {
		q.mu.Lock()
		if len(tq.jobs) == 0 {
			tq.running = false
			delete(q.tenants, tenantID)
			q.mu.Unlock()
			return
		}
		j := tq.jobs[0]
		tq.jobs = tq.jobs[1:]
		q.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), q.timeout)
		if err := q.eval.Process(ctx, j.store, j.server, j.p); err != nil {
			q.log.Error("push rule evaluation failed", "tenant", tenantID, "event_id", j.p.EventID, "error", err)
		}
		cancel()
	}
}

// Stop refuses new events and waits until the queued ones are processed.
func (q *Queue) Stop() {
	q.mu.Lock()
	q.stopped = true
	q.mu.Unlock()
	q.wg.Wait()
}
