package federation

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/atoll-matrix/atoll/homeserver/clientapi"
	"github.com/atoll-matrix/atoll/homeserver/presence"
	"github.com/atoll-matrix/atoll/homeserver/rooms"
	"github.com/atoll-matrix/atoll/homeserver/tenant"
	"github.com/atoll-matrix/atoll/homeserver/typing"
	"github.com/atoll-matrix/atoll/internal/mxhttp"
)

// maxRequestBody bounds inbound federation bodies (a transaction is at most 50 PDUs and 100
// EDUs of at most 64 KiB each).
const maxRequestBody = 16 << 20

// Server serves the federation API of every tenant and holds the outbound client side.
type Server struct {
	log       *slog.Logger
	tenants   clientapi.Resolver
	registry  *tenant.Registry
	engine    *rooms.Engine
	keyRing   *gomatrixserverlib.KeyRing
	transport *Transport
	metrics   *mxhttp.Metrics
	fed       *metrics
	sender    *Sender
	typing    *typing.Tracker
	presence  *presence.Tracker
	notify    func(tenantID string)
	now       func() time.Time
}

// Config wires a Server.
type Config struct {
	Log       *slog.Logger
	Registry  prometheus.Registerer
	Pool      *pgxpool.Pool
	Tenants   clientapi.Resolver
	Control   *tenant.Registry
	Engine    *rooms.Engine
	Transport *Transport
	Typing    *typing.Tracker
	// Presence receives other servers' m.presence EDUs; nil ignores them.
	Presence *presence.Tracker
	// Notify wakes a tenant's /sync waiters after EDUs change what they see.
	Notify func(tenantID string)
}

// New returns the federation server.
func New(c Config) *Server {
	s := &Server{log: c.Log, tenants: c.Tenants, registry: c.Control, engine: c.Engine, transport: c.Transport, typing: c.Typing, presence: c.Presence, notify: c.Notify,
		metrics: mxhttp.NewMetrics(c.Registry, "federation"), fed: newMetrics(c.Registry), now: time.Now}
	s.keyRing = &gomatrixserverlib.KeyRing{
		KeyFetchers: []gomatrixserverlib.KeyFetcher{
			localKeys{registry: c.Control},
			// Tenants' own keys come from localKeys above; the direct fetcher asks every
			// other server (IsLocalServerName must be set: the library calls it unchecked).
			&gomatrixserverlib.DirectKeyFetcher{Client: fclient.NewClient(fclient.WithTransport(c.Transport), fclient.WithTimeout(30*time.Second)),
				IsLocalServerName: func(spec.ServerName) bool { return false }},
		},
		KeyDatabase: keyDB{pool: c.Pool},
	}
	return s
}

// KeyRing verifies other servers' signatures.
func (s *Server) KeyRing() *gomatrixserverlib.KeyRing { return s.keyRing }

// Client returns a federation client signing as tenant t.
func (s *Server) Client(t *rooms.Host) fclient.FederationClient {
	return fclient.NewFederationClient([]*fclient.SigningIdentity{{ServerName: t.ServerName, KeyID: t.KeyID, PrivateKey: t.Key}},
		fclient.WithTransport(s.transport), fclient.WithTimeout(60*time.Second))
}

// Handler serves /_matrix/federation/ and /_matrix/key/.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	s.routes(mux)
	return mxhttp.MatrixNotFound(mux)
}

func (s *Server) handle(mux *http.ServeMux, pattern, route string, fn mxhttp.HandlerFunc) {
	mux.Handle(pattern, mxhttp.Handler{Route: route, Fn: fn, Log: s.log, Metrics: s.metrics})
}

// request is an authenticated federation request.
type request struct {
	T      *clientapi.Tenant
	Origin spec.ServerName
	Body   []byte
}

type fedHandler func(w http.ResponseWriter, r *http.Request, req *request) error

// authed serves a route that requires a valid X-Matrix signature from the origin server,
// addressed to the tenant the Host names.
func (s *Server) authed(mux *http.ServeMux, pattern, route string, fn fedHandler) {
	s.handle(mux, pattern, route, func(w http.ResponseWriter, r *http.Request) error {
		t, err := s.resolve(r)
		if err != nil {
			return err
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, maxRequestBody+1))
		if err != nil {
			return mxhttp.BadJSON("read body: %v", err)
		}
		if len(body) > maxRequestBody {
			return mxhttp.TooLarge("request body too large")
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		fr, resp := fclient.VerifyHTTPRequest(r, s.now(), t.ServerName, func(n spec.ServerName) bool { return n == t.ServerName }, s.keyRing)
		if fr == nil {
			s.fed.authFailures.Inc()
			msg := "invalid X-Matrix authorization"
			if m, ok := resp.JSON.(map[string]any); ok {
				if e, ok := m["error"].(string); ok {
					msg = e
				}
			}
			if resp.Code == http.StatusUnauthorized || resp.Code == http.StatusBadRequest {
				return mxhttp.Errorf(http.StatusUnauthorized, spec.MatrixError{ErrCode: "M_UNAUTHORIZED", Err: msg})
			}
			return fmt.Errorf("verify federation request: %d %v", resp.Code, resp.JSON)
		}
		if fr.Origin() == t.ServerName {
			return mxhttp.Forbidden("a server does not federate with itself")
		}
		return fn(w, r, &request{T: t, Origin: fr.Origin(), Body: body})
	})
}

func (s *Server) resolve(r *http.Request) (*clientapi.Tenant, error) {
	host := r.Host
	if t, err := s.tenants.Resolve(r.Context(), strings.ToLower(host)); err == nil {
		return t, nil
	}
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	t, err := s.tenants.Resolve(r.Context(), strings.ToLower(host))
	switch {
	case errors.Is(err, tenant.ErrNotFound):
		return nil, mxhttp.NotFound("no homeserver is served at %q", host)
	case errors.Is(err, clientapi.ErrSuspended):
		return nil, mxhttp.Forbidden("this homeserver is suspended")
	case err != nil:
		return nil, err
	}
	return t, nil
}

func decode(req *request, v any) error {
	if len(bytes.TrimSpace(req.Body)) == 0 {
		return mxhttp.NotJSON("empty body")
	}
	if !json.Valid(req.Body) {
		return mxhttp.NotJSON("body is not JSON")
	}
	if err := json.Unmarshal(req.Body, v); err != nil {
		return mxhttp.BadJSON("invalid body: %v", err)
	}
	return nil
}

func (s *Server) version(w http.ResponseWriter, r *http.Request) error {
	return mxhttp.JSON(w, http.StatusOK, map[string]any{"server": map[string]string{"name": "Atoll", "version": "0.1.0"}})
}

func (s *Server) serverKeys(w http.ResponseWriter, r *http.Request) error {
	t, err := s.resolve(r)
	if err != nil {
		return err
	}
	rec, err := s.registry.Get(r.Context(), t.TenantID)
	if err != nil {
		return err
	}
	b, err := ServerKeys(rec, s.now())
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
	return nil
}

// notary answers /_matrix/key/v2/query: keys of the servers asked for, as this server saw
// them, each response also signed by the answering tenant.
func (s *Server) notary(w http.ResponseWriter, r *http.Request) error {
	t, err := s.resolve(r)
	if err != nil {
		return err
	}
	criteria := map[spec.ServerName]map[gomatrixserverlib.KeyID]gomatrixserverlib.PublicKeyNotaryQueryCriteria{}
	if r.Method == http.MethodPost {
		var body gomatrixserverlib.PublicKeyNotaryLookupRequest
		if err := mxhttp.DecodeJSON(r, &body); err != nil {
			return err
		}
		criteria = body.ServerKeys
	} else {
		server := spec.ServerName(r.PathValue("serverName"))
		criteria[server] = map[gomatrixserverlib.KeyID]gomatrixserverlib.PublicKeyNotaryQueryCriteria{}
	}
	if len(criteria) > 100 {
		return mxhttp.BadJSON("too many servers in one query")
	}
	rec, err := s.registry.Get(r.Context(), t.TenantID)
	if err != nil {
		return err
	}
	var out []json.RawMessage
	for server := range criteria {
		keys, err := s.fetchServerKeys(r.Context(), t, server)
		if err != nil {
			s.log.DebugContext(r.Context(), "notary fetch failed", "server", server, "err", err)
			continue
		}
		signed, err := gomatrixserverlib.SignJSON(string(rec.ServerName), gomatrixserverlib.KeyID(rec.KeyID), rec.PrivateKey, keys)
		if err != nil {
			return err
		}
		out = append(out, signed)
	}
	if out == nil {
		out = []json.RawMessage{}
	}
	return mxhttp.JSON(w, http.StatusOK, map[string]any{"server_keys": out})
}

// fetchServerKeys returns a server's own key response: a tenant's from the registry, another
// server's by asking it.
func (s *Server) fetchServerKeys(ctx context.Context, t *clientapi.Tenant, server spec.ServerName) ([]byte, error) {
	if rec, err := s.registry.ByHost(ctx, string(server)); err == nil {
		return ServerKeys(rec, s.now())
	}
	c := fclient.NewClient(fclient.WithTransport(s.transport), fclient.WithTimeout(20*time.Second))
	keys, err := c.GetServerKeys(ctx, server)
	if err != nil {
		return nil, err
	}
	return keys.Raw, nil
}
