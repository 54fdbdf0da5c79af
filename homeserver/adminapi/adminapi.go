// Package adminapi is the operator's HTTP API of a shard, on its own listener and protected by
// a bearer token: tenant lifecycle (create, list, show, suspend, resume, purge), settings,
// registration tokens, and the internal endpoints sidecars use to authenticate users and to
// reach other servers over signed federation.
package adminapi

import (
	"context"
	"crypto/ed25519"
	"crypto/subtle"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/atoll-matrix/atoll/homeserver/clientapi"
	"github.com/atoll-matrix/atoll/homeserver/storage"
	"github.com/atoll-matrix/atoll/homeserver/tenant"
	"github.com/atoll-matrix/atoll/internal/mxhttp"
	"github.com/atoll-matrix/atoll/internal/pgdb"
)

// Forgetter drops a tenant from the local shard after a lifecycle change.
type Forgetter interface {
	Forget(ctx context.Context, id string)
}

// Server is the admin API.
type Server struct {
	log      *slog.Logger
	token    string
	registry *tenant.Registry
	pool     *pgxpool.Pool
	shard    Forgetter
	tenants  clientapi.Resolver
	media    *MediaBuckets
	fed      Federation
	metrics  *mxhttp.Metrics
}

// New returns the admin API. token must be non-empty.
// media may be nil when no media sidecar runs beside the shard; fed may be nil, and then the
// internal federation endpoints answer 404.
func New(log *slog.Logger, reg prometheus.Registerer, token string, pool *pgxpool.Pool, registry *tenant.Registry, shard Forgetter, tenants clientapi.Resolver, media *MediaBuckets, fed Federation) *Server {
	return &Server{log: log, token: token, pool: pool, registry: registry, shard: shard, tenants: tenants, media: media, fed: fed, metrics: mxhttp.NewMetrics(reg, "admin")}
}

// Handler serves every admin route.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	h := func(pattern, route string, fn mxhttp.HandlerFunc) {
		mux.Handle(pattern, mxhttp.Handler{Route: route, Fn: s.auth(fn), Log: s.log, Metrics: s.metrics})
	}
	h("POST /_atoll/admin/v1/tenants", "admin.tenant_create", s.create)
	h("GET /_atoll/admin/v1/tenants", "admin.tenant_list", s.list)
	h("GET /_atoll/admin/v1/tenants/{id}", "admin.tenant_show", s.show)
	h("POST /_atoll/admin/v1/tenants/{id}/suspend", "admin.tenant_suspend", s.setStatus(tenant.Suspended))
	h("POST /_atoll/admin/v1/tenants/{id}/resume", "admin.tenant_resume", s.setStatus(tenant.Active))
	h("DELETE /_atoll/admin/v1/tenants/{id}", "admin.tenant_purge", s.purge)
	h("PUT /_atoll/admin/v1/tenants/{id}/settings", "admin.tenant_settings", s.settings)
	h("POST /_atoll/admin/v1/tenants/{id}/registration_tokens", "admin.registration_token", s.registrationToken)
	h("POST /_atoll/internal/v1/auth", "internal.auth", s.internalAuth)
	h("GET /_atoll/internal/v1/tenants/by-host/{host}", "internal.tenant_by_host", s.tenantByHost)
	h("GET /_atoll/internal/v1/federation/media/download", "internal.federation_media_download", s.federationMedia(false))
	h("GET /_atoll/internal/v1/federation/media/thumbnail", "internal.federation_media_thumbnail", s.federationMedia(true))
	h("POST /_atoll/internal/v1/federation/verify", "internal.federation_verify", s.federationVerify)
	mux.Handle("/", mxhttp.Handler{Route: "admin.unknown", Log: s.log, Fn: func(w http.ResponseWriter, r *http.Request) error {
		return mxhttp.Unrecognized(http.StatusNotFound, "unrecognized admin request")
	}})
	return mux
}

func (s *Server) auth(next mxhttp.HandlerFunc) mxhttp.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || tok == "" {
			return mxhttp.MissingToken("admin token required")
		}
		if subtle.ConstantTimeCompare([]byte(tok), []byte(s.token)) != 1 {
			return mxhttp.UnknownToken("invalid admin token")
		}
		return next(w, r)
	}
}

// TenantView is a tenant as the admin API shows it (never the signing key).
type TenantView struct {
	ID         string          `json:"id"`
	ServerName string          `json:"server_name"`
	ClientHost string          `json:"client_host,omitempty"`
	Status     string          `json:"status"`
	Settings   tenant.Settings `json:"settings"`
	KeyID      string          `json:"key_id"`
	VerifyKey  string          `json:"verify_key"`
	CreatedAt  time.Time       `json:"created_at"`
	Owner      string          `json:"owner_shard,omitempty"`
	LeaseUntil *time.Time      `json:"lease_until,omitempty"`
	Users      *int            `json:"users,omitempty"`
}

func view(t *tenant.Tenant) TenantView {
	v := TenantView{ID: t.ID, ServerName: string(t.ServerName), ClientHost: t.ClientHost, Status: string(t.Status),
		Settings: t.Settings, KeyID: t.KeyID, CreatedAt: t.CreatedAt, Owner: t.Owner,
		VerifyKey: spec.Base64Bytes(t.PrivateKey.Public().(ed25519.PublicKey)).Encode()}
	v.Settings.SharedSecret = ""
	if t.Owner != "" {
		lu := t.LeaseUntil
		v.LeaseUntil = &lu
	}
	return v
}

func tenantErr(err error) error {
	switch {
	case errors.Is(err, tenant.ErrNotFound):
		return mxhttp.NotFound("no such tenant")
	case errors.Is(err, tenant.ErrExists):
		return mxhttp.Code(http.StatusConflict, spec.ErrorUnknown, "tenant id or host already in use")
	case errors.Is(err, tenant.ErrNotSuspended):
		return mxhttp.Code(http.StatusConflict, spec.ErrorForbidden, "suspend the tenant before purging it")
	}
	return err
}

type createRequest struct {
	ID         string          `json:"id"`
	ServerName string          `json:"server_name"`
	ClientHost string          `json:"client_host"`
	Settings   tenant.Settings `json:"settings"`
}

func (s *Server) create(w http.ResponseWriter, r *http.Request) error {
	var req createRequest
	if err := mxhttp.DecodeJSON(r, &req); err != nil {
		return err
	}
	if req.ID == "" || req.ServerName == "" {
		return mxhttp.MissingParam("id and server_name are required")
	}
	if err := tenant.ValidateID(req.ID); err != nil {
		return mxhttp.InvalidParam("%v", err)
	}
	if err := tenant.ValidateHost(req.ServerName); err != nil {
		return mxhttp.InvalidParam("%v", err)
	}
	if req.ClientHost != "" {
		if err := tenant.ValidateHost(req.ClientHost); err != nil {
			return mxhttp.InvalidParam("%v", err)
		}
	}
	if req.Settings.Registration == "" {
		req.Settings.Registration = tenant.RegistrationClosed
	}
	if err := req.Settings.Validate(); err != nil {
		return mxhttp.InvalidParam("%v", err)
	}
	t, err := s.registry.Create(r.Context(), tenant.NewSpec{ID: req.ID, ServerName: req.ServerName, ClientHost: req.ClientHost, Settings: req.Settings})
	if err != nil {
		return tenantErr(err)
	}
	if s.media != nil {
		// The sidecar also creates a missing bucket on first upload; failing here only costs that.
		if err := s.media.Create(r.Context(), t.ID); err != nil {
			s.log.WarnContext(r.Context(), "create media bucket failed", "tenant", t.ID, "err", err)
		}
	}
	s.log.InfoContext(r.Context(), "tenant created", "tenant", t.ID, "server_name", t.ServerName)
	return mxhttp.JSON(w, http.StatusCreated, view(t))
}

func (s *Server) list(w http.ResponseWriter, r *http.Request) error {
	limit := 1000
	ts, err := s.registry.List(r.Context(), r.URL.Query().Get("after"), limit)
	if err != nil {
		return err
	}
	out := make([]TenantView, 0, len(ts))
	for _, t := range ts {
		out = append(out, view(t))
	}
	resp := map[string]any{"tenants": out}
	if len(ts) == limit {
		resp["next"] = ts[len(ts)-1].ID
	}
	return mxhttp.JSON(w, http.StatusOK, resp)
}

func (s *Server) show(w http.ResponseWriter, r *http.Request) error {
	t, err := s.registry.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		return tenantErr(err)
	}
	v := view(t)
	err = storage.New(s.pool, t.Schema()).Tx(r.Context(), func(q pgdb.DBTX) error {
		n, err := storage.CountUsers(r.Context(), q)
		v.Users = &n
		return err
	})
	if err != nil {
		s.log.WarnContext(r.Context(), "count users failed", "tenant", t.ID, "err", err)
		v.Users = nil
	}
	return mxhttp.JSON(w, http.StatusOK, v)
}

func (s *Server) setStatus(st tenant.Status) mxhttp.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		id := r.PathValue("id")
		if err := s.registry.SetStatus(r.Context(), id, st); err != nil {
			return tenantErr(err)
		}
		s.shard.Forget(r.Context(), id)
		s.log.InfoContext(r.Context(), "tenant status changed", "tenant", id, "status", string(st))
		t, err := s.registry.Get(r.Context(), id)
		if err != nil {
			return tenantErr(err)
		}
		return mxhttp.JSON(w, http.StatusOK, view(t))
	}
}

func (s *Server) purge(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	t, err := s.registry.Get(r.Context(), id)
	if err != nil {
		return tenantErr(err)
	}
	if t.Status != tenant.Suspended {
		return tenantErr(tenant.ErrNotSuspended)
	}
	s.shard.Forget(r.Context(), id)
	if s.media != nil {
		// Media first: a tenant whose objects could not be deleted stays, suspended, to retry.
		if err := s.media.Delete(r.Context(), id); err != nil {
			return &mxhttp.Error{Status: http.StatusBadGateway, Body: spec.MatrixError{ErrCode: spec.ErrorUnknown,
				Err: "the media sidecar could not delete the tenant's media; the tenant stays suspended, retry later"}, Err: err}
		}
	}
	if err := s.registry.Purge(r.Context(), id); err != nil {
		return tenantErr(err)
	}
	s.log.InfoContext(r.Context(), "tenant purged", "tenant", id)
	return mxhttp.JSON(w, http.StatusOK, map[string]string{"purged": id})
}

func (s *Server) settings(w http.ResponseWriter, r *http.Request) error {
	var st tenant.Settings
	if err := mxhttp.DecodeJSON(r, &st); err != nil {
		return err
	}
	if err := st.Validate(); err != nil {
		return mxhttp.InvalidParam("%v", err)
	}
	id := r.PathValue("id")
	if err := s.registry.UpdateSettings(r.Context(), id, st); err != nil {
		return tenantErr(err)
	}
	s.shard.Forget(r.Context(), id)
	t, err := s.registry.Get(r.Context(), id)
	if err != nil {
		return tenantErr(err)
	}
	return mxhttp.JSON(w, http.StatusOK, view(t))
}

func (s *Server) registrationToken(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Token       string `json:"token"`
		UsesAllowed *int   `json:"uses_allowed"`
		ExpiryTS    *int64 `json:"expiry_time"`
	}
	if err := mxhttp.DecodeJSON(r, &req); err != nil {
		return err
	}
	if req.Token == "" || len(req.Token) > 64 || strings.ContainsAny(req.Token, " \t\n/") {
		return mxhttp.InvalidParam("token must be 1-64 characters without spaces or slashes")
	}
	t, err := s.registry.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		return tenantErr(err)
	}
	err = storage.New(s.pool, t.Schema()).Tx(r.Context(), func(q pgdb.DBTX) error {
		_, err := q.Exec(r.Context(), `INSERT INTO registration_tokens (token, uses_allowed, expiry_ts) VALUES ($1, $2, $3)`, req.Token, req.UsesAllowed, req.ExpiryTS)
		if pgdb.IsUniqueViolation(err) {
			return mxhttp.Code(http.StatusConflict, spec.ErrorUnknown, "token exists")
		}
		return err
	})
	if err != nil {
		return err
	}
	return mxhttp.JSON(w, http.StatusOK, map[string]any{"token": req.Token, "uses_allowed": req.UsesAllowed, "expiry_time": req.ExpiryTS})
}

// internalAuth lets a sidecar check a user's access token for a host.
func (s *Server) internalAuth(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Host        string `json:"host"`
		AccessToken string `json:"access_token"`
	}
	if err := mxhttp.DecodeJSON(r, &req); err != nil {
		return err
	}
	if req.AccessToken == "" {
		return mxhttp.MissingToken("missing access token")
	}
	t, err := s.tenants.Resolve(r.Context(), strings.ToLower(req.Host))
	if err != nil {
		return resolveErr(err)
	}
	uid, dev, admin, err := clientapi.Authenticate(r.Context(), t, req.AccessToken)
	if err != nil {
		return err
	}
	return mxhttp.JSON(w, http.StatusOK, map[string]any{"tenant_id": t.TenantID, "server_name": t.ServerName,
		"user_id": uid, "device_id": dev, "admin": admin})
}

func resolveErr(err error) error {
	switch {
	case errors.Is(err, tenant.ErrNotFound):
		return mxhttp.NotFound("no homeserver is served at this host")
	case errors.Is(err, clientapi.ErrSuspended):
		return mxhttp.Forbidden("this homeserver is suspended")
	}
	return err
}

func (s *Server) tenantByHost(w http.ResponseWriter, r *http.Request) error {
	t, err := s.tenants.Resolve(r.Context(), strings.ToLower(r.PathValue("host")))
	if err != nil {
		return resolveErr(err)
	}
	return mxhttp.JSON(w, http.StatusOK, map[string]any{"tenant_id": t.TenantID, "server_name": t.ServerName})
}
