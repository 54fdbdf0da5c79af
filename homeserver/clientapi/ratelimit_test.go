package clientapi_test

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/atoll-matrix/atoll/homeserver/config"
	"github.com/atoll-matrix/atoll/internal/atolltest/redistest"
	"github.com/atoll-matrix/atoll/internal/atolltest/shardtest"
)

// TestRateLimits: with Redis configured, password guessing and message floods get
// 429 M_LIMIT_EXCEEDED with retry_after_ms, counted per account and per user.
func TestRateLimits(t *testing.T) {
	redisURL := redistest.URL(t)
	s := shardtest.New(t, func(c *config.Config) { c.Redis.URL = redisURL })
	tn := s.CreateTenant(t, "limits")
	alice := tn.Register(t, "alice")
	anon := &shardtest.Client{Tenant: tn}

	limited := 0
	for range 12 {
		st, body := anon.Do(t, "POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.password", "user": "alice", "password": "wrong"})
		switch {
		case st == http.StatusForbidden:
		case st == http.StatusTooManyRequests && body["errcode"] == "M_LIMIT_EXCEEDED" && body["retry_after_ms"] != nil:
			limited++
		default:
			t.Fatalf("login: %d %v", st, body)
		}
	}
	if limited != 2 {
		t.Fatalf("%d of 12 password guesses were limited, want 2 (limit 10 per minute)", limited)
	}

	room := url.PathEscape(alice.MustDo(t, "POST", "/_matrix/client/v3/createRoom", map[string]any{})["room_id"].(string))
	limited = 0
	for i := range 30 {
		st, body := alice.Do(t, "PUT", "/_matrix/client/v3/rooms/"+room+"/send/m.room.message/"+itoa(i), map[string]any{"msgtype": "m.text", "body": "flood"})
		if st == http.StatusTooManyRequests {
			limited++
		} else if st != http.StatusOK {
			t.Fatalf("send: %d %v", st, body)
		}
	}
	if limited == 0 {
		t.Fatal("30 messages in a burst were not limited (limit 20 per second)")
	}
}
