// Package pushtest provides fake push providers for tests: real HTTP
// servers on loopback that verify what a real provider would (APNs over
// HTTP/2 with ES256 provider tokens, FCM with its own OAuth2 token
// endpoint, Web Push with VAPID and aes128gcm decryption) and answer with
// scripted replies.
package pushtest

import (
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Reply is one scripted provider answer.
type Reply struct {
	Status     int           // 0 means success
	Body       string        // response body (provider error JSON)
	RetryAfter string        // Retry-After header value, if any
	Delay      time.Duration // wait before answering
}

// script holds per-key reply queues and concurrency statistics shared by
// the fakes.
type script struct {
	mu       sync.Mutex
	replies  map[string][]Reply
	calls    map[string]int
	delay    time.Duration
	cur, max atomic.Int64
}

func newScript() *script {
	return &script{replies: map[string][]Reply{}, calls: map[string]int{}}
}

// next pops the reply queued for key; an empty queue means success.
func (s *script) next(key string) Reply {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls[key]++
	q := s.replies[key]
	if len(q) == 0 {
		return Reply{Delay: s.delay}
	}
	s.replies[key] = q[1:]
	return q[0]
}

func (s *script) enter() func() {
	c := s.cur.Add(1)
	for {
		m := s.max.Load()
		if c <= m || s.max.CompareAndSwap(m, c) {
			break
		}
	}
	return func() { s.cur.Add(-1) }
}

func (s *script) write(w http.ResponseWriter, r Reply, okStatus int) {
	if r.Delay > 0 {
		time.Sleep(r.Delay)
	}
	if r.RetryAfter != "" {
		w.Header().Set("Retry-After", r.RetryAfter)
	}
	if r.Status == 0 {
		w.WriteHeader(okStatus)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(r.Body)))
	w.WriteHeader(r.Status)
	_, _ = w.Write([]byte(r.Body))
}

// Queue scripts replies for a key (device token, registration token or
// subscription ID); later calls succeed.
func (s *script) Queue(key string, replies ...Reply) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.replies[key] = append(s.replies[key], replies...)
}

// Calls returns how many requests arrived for key.
func (s *script) Calls(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[key]
}

// SetDelay makes successful replies wait d (concurrency tests).
func (s *script) SetDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delay = d
}

// MaxConcurrent returns the most requests seen in flight at once.
func (s *script) MaxConcurrent() int64 { return s.max.Load() }

// Clear drops the replies still queued for key.
func (s *script) Clear(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.replies, key)
}
