// Package ratelimit counts requests in Redis so that limits hold across every shard of an
// installation (a login brute force spread over shards still hits one counter). Redis is
// ephemeral: when it is unreachable requests are allowed, never refused.
package ratelimit

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/redis/go-redis/v9"
)

// Limiter is a fixed-window counter per key. A nil *Limiter allows everything.
type Limiter struct {
	rdb      *redis.Client
	log      *slog.Logger
	limited  *prometheus.CounterVec
	failures prometheus.Counter
}

// New returns a limiter on rdb.
func New(rdb *redis.Client, log *slog.Logger, reg prometheus.Registerer) *Limiter {
	f := promauto.With(reg)
	return &Limiter{rdb: rdb, log: log,
		limited: f.NewCounterVec(prometheus.CounterOpts{Name: "atoll_homeserver_rate_limited_total",
			Help: "Requests refused by a rate limit, by limit name."}, []string{"limit"}),
		failures: f.NewCounter(prometheus.CounterOpts{Name: "atoll_homeserver_rate_limit_redis_errors_total",
			Help: "Rate limit checks that could not reach Redis (the request was allowed)."}),
	}
}

// incrScript counts one request and returns the count and the window's remaining time, so
// the first request of a window also sets its expiry, atomically.
var incrScript = redis.NewScript(`
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return {n, redis.call('PTTL', KEYS[1])}
`)

// Allow counts a request against name/key and reports whether it is within limit per
// window; when it is not, retryAfter says when the window ends.
func (l *Limiter) Allow(ctx context.Context, name, key string, limit int, window time.Duration) (ok bool, retryAfter time.Duration) {
	if l == nil || limit <= 0 {
		return true, 0
	}
	ctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	res, err := incrScript.Run(ctx, l.rdb, []string{"atoll:rl:" + name + ":" + key}, window.Milliseconds()).Int64Slice()
	if err != nil || len(res) != 2 {
		l.failures.Inc()
		l.log.DebugContext(ctx, "rate limit check failed", "limit", name, "err", err)
		return true, 0
	}
	if res[0] <= int64(limit) {
		return true, 0
	}
	l.limited.WithLabelValues(name).Inc()
	wait := time.Duration(res[1]) * time.Millisecond
	if wait <= 0 {
		wait = window
	}
	return false, wait
}
