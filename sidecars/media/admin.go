package media

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/atoll-matrix/atoll/sidecars/media/mediadb"
	"github.com/atoll-matrix/atoll/sidecars/media/mediaid"
	"github.com/atoll-matrix/atoll/sidecars/media/mediastore"
)

func (s *Server) adminTenant(r *http.Request) (string, error) {
	if err := s.requireAdmin(r); err != nil {
		return "", err
	}
	t := r.PathValue("tenant")
	if !mediastore.ValidTenantID(t) {
		return "", errBadParam("Invalid tenant id")
	}
	return t, nil
}

func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return matrixError(http.StatusBadRequest, "M_BAD_JSON", "Invalid JSON body", err)
	}
	return nil
}

func (s *Server) adminCreateTenant(w http.ResponseWriter, r *http.Request) error {
	tenant, err := s.adminTenant(r)
	if err != nil {
		return err
	}
	if err := s.store.CreateTenant(r.Context(), tenant); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{})
	return nil
}

// adminDeleteTenant removes the rows first, then every object and the bucket: a retry after a
// failure finds any objects left by listing the tenant's bucket or prefix.
func (s *Server) adminDeleteTenant(w http.ResponseWriter, r *http.Request) error {
	tenant, err := s.adminTenant(r)
	if err != nil {
		return err
	}
	rows, err := s.db.DeleteTenant(r.Context(), tenant)
	if err != nil {
		return err
	}
	if err := s.store.DeleteTenant(r.Context(), tenant); err != nil {
		return err
	}
	s.log.Info("tenant media deleted", "tenant", tenant, "rows", rows)
	writeJSON(w, http.StatusOK, map[string]any{"deleted_media": rows})
	return nil
}

type mxcListRequest struct {
	// ServerName is the tenant's server name: URIs naming it are local media, others cached
	// remote media.
	ServerName string   `json:"server_name"`
	MXCURIs    []string `json:"mxc_uris"`
}

func (req mxcListRequest) refs(tenant string) ([]mediadb.Ref, error) {
	if !mediaid.ValidServerName(req.ServerName) {
		return nil, errBadParam("server_name is required")
	}
	if len(req.MXCURIs) > 10000 {
		return nil, errBadParam("At most 10000 mxc_uris per request")
	}
	refs := make([]mediadb.Ref, 0, len(req.MXCURIs))
	for _, u := range req.MXCURIs {
		m, err := mediaid.ParseMXC(u)
		if err != nil {
			return nil, errBadParam(fmt.Sprintf("Invalid mxc URI %q", u))
		}
		ref := mediadb.Ref{TenantID: tenant, MediaID: m.MediaID}
		if m.ServerName != req.ServerName {
			ref.Origin = m.ServerName
		}
		refs = append(refs, ref)
	}
	return refs, nil
}

// adminQuarantineMedia quarantines the listed media (one item, or a room's media list).
func (s *Server) adminQuarantineMedia(w http.ResponseWriter, r *http.Request) error {
	tenant, err := s.adminTenant(r)
	if err != nil {
		return err
	}
	var req mxcListRequest
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	refs, err := req.refs(tenant)
	if err != nil {
		return err
	}
	n := 0
	now := s.now()
	for _, ref := range refs {
		changed, err := s.db.Quarantine(r.Context(), ref, now)
		if err != nil {
			return err
		}
		if changed {
			n++
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"num_quarantined": n})
	return nil
}

func (s *Server) adminQuarantineUser(w http.ResponseWriter, r *http.Request) error {
	tenant, err := s.adminTenant(r)
	if err != nil {
		return err
	}
	var req struct {
		UserID string `json:"user_id"`
	}
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	if req.UserID == "" || len(req.UserID) > 255 || req.UserID[0] != '@' {
		return errBadParam("user_id is required")
	}
	n, err := s.db.QuarantineUser(r.Context(), tenant, req.UserID, s.now())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"num_quarantined": n})
	return nil
}

// deleteMedia removes the objects (media and thumbnails) first, then the rows, so a failure
// leaves the rows for a retry to find.
func (s *Server) deleteMedia(ctx context.Context, ref mediadb.Ref) (bool, error) {
	keys, err := s.db.ObjectKeys(ctx, ref)
	if err != nil {
		return false, err
	}
	if len(keys) > 0 {
		if err := s.store.Remove(ctx, ref.TenantID, keys...); err != nil {
			return false, err
		}
	}
	return s.db.Delete(ctx, ref)
}

func (s *Server) adminDeleteMedia(w http.ResponseWriter, r *http.Request) error {
	tenant, err := s.adminTenant(r)
	if err != nil {
		return err
	}
	var req mxcListRequest
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	refs, err := req.refs(tenant)
	if err != nil {
		return err
	}
	n := 0
	for _, ref := range refs {
		ok, err := s.deleteMedia(r.Context(), ref)
		if err != nil {
			return err
		}
		if ok {
			n++
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"deleted": n})
	return nil
}

func (s *Server) adminPurgeRemote(w http.ResponseWriter, r *http.Request) error {
	tenant, err := s.adminTenant(r)
	if err != nil {
		return err
	}
	var req struct {
		BeforeTS int64 `json:"before_ts"`
	}
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	if req.BeforeTS <= 0 {
		return errBadParam("before_ts (milliseconds since the epoch) is required")
	}
	before := time.UnixMilli(req.BeforeTS)
	n := 0
	for {
		refs, err := s.db.OlderRemoteOfTenant(r.Context(), tenant, before, 500)
		if err != nil {
			return err
		}
		for _, ref := range refs {
			if _, err := s.deleteMedia(r.Context(), ref); err != nil {
				return err
			}
			n++
		}
		if len(refs) < 500 {
			break
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"deleted": n})
	return nil
}

// RetentionResult counts what one retention pass deleted.
type RetentionResult struct {
	DeletedLocal   int `json:"deleted_local"`
	DeletedRemote  int `json:"deleted_remote"`
	ExpiredPending int `json:"expired_pending"`
	AbortedUploads int `json:"aborted_uploads"`
}

// RunRetention deletes local and cached remote media older than the configured ages, and
// reserved media IDs whose upload never came.
func (s *Server) RunRetention(ctx context.Context) (RetentionResult, error) {
	var res RetentionResult
	now := s.now()
	pass := func(kind string, list func() ([]mediadb.Ref, error), count *int) error {
		for {
			refs, err := list()
			if err != nil {
				return err
			}
			for _, ref := range refs {
				if _, err := s.deleteMedia(ctx, ref); err != nil {
					return err
				}
				*count++
				s.m.retentionDelete.WithLabelValues(kind).Inc()
			}
			if len(refs) < 500 {
				return nil
			}
		}
	}
	var errs []error
	if age := s.cfg.Retention.LocalMaxAge; age > 0 {
		errs = append(errs, pass("local", func() ([]mediadb.Ref, error) { return s.db.Older(ctx, false, now.Add(-age), 500) }, &res.DeletedLocal))
	}
	if age := s.cfg.Retention.RemoteMaxAge; age > 0 {
		errs = append(errs, pass("remote", func() ([]mediadb.Ref, error) { return s.db.Older(ctx, true, now.Add(-age), 500) }, &res.DeletedRemote))
	}
	errs = append(errs, pass("pending", func() ([]mediadb.Ref, error) { return s.db.ExpiredPending(ctx, now, 500) }, &res.ExpiredPending))
	n, err := s.store.AbortStaleUploads(ctx, s.cfg.Retention.AbandonedUploadAge, time.Now())
	res.AbortedUploads = n
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		return res, fmt.Errorf("retention: %w", err)
	}
	return res, nil
}

func (s *Server) adminRetention(w http.ResponseWriter, r *http.Request) error {
	if err := s.requireAdmin(r); err != nil {
		return err
	}
	res, err := s.RunRetention(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}
