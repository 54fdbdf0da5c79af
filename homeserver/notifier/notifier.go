// Package notifier wakes long-polling /sync requests when their tenant's streams move. It is
// per shard and in memory: a tenant's writes all happen on the shard holding its lease.
package notifier

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Notifier tracks waiters per tenant.
type Notifier struct {
	mu      sync.Mutex
	tenants map[string]*tenantWaiters
	waiting prometheus.Gauge
	wakeups prometheus.Counter
}

type tenantWaiters struct {
	version uint64
	ch      chan struct{} // closed and replaced on every change
	users   map[string]int
}

// New returns a notifier registering its metrics on reg.
func New(reg prometheus.Registerer) *Notifier {
	f := promauto.With(reg)
	return &Notifier{
		tenants: map[string]*tenantWaiters{},
		waiting: f.NewGauge(prometheus.GaugeOpts{
			Name: "atoll_homeserver_sync_waiters",
			Help: "Long-polling /sync requests waiting for news.",
		}),
		wakeups: f.NewCounter(prometheus.CounterOpts{
			Name: "atoll_homeserver_sync_wakeups_total",
			Help: "Changes that woke a tenant's /sync waiters.",
		}),
	}
}

// tenant returns the tenant's entry, creating it. Entries stay (a counter and a channel per
// tenant that ever changed) so that a change racing a new waiter is never lost.
func (n *Notifier) tenant(id string) *tenantWaiters {
	t := n.tenants[id]
	if t == nil {
		t = &tenantWaiters{ch: make(chan struct{}), users: map[string]int{}}
		n.tenants[id] = t
	}
	return t
}

// Version returns a tenant's change counter; pass it to Wait so that a change between the
// caller's read and its wait is never missed.
func (n *Notifier) Version(tenantID string) uint64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.tenant(tenantID).version
}

// Notify wakes every waiter of the tenant. Tenants are small: waking a handful of waiters
// that then find nothing new is cheaper than working out exactly whom a change concerns.
func (n *Notifier) Notify(tenantID string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	t := n.tenant(tenantID)
	t.version++
	close(t.ch)
	t.ch = make(chan struct{})
	n.wakeups.Inc()
}

// Wait blocks until the tenant changes after version, the timeout passes or ctx ends. It
// reports whether a change happened.
func (n *Notifier) Wait(ctx context.Context, tenantID, userID string, version uint64, timeout time.Duration) bool {
	n.mu.Lock()
	t := n.tenant(tenantID)
	if t.version != version {
		n.mu.Unlock()
		return true
	}
	ch := t.ch
	t.users[userID]++
	n.mu.Unlock()
	n.waiting.Inc()
	defer func() {
		n.waiting.Dec()
		n.mu.Lock()
		t.users[userID]--
		if t.users[userID] == 0 {
			delete(t.users, userID)
		}
		n.mu.Unlock()
	}()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-ch:
		return true
	case <-timer.C:
		return false
	case <-ctx.Done():
		return false
	}
}
