package clientapi

import (
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"sync"
	"time"

	"github.com/atoll-matrix/atoll/internal/mxhttp"
)

// uiaSessions remembers user-interactive auth sessions for a few minutes. They live in
// memory: a tenant's requests reach the shard holding its lease.
type uiaSessions struct {
	mu       sync.Mutex
	sessions map[string]time.Time
}

func newUIASessions() *uiaSessions { return &uiaSessions{sessions: map[string]time.Time{}} }

func (u *uiaSessions) start() string {
	b := make([]byte, 18)
	_, _ = rand.Read(b)
	id := base64.RawURLEncoding.EncodeToString(b)
	u.mu.Lock()
	defer u.mu.Unlock()
	now := time.Now()
	for k, exp := range u.sessions {
		if now.After(exp) {
			delete(u.sessions, k)
		}
	}
	if len(u.sessions) < 100_000 {
		u.sessions[id] = now.Add(10 * time.Minute)
	}
	return id
}

// uiaAuth is the "auth" object of a request that needs user-interactive auth.
type uiaAuth struct {
	Type       string          `json:"type"`
	Session    string          `json:"session"`
	Token      string          `json:"token"`
	Password   string          `json:"password"`
	User       string          `json:"user"`
	Identifier *userIdentifier `json:"identifier"`
}

type userIdentifier struct {
	Type string `json:"type"`
	User string `json:"user"`
}

type uiaFlow struct {
	Stages []string `json:"stages"`
}

type uiaChallenge struct {
	Flows     []uiaFlow      `json:"flows"`
	Params    map[string]any `json:"params"`
	Session   string         `json:"session"`
	Completed []string       `json:"completed,omitempty"`
	ErrCode   string         `json:"errcode,omitempty"`
	Error     string         `json:"error,omitempty"`
}

// challenge answers 401 with the flows the client must complete.
func (s *Server) challenge(session string, stages ...string) error {
	if session == "" {
		session = s.uia.start()
	}
	return &mxhttp.Error{Status: http.StatusUnauthorized, Body: uiaChallenge{
		Flows:   []uiaFlow{{Stages: stages}},
		Params:  map[string]any{},
		Session: session,
	}}
}
