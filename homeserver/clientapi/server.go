// Package clientapi serves the Matrix Client-Server API of every tenant on a shard: requests
// are routed to their tenant by Host, authenticated against that tenant's devices, and handled
// by one file per endpoint family. routes.go lists every endpoint.
package clientapi

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/atoll-matrix/atoll/homeserver/notifier"
	"github.com/atoll-matrix/atoll/homeserver/presence"
	"github.com/atoll-matrix/atoll/homeserver/ratelimit"
	"github.com/atoll-matrix/atoll/homeserver/rooms"
	"github.com/atoll-matrix/atoll/homeserver/storage"
	"github.com/atoll-matrix/atoll/homeserver/tenant"
	"github.com/atoll-matrix/atoll/homeserver/typing"
	"github.com/atoll-matrix/atoll/internal/mxhttp"
	"github.com/atoll-matrix/atoll/internal/pgdb"
)

// Tenant is a loaded tenant as the API sees it.
type Tenant struct {
	*rooms.Host
	Settings tenant.Settings
}

// Resolver finds the tenant serving a Host. It returns tenant.ErrNotFound for unknown hosts
// and ErrSuspended for suspended tenants.
type Resolver interface {
	Resolve(ctx context.Context, host string) (*Tenant, error)
}

// ErrSuspended is returned by a Resolver for a suspended tenant.
var ErrSuspended = errors.New("tenant suspended")

// RemoteRooms reaches rooms through other servers (federation); nil disables it.
type RemoteRooms interface {
	// Join makes a local user join roomID through one of the servers.
	Join(ctx context.Context, t *Tenant, userID, roomID string, via []string, content map[string]any) error
	// ResolveAlias asks the alias's server which room it names.
	ResolveAlias(ctx context.Context, t *Tenant, alias string) (roomID string, servers []string, err error)
	// QueryProfile asks a user's server for their profile (one field, or all when field is "").
	QueryProfile(ctx context.Context, t *Tenant, userID, field string) (map[string]string, error)
	// Invite invites another server's user: the invite is signed by the invitee's server
	// (federation invite API) before it is stored and sent to the room.
	Invite(ctx context.Context, t *Tenant, roomID, sender, target string, content map[string]any) error
	// RejectInvite rejects a local user's invite to a room on another server (make_leave and
	// send_leave through the inviting server); the invite is dropped here even when that
	// server cannot be reached.
	RejectInvite(ctx context.Context, t *Tenant, roomID, userID string) error
}

// RemoteEphemeral tells the other servers in a room about a local user's typing and read
// receipts (federation EDUs); nil keeps them local.
type RemoteEphemeral interface {
	Typing(ctx context.Context, t *Tenant, roomID, userID string, typing bool, timeout time.Duration) error
	Receipt(ctx context.Context, t *Tenant, roomID, userID, eventID, threadID string, ts int64) error
}

// RemoteKeys reaches the end-to-end encryption keys and devices of other servers' users
// (federation); nil answers "failures" for them and drops their to-device messages.
type RemoteKeys interface {
	// QueryKeys asks server for the device and cross-signing keys of its users (user ->
	// device IDs, all devices when empty).
	QueryKeys(ctx context.Context, t *Tenant, server string, users map[string][]string) (KeysQueryResponse, error)
	// ClaimKeys claims one-time keys of server's users (user -> device -> algorithm).
	ClaimKeys(ctx context.Context, t *Tenant, server string, devices map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error)
	// SendToDevice queues to-device messages (user -> device or "*" -> content) for users of
	// server.
	SendToDevice(ctx context.Context, t *Tenant, server, sender, eventType, messageID string, messages map[string]map[string]json.RawMessage) error
	// DeviceListChanged tells every other server sharing a room with the local user that the
	// user's devices changed: deviceIDs changed or were deleted (none named: any of them), and
	// with crossSigning the cross-signing keys too.
	DeviceListChanged(ctx context.Context, t *Tenant, userID string, deviceIDs []string, deleted, crossSigning bool) error
}

// Options tune a Server.
type Options struct {
	Remote RemoteRooms
	// Limiter enforces rate limits shared by every shard; nil disables them.
	Limiter *ratelimit.Limiter
	Keys    RemoteKeys
	// Ephemeral sends typing and receipts to other servers; nil keeps them local.
	Ephemeral RemoteEphemeral
	// BcryptCost for password hashes; tests and benchmarks lower it.
	BcryptCost int
	// Presence tracks users' presence; nil gets an in-memory tracker without timeouts.
	Presence *presence.Tracker
	// PublicBaseURL, when set, is advertised in /.well-known/matrix/client as
	// https://<host>; otherwise the request's own scheme and host are used.
	WellKnownScheme string
}

// Server is the Client-Server API of a shard.
type Server struct {
	log      *slog.Logger
	tenants  Resolver
	engine   *rooms.Engine
	notifier *notifier.Notifier
	typing   *typing.Tracker
	presence *presence.Tracker
	metrics  *mxhttp.Metrics
	opts     Options
	uia      *uiaSessions

	dummyOnce sync.Once
	dummy     []byte
}

// New returns a server; Register its routes on a mux with Handler.
func New(log *slog.Logger, reg prometheus.Registerer, tenants Resolver, engine *rooms.Engine, n *notifier.Notifier, t *typing.Tracker, opts Options) *Server {
	if opts.BcryptCost == 0 {
		opts.BcryptCost = 10
	}
	if opts.Presence == nil {
		opts.Presence = presence.New(presence.Config{}, nil, n.Notify)
	}
	return &Server{
		log:      log,
		tenants:  tenants,
		engine:   engine,
		notifier: n,
		typing:   t,
		presence: opts.Presence,
		metrics:  mxhttp.NewMetrics(reg, "homeserver"),
		opts:     opts,
		uia:      newUIASessions(),
	}
}

// deviceListChanged tells other servers a local user's devices or keys changed, after the
// change is committed; a failure is logged, as the change itself stands.
func (s *Server) deviceListChanged(ctx context.Context, t *Tenant, userID string, deviceIDs []string, deleted, crossSigning bool) {
	if s.opts.Keys == nil {
		return
	}
	if err := s.opts.Keys.DeviceListChanged(ctx, t, userID, deviceIDs, deleted, crossSigning); err != nil {
		s.log.WarnContext(ctx, "device list update not queued", "user", userID, "err", err)
	}
}

// Handler returns the HTTP handler serving every route, with Matrix errors for unknown
// endpoints (404 M_UNRECOGNIZED) and wrong methods (405 M_UNRECOGNIZED).
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	s.routes(mux)
	return mxhttp.CORS(mxhttp.MatrixNotFound(mux))
}

// Session is an authenticated request's user and device.
type Session struct {
	T        *Tenant
	UserID   string
	Local    string
	DeviceID string
}

type tenantHandler func(w http.ResponseWriter, r *http.Request, t *Tenant) error
type authedHandler func(w http.ResponseWriter, r *http.Request, s *Session) error

func (s *Server) handle(mux *http.ServeMux, pattern, route string, fn mxhttp.HandlerFunc) {
	mux.Handle(pattern, mxhttp.Handler{Route: route, Fn: fn, Log: s.log, Metrics: s.metrics})
}

// public serves a route that needs the tenant but no login.
func (s *Server) public(mux *http.ServeMux, pattern, route string, fn tenantHandler) {
	s.handle(mux, pattern, route, func(w http.ResponseWriter, r *http.Request) error {
		t, err := s.resolve(r)
		if err != nil {
			return err
		}
		return fn(w, r, t)
	})
}

// authed serves a route that needs a logged-in device.
func (s *Server) authed(mux *http.ServeMux, pattern, route string, fn authedHandler) {
	s.handle(mux, pattern, route, func(w http.ResponseWriter, r *http.Request) error {
		t, err := s.resolve(r)
		if err != nil {
			return err
		}
		sess, err := s.authenticate(r, t)
		if err != nil {
			return err
		}
		s.presenceActive(r, route, sess)
		return fn(w, r, sess)
	})
}

func (s *Server) resolve(r *http.Request) (*Tenant, error) {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil && !strings.Contains(host, "]") {
		// Try the exact host first (server names may carry a port), then without the port.
		t, err := s.tenants.Resolve(r.Context(), host)
		if err == nil {
			return t, nil
		}
		host = h
	}
	t, err := s.tenants.Resolve(r.Context(), host)
	switch {
	case errors.Is(err, tenant.ErrNotFound):
		return nil, mxhttp.NotFound("no homeserver is served at %q", host)
	case errors.Is(err, ErrSuspended):
		return nil, mxhttp.Forbidden("this homeserver is suspended")
	case err != nil:
		return nil, fmt.Errorf("resolve tenant for %q: %w", host, err)
	}
	return t, nil
}

func accessToken(r *http.Request) (string, error) {
	if h := r.Header.Get("Authorization"); h != "" {
		tok, ok := strings.CutPrefix(h, "Bearer ")
		if !ok || tok == "" {
			return "", mxhttp.MissingToken("Authorization header must be 'Bearer <token>'")
		}
		return tok, nil
	}
	if tok := r.URL.Query().Get("access_token"); tok != "" {
		return tok, nil
	}
	return "", mxhttp.MissingToken("missing access token")
}

func hashToken(tok string) []byte {
	h := sha256.Sum256([]byte(tok))
	return h[:]
}

func newToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return "atl_" + base64.RawURLEncoding.EncodeToString(b)
}

func (s *Server) authenticate(r *http.Request, t *Tenant) (*Session, error) {
	tok, err := accessToken(r)
	if err != nil {
		return nil, err
	}
	var dev storage.Device
	err = t.Store.Tx(r.Context(), func(q pgdb.DBTX) error {
		var err error
		dev, err = storage.DeviceByToken(r.Context(), q, hashToken(tok))
		if err != nil {
			return err
		}
		now := time.Now().UnixMilli()
		if now-dev.LastSeenTS > 60_000 {
			return storage.TouchDevice(r.Context(), q, dev.UserID, dev.DeviceID, now, clientIP(r))
		}
		return nil
	})
	if errors.Is(err, storage.ErrNotFound) {
		return nil, mxhttp.Errorf(http.StatusUnauthorized, spec.MatrixError{ErrCode: spec.ErrorUnknownToken, Err: "unknown or expired access token"})
	}
	if err != nil {
		return nil, fmt.Errorf("authenticate: %w", err)
	}
	local, _, _ := strings.Cut(strings.TrimPrefix(dev.UserID, "@"), ":")
	return &Session{T: t, UserID: dev.UserID, Local: local, DeviceID: dev.DeviceID}, nil
}

func clientIP(r *http.Request) string {
	if h, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return h
	}
	return r.RemoteAddr
}

// Authenticate checks an access token of tenant t for other components (the media
// sidecar), returning the user, device and whether the user is a server admin.
func Authenticate(ctx context.Context, t *Tenant, token string) (userID, deviceID string, admin bool, err error) {
	var dev storage.Device
	var u storage.User
	err = t.Store.Tx(ctx, func(q pgdb.DBTX) error {
		var err error
		if dev, err = storage.DeviceByToken(ctx, q, hashToken(token)); err != nil {
			return err
		}
		local, _, _ := strings.Cut(strings.TrimPrefix(dev.UserID, "@"), ":")
		u, err = storage.GetUser(ctx, q, local)
		return err
	})
	if errors.Is(err, storage.ErrNotFound) {
		return "", "", false, mxhttp.UnknownToken("unknown or expired access token")
	}
	if err != nil {
		return "", "", false, fmt.Errorf("authenticate: %w", err)
	}
	return dev.UserID, dev.DeviceID, u.Admin, nil
}

// Rate limits. Logins and registrations are counted per client address and (for logins) per
// account, so a brute force spread over shards hits one counter.
const (
	loginsPerMinute        = 10
	registrationsPerMinute = 20
	defaultMessagesPerSec  = 20
)

func (s *Server) limit(ctx context.Context, name, key string, limit int, window time.Duration) error {
	ok, wait := s.opts.Limiter.Allow(ctx, name, key, limit, window)
	if ok {
		return nil
	}
	return &mxhttp.Error{Status: http.StatusTooManyRequests, Body: spec.LimitExceeded("too many requests, slow down", wait.Milliseconds())}
}
