// Package hsauthtest is a loopback stand-in for the homeserver's internal auth API, for tests
// only: it implements the contract hsauth documents with in-memory tenants and tokens, so media
// sidecar tests run without the real homeserver (which joins in the integration tests).
package hsauthtest

import (
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
)

// User is a user known to the fake homeserver.
type User struct {
	UserID   string
	DeviceID string
	Admin    bool
}

type tenant struct {
	id, serverName string
}

// Homeserver is the fake. Its zero value is not usable; call New.
type Homeserver struct {
	URL        string
	AdminToken string

	mu      sync.Mutex
	byHost  map[string]tenant
	byToken map[string]struct {
		host string
		user User
	}
	authCalls atomic.Int64
}

// New starts the fake on loopback and stops it on cleanup.
func New(t testing.TB) *Homeserver {
	t.Helper()
	h := &Homeserver{
		AdminToken: "hs-admin-token",
		byHost:     map[string]tenant{},
		byToken: map[string]struct {
			host string
			user User
		}{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /_atoll/internal/v1/auth", h.auth)
	mux.HandleFunc("GET /_atoll/internal/v1/tenants/by-host/{host}", h.byHostHandler)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	h.URL = srv.URL
	return h
}

// AddTenant serves tenant id under serverName (also its Host).
func (h *Homeserver) AddTenant(id, serverName string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.byHost[serverName] = tenant{id, serverName}
}

// AddUser makes token authenticate u on host.
func (h *Homeserver) AddUser(host, token string, u User) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.byToken[token] = struct {
		host string
		user User
	}{host, u}
}

// AuthCalls counts auth requests served.
func (h *Homeserver) AuthCalls() int64 { return h.authCalls.Load() }

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (h *Homeserver) admin(w http.ResponseWriter, r *http.Request) bool {
	if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), []byte("Bearer "+h.AdminToken)) != 1 {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"errcode": "M_UNKNOWN_TOKEN", "error": "bad admin token"})
		return false
	}
	return true
}

func (h *Homeserver) auth(w http.ResponseWriter, r *http.Request) {
	h.authCalls.Add(1)
	if !h.admin(w, r) {
		return
	}
	var req struct {
		Host        string `json:"host"`
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"errcode": "M_NOT_JSON", "error": "bad body"})
		return
	}
	h.mu.Lock()
	tn, hostOK := h.byHost[req.Host]
	u, tokOK := h.byToken[req.AccessToken]
	h.mu.Unlock()
	switch {
	case !hostOK:
		writeJSON(w, http.StatusNotFound, map[string]string{"errcode": "M_NOT_FOUND", "error": "unknown host"})
	case !tokOK || u.host != req.Host:
		writeJSON(w, http.StatusUnauthorized, map[string]any{"errcode": "M_UNKNOWN_TOKEN", "error": "Unknown access token", "soft_logout": false})
	default:
		writeJSON(w, http.StatusOK, map[string]any{
			"tenant_id": tn.id, "server_name": tn.serverName, "user_id": u.user.UserID,
			"device_id": u.user.DeviceID, "admin": u.user.Admin,
		})
	}
}

func (h *Homeserver) byHostHandler(w http.ResponseWriter, r *http.Request) {
	if !h.admin(w, r) {
		return
	}
	h.mu.Lock()
	tn, ok := h.byHost[r.PathValue("host")]
	h.mu.Unlock()
	if !ok {
		writeJSON(w, http.StatusNotFound, map[string]string{"errcode": "M_NOT_FOUND", "error": "unknown host"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"tenant_id": tn.id, "server_name": tn.serverName})
}
