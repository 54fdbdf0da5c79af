package pushgateway

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/atoll-matrix/atoll/pushgateway/dedup"
	"github.com/atoll-matrix/atoll/pushgateway/push"
)

// dispatch delivers n to every device concurrently and returns the
// rejected pushkeys and how many devices failed transiently.
func (g *Gateway) dispatch(ctx context.Context, n *push.Notification) (rejected []string, transient int) {
	results := make([]push.Result, len(n.Devices))
	var wg sync.WaitGroup
	for i, d := range n.Devices {
		wg.Go(func() { results[i] = g.deliver(ctx, n, d) })
	}
	wg.Wait()
	rejected = []string{}
	for i, res := range results {
		switch res {
		case push.Rejected:
			rejected = append(rejected, n.Devices[i].Pushkey)
		case push.Transient:
			transient++
		}
	}
	return rejected, transient
}

// deliver sends to one device, at most once per (app, pushkey, event)
// within the de-duplication TTL.
func (g *Gateway) deliver(ctx context.Context, n *push.Notification, d push.Device) push.Result {
	id, a, ok := g.cfg.Match(d.AppID)
	if !ok {
		g.m.deliveries.WithLabelValues("none", push.Rejected.String()).Inc()
		g.m.rejected.WithLabelValues("none").Inc()
		g.log.Info("rejecting pushkey of unknown app", "app_id", d.AppID)
		return push.Rejected
	}
	ap := g.apps[id]
	provider := a.Type
	if d.Format() == push.FormatEventIDOnly {
		n = n.EventIDOnly()
	}
	var key dedup.Key
	claimed := false
	if n.EventID != "" {
		key = dedup.NewKey(d.AppID, d.Pushkey, n.EventID)
		if !g.dedup.Claim(key) {
			g.m.deliveries.WithLabelValues(provider, "deduplicated").Inc()
			return push.Delivered
		}
		claimed = true
	}
	res := g.sendWithRetry(ctx, ap, n, d)
	if claimed {
		if res == push.Delivered {
			g.dedup.Done(key)
		} else {
			g.dedup.Release(key)
		}
	}
	g.m.deliveries.WithLabelValues(provider, res.String()).Inc()
	if res == push.Rejected {
		g.m.rejected.WithLabelValues(provider).Inc()
	}
	return res
}

// sendWithRetry retries transient failures with exponential backoff and
// jitter, waiting at least the provider's Retry-After, until ctx's deadline
// would pass.
func (g *Gateway) sendWithRetry(ctx context.Context, ap *app, n *push.Notification, d push.Device) push.Result {
	backoff := g.cfg.InitialBackoff
	for attempt := 1; ; attempt++ {
		select {
		case ap.sem <- struct{}{}:
		case <-ctx.Done():
			return push.Transient
		}
		start := time.Now()
		g.m.sendInFlight.WithLabelValues(ap.provider).Inc()
		err := ap.s.Send(ctx, n, d)
		g.m.sendInFlight.WithLabelValues(ap.provider).Dec()
		<-ap.sem
		g.m.sendSeconds.WithLabelValues(ap.provider).Observe(time.Since(start).Seconds())

		res, retryAfter := push.Classify(err)
		if res != push.Delivered {
			g.log.Warn("push delivery failed", "app_id", d.AppID, "provider", ap.provider,
				"result", res.String(), "attempt", attempt, "error", err)
		}
		if res != push.Transient || ctx.Err() != nil {
			return res
		}
		wait := time.Duration(float64(backoff) * (0.8 + 0.4*rand.Float64()))
		wait = max(wait, retryAfter)
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
			return push.Transient
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return push.Transient
		}
		backoff = min(backoff*2, g.cfg.MaxBackoff)
		g.m.retries.WithLabelValues(ap.provider).Inc()
	}
}
