// Package media is the media sidecar's HTTP server: the Matrix content repository (client,
// legacy and federation endpoints) for every tenant of a shard, backed by per-tenant S3 storage
// (package mediastore) and metadata in PostgreSQL (package mediadb), with users authenticated
// through the homeserver (package hsauth), plus the sidecar's own admin API and retention.
package media

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/atoll-matrix/atoll/sidecars/media/config"
	"github.com/atoll-matrix/atoll/sidecars/media/fedmedia"
	"github.com/atoll-matrix/atoll/sidecars/media/hsauth"
	"github.com/atoll-matrix/atoll/sidecars/media/mediadb"
	"github.com/atoll-matrix/atoll/sidecars/media/mediastore"
	"github.com/atoll-matrix/atoll/sidecars/media/preview"
	"github.com/atoll-matrix/atoll/sidecars/media/thumbnail"
	"github.com/prometheus/client_golang/prometheus"
)

// Fetcher fetches media from other servers over federation. origin is the server name of the
// tenant asking: the request is signed as it.
type Fetcher interface {
	Download(ctx context.Context, origin, serverName, mediaID string) (*fedmedia.Remote, error)
}

// Deps are what a Server needs; the main wires them.
type Deps struct {
	Config     config.Config
	AdminToken string // the homeserver admin token, also guarding the sidecar's admin API
	Auth       *hsauth.Client
	Store      *mediastore.Store
	DB         *mediadb.DB
	// Fetcher fetches remote media; nil serves local media only.
	Fetcher Fetcher
	// Preview fetches URL previews; nil disables preview_url.
	Preview *preview.Fetcher
	// VerifyFederation authenticates an inbound federation request (X-Matrix). Nil accepts
	// unsigned requests only when Config.Federation.AcceptUnsignedRequests is set.
	VerifyFederation func(r *http.Request) error
	Logger           *slog.Logger
	Registerer       prometheus.Registerer
	Now              func() time.Time
}

// Server serves the media API. Create it with New.
type Server struct {
	cfg     config.Config
	token   string
	auth    *hsauth.Client
	store   *mediastore.Store
	db      *mediadb.DB
	fetcher Fetcher
	preview *preview.Fetcher
	verify  func(r *http.Request) error
	log     *slog.Logger
	m       *metrics
	thumbs  *thumbnail.Generator
	now     func() time.Time
	mux     *http.ServeMux
}

// New returns a Server.
func New(d Deps) (*Server, error) {
	if d.Auth == nil || d.Store == nil || d.DB == nil || d.Logger == nil || d.Registerer == nil || d.AdminToken == "" {
		return nil, errors.New("media server: auth, store, db, logger, registerer and admin token are required")
	}
	if err := d.Config.Validate(); err != nil {
		return nil, fmt.Errorf("media server config: %w", err)
	}
	m, err := newMetrics(d.Registerer)
	if err != nil {
		return nil, err
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	s := &Server{
		cfg: d.Config, token: d.AdminToken, auth: d.Auth, store: d.Store, db: d.DB, fetcher: d.Fetcher,
		preview: d.Preview, verify: d.VerifyFederation, log: d.Logger, m: m, now: d.Now,
		thumbs: thumbnail.New(d.Config.Thumbnails.MaxConcurrent, d.Config.Thumbnails.MaxSourcePixels),
		mux:    http.NewServeMux(),
	}
	s.routes()
	return s, nil
}

// Handler serves every route: client, legacy, federation and admin.
func (s *Server) Handler() http.Handler { return s.mux }

// Run runs retention every Retention.Interval until ctx is done.
func (s *Server) Run(ctx context.Context) error {
	t := time.NewTicker(s.cfg.Retention.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			res, err := s.RunRetention(ctx)
			if err != nil && ctx.Err() == nil {
				s.log.Error("retention failed", "error", err)
				continue
			}
			if res.DeletedLocal+res.DeletedRemote+res.ExpiredPending+res.AbortedUploads > 0 {
				s.log.Info("retention done", "deleted_local", res.DeletedLocal, "deleted_remote", res.DeletedRemote,
					"expired_pending", res.ExpiredPending, "aborted_uploads", res.AbortedUploads)
			}
		}
	}
}

type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// responseWriter records the status and counts body bytes.
type responseWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *responseWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *responseWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

// ReadFrom keeps io.Copy into the response on the fast path (sendfile/splice aside, it avoids
// an extra buffer).
func (w *responseWriter) ReadFrom(r io.Reader) (int64, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := io.Copy(w.ResponseWriter, r)
	w.bytes += n
	return n, err
}

func (w *responseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func newRequestID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// handle wraps a route: CORS, metrics, and the one place errors become responses.
func (s *Server) handle(route string, h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rw := &responseWriter{ResponseWriter: w}
		setCORS(rw.Header())
		err := h(rw, r)
		if err != nil {
			s.fail(rw, r, route, err)
		}
		if rw.status == 0 {
			rw.status = http.StatusOK
		}
		s.m.requests.WithLabelValues(route, strconv.Itoa(rw.status)).Inc()
		s.m.duration.WithLabelValues(route).Observe(time.Since(start).Seconds())
		s.m.bytesOut.Add(float64(rw.bytes))
	})
}

func (s *Server) fail(w *responseWriter, r *http.Request, route string, err error) {
	me := toMatrix(err)
	rid := newRequestID()
	if w.status != 0 {
		// The answer was under way (a transfer broke): nothing more can be sent.
		if r.Context().Err() == nil {
			s.log.Warn("response aborted", "route", route, "request_id", rid, "error", err)
		}
		return
	}
	if me.Status >= 500 {
		s.log.Error("request failed", "route", route, "request_id", rid, "status", me.Status, "error", err)
	} else if me.Err != nil {
		s.log.Debug("request refused", "route", route, "request_id", rid, "status", me.Status, "error", err)
	}
	body := map[string]any{"errcode": me.ErrCode, "error": me.Message}
	if me.Status >= 500 {
		body["error"] = me.Message + " (request " + rid + ")"
	}
	// Remove headers a handler set for the content it meant to send.
	for _, h := range []string{"Content-Disposition", "Content-Security-Policy", "Cache-Control", "Content-Length"} {
		w.Header().Del(h)
	}
	writeJSON(w, me.Status, body)
}

func setCORS(h http.Header) {
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Access-Control-Allow-Methods", "GET, HEAD, POST, PUT, DELETE, OPTIONS")
	h.Set("Access-Control-Allow-Headers", "X-Requested-With, Content-Type, Authorization, Date")
}

// requestHost is the Host header without a port, lower-cased.
func requestHost(r *http.Request) string {
	h := r.Host
	if host, _, err := net.SplitHostPort(h); err == nil {
		h = host
	}
	return strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(h, "["), "]"))
}

func accessToken(r *http.Request) (string, bool) {
	if a := r.Header.Get("Authorization"); a != "" {
		tok, ok := strings.CutPrefix(a, "Bearer ")
		return strings.TrimSpace(tok), ok && strings.TrimSpace(tok) != ""
	}
	tok := r.URL.Query().Get("access_token")
	return tok, tok != ""
}

// authenticate resolves the requesting user through the homeserver.
func (s *Server) authenticate(r *http.Request) (hsauth.Identity, error) {
	tok, ok := accessToken(r)
	if !ok {
		return hsauth.Identity{}, matrixError(http.StatusUnauthorized, "M_MISSING_TOKEN", "Missing access token", nil)
	}
	id, err := s.auth.Authenticate(r.Context(), requestHost(r), tok)
	if err != nil {
		return hsauth.Identity{}, fmt.Errorf("authenticate: %w", err)
	}
	if !mediastore.ValidTenantID(id.TenantID) {
		return hsauth.Identity{}, fmt.Errorf("homeserver named tenant %q: %w", id.TenantID, hsauth.ErrUnavailable)
	}
	return id, nil
}

// requireAdmin checks the admin token.
func (s *Server) requireAdmin(r *http.Request) error {
	tok, ok := accessToken(r)
	if !ok {
		return matrixError(http.StatusUnauthorized, "M_MISSING_TOKEN", "Missing access token", nil)
	}
	if subtle.ConstantTimeCompare([]byte(tok), []byte(s.token)) != 1 {
		return matrixError(http.StatusForbidden, "M_FORBIDDEN", "Not an admin token", nil)
	}
	return nil
}
