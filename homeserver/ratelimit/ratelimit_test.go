package ratelimit_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/atoll-matrix/atoll/homeserver/ratelimit"
	"github.com/atoll-matrix/atoll/internal/atolltest/redistest"
)

func TestAllow(t *testing.T) {
	rdb, prefix := redistest.New(t)
	l := ratelimit.New(rdb, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	ctx := context.Background()
	for i := range 3 {
		if ok, _ := l.Allow(ctx, "test", prefix+"k", 3, time.Second); !ok {
			t.Fatalf("request %d refused within the limit", i+1)
		}
	}
	ok, wait := l.Allow(ctx, "test", prefix+"k", 3, time.Second)
	if ok || wait <= 0 || wait > time.Second {
		t.Fatalf("4th request: ok=%v wait=%v", ok, wait)
	}
	// Another key has its own window.
	if ok, _ := l.Allow(ctx, "test", prefix+"other", 3, time.Second); !ok {
		t.Fatal("another key was limited")
	}
	time.Sleep(wait + 50*time.Millisecond)
	if ok, _ := l.Allow(ctx, "test", prefix+"k", 3, time.Second); !ok {
		t.Fatal("refused after the window ended")
	}
}

func TestRedisDownAllows(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1})
	l := ratelimit.New(rdb, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	for range 5 {
		if ok, _ := l.Allow(context.Background(), "test", "k", 1, time.Second); !ok {
			t.Fatal("a request was refused because Redis is down")
		}
	}
	var nilLimiter *ratelimit.Limiter
	if ok, _ := nilLimiter.Allow(context.Background(), "test", "k", 1, time.Second); !ok {
		t.Fatal("a nil limiter refused")
	}
}
