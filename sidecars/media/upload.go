package media

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"time"

	"github.com/atoll-matrix/atoll/sidecars/media/hsauth"
	"github.com/atoll-matrix/atoll/sidecars/media/mediadb"
	"github.com/atoll-matrix/atoll/sidecars/media/mediaid"
	"github.com/atoll-matrix/atoll/sidecars/media/mediastore"
)

// bodyReader counts upload bytes and remembers whether the client's body failed (truncated,
// too large), so such failures are told apart from S3 failures.
type bodyReader struct {
	r   io.Reader
	n   int64
	err error
	s   *Server
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.n += int64(n)
	b.s.m.bytesIn.Add(float64(n))
	if err != nil && !errors.Is(err, io.EOF) {
		b.err = err
	}
	return n, err
}

func uploadContentType(r *http.Request) (string, error) {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return "application/octet-stream", nil
	}
	if len(ct) > 255 {
		return "", errBadParam("Content-Type too long")
	}
	if _, _, err := mime.ParseMediaType(ct); err != nil {
		return "", errBadParam("Invalid Content-Type")
	}
	return ct, nil
}

func uploadName(r *http.Request) (string, error) {
	name := r.URL.Query().Get("filename")
	if len(name) > 1024 {
		return "", errBadParam("filename too long")
	}
	return name, nil
}

// checkUpload refuses oversized or over-quota uploads before reading the body.
func (s *Server) checkUpload(r *http.Request, id hsauth.Identity) error {
	if r.ContentLength > s.cfg.MaxUploadBytes {
		return errTooLarge(fmt.Sprintf("Upload is larger than %d bytes", s.cfg.MaxUploadBytes), nil)
	}
	if s.cfg.UserQuotaBytes > 0 {
		used, err := s.db.UserUsage(r.Context(), id.TenantID, id.UserID)
		if err != nil {
			return err
		}
		if used+max(r.ContentLength, 0) > s.cfg.UserQuotaBytes {
			s.m.quotaRejections.Inc()
			return matrixError(http.StatusForbidden, "M_FORBIDDEN", "Upload quota exceeded", nil)
		}
	}
	return nil
}

// putBody streams the request body into key. On failure nothing is stored.
func (s *Server) putBody(w http.ResponseWriter, r *http.Request, tenant, key, contentType string) (int64, error) {
	body := &bodyReader{r: http.MaxBytesReader(w, r.Body, s.cfg.MaxUploadBytes), s: s}
	size := r.ContentLength // -1 for chunked bodies: multipart with bounded buffers
	n, err := s.store.Put(r.Context(), tenant, key, body, size, contentType)
	if err != nil {
		var tooBig *http.MaxBytesError
		switch {
		case errors.As(body.err, &tooBig):
			return 0, errTooLarge(fmt.Sprintf("Upload is larger than %d bytes", s.cfg.MaxUploadBytes), err)
		case body.err != nil:
			// The client's body broke (shorter than Content-Length, bad chunking, gone).
			return 0, matrixError(http.StatusBadRequest, "M_UNKNOWN", "Upload body incomplete", err)
		}
		return 0, fmt.Errorf("store upload: %w", err)
	}
	return n, nil
}

func (s *Server) upload(w http.ResponseWriter, r *http.Request) error {
	id, err := s.authenticate(r)
	if err != nil {
		return err
	}
	ct, err := uploadContentType(r)
	if err != nil {
		return err
	}
	name, err := uploadName(r)
	if err != nil {
		return err
	}
	if err := s.checkUpload(r, id); err != nil {
		return err
	}
	mediaID := mediaid.New()
	key := mediastore.LocalKey(mediaID)
	n, err := s.putBody(w, r, id.TenantID, key, ct)
	if err != nil {
		return err
	}
	// The object is complete: only now does the row appear.
	err = s.db.InsertLocal(r.Context(), mediadb.Media{
		TenantID: id.TenantID, MediaID: mediaID, UserID: id.UserID, ContentType: ct, UploadName: name,
		Size: n, ObjectKey: key, CreatedAt: s.now(),
	}, s.cfg.UserQuotaBytes)
	if err != nil {
		s.removeObjects(r, id.TenantID, key)
		if errors.Is(err, mediadb.ErrQuotaExceeded) {
			s.m.quotaRejections.Inc()
			return matrixError(http.StatusForbidden, "M_FORBIDDEN", "Upload quota exceeded", err)
		}
		return err
	}
	writeJSON(w, http.StatusOK, map[string]string{"content_uri": mediaid.MXC{ServerName: id.ServerName, MediaID: mediaID}.String()})
	return nil
}

// removeObjects deletes objects of a failed request, even if the client went away.
func (s *Server) removeObjects(r *http.Request, tenant string, keys ...string) {
	ctx, cancel := contextWithoutCancel(r, s.cfg.RequestTimeout)
	defer cancel()
	if err := s.store.Remove(ctx, tenant, keys...); err != nil {
		s.log.Error("remove objects of a failed request", "tenant", tenant, "error", err)
	}
}

func (s *Server) create(w http.ResponseWriter, r *http.Request) error {
	id, err := s.authenticate(r)
	if err != nil {
		return err
	}
	now := s.now()
	until := now.Add(s.cfg.PendingUploadTTL)
	mediaID := mediaid.New()
	err = s.db.CreatePending(r.Context(), id.TenantID, mediaID, id.UserID, now, until, s.cfg.MaxPendingUploads)
	if errors.Is(err, mediadb.ErrTooManyPending) {
		return &Error{Status: http.StatusTooManyRequests, ErrCode: "M_LIMIT_EXCEEDED", Message: "Too many pending uploads", Err: err}
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"content_uri":       mediaid.MXC{ServerName: id.ServerName, MediaID: mediaID}.String(),
		"unused_expires_at": until.UnixMilli(),
	})
	return nil
}

func (s *Server) uploadAsync(w http.ResponseWriter, r *http.Request) error {
	id, err := s.authenticate(r)
	if err != nil {
		return err
	}
	serverName, mediaID := r.PathValue("serverName"), r.PathValue("mediaId")
	if err := mediaid.Check(serverName, mediaID); err != nil {
		return errNotFound(err)
	}
	if serverName != id.ServerName {
		return errNotFound(fmt.Errorf("upload to %s from %s", serverName, id.ServerName))
	}
	ct, err := uploadContentType(r)
	if err != nil {
		return err
	}
	name, err := uploadName(r)
	if err != nil {
		return err
	}
	ref := mediadb.Ref{TenantID: id.TenantID, MediaID: mediaID}
	cur, err := s.db.Get(r.Context(), ref)
	if err != nil {
		if errors.Is(err, mediadb.ErrNotFound) {
			return errNotFound(err)
		}
		return err
	}
	if err := asyncUploadAllowed(cur, id, s.now()); err != nil {
		return err
	}
	if err := s.checkUpload(r, id); err != nil {
		return err
	}
	// A key of its own per attempt: concurrent attempts never overwrite the winner's object.
	key := mediastore.LocalKey(mediaID) + "." + mediaid.New()[:8]
	n, err := s.putBody(w, r, id.TenantID, key, ct)
	if err != nil {
		return err
	}
	err = s.db.CompletePending(r.Context(), mediadb.Media{
		TenantID: id.TenantID, MediaID: mediaID, UserID: id.UserID, ContentType: ct, UploadName: name,
		Size: n, ObjectKey: key, CreatedAt: s.now(),
	}, s.cfg.UserQuotaBytes)
	if err != nil {
		s.removeObjects(r, id.TenantID, key)
		if errors.Is(err, mediadb.ErrQuotaExceeded) {
			s.m.quotaRejections.Inc()
			return matrixError(http.StatusForbidden, "M_FORBIDDEN", "Upload quota exceeded", err)
		}
		if cur, gerr := s.db.Get(r.Context(), ref); gerr == nil {
			if aerr := asyncUploadAllowed(cur, id, s.now()); aerr != nil {
				return aerr
			}
		}
		if errors.Is(err, mediadb.ErrNotFound) {
			return errNotFound(err)
		}
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{})
	return nil
}

func asyncUploadAllowed(cur mediadb.Media, id hsauth.Identity, now time.Time) error {
	switch {
	case cur.UserID != id.UserID:
		return matrixError(http.StatusForbidden, "M_FORBIDDEN", "This media ID was created by another user", nil)
	case cur.UploadedAt != nil:
		return matrixError(http.StatusConflict, "M_CANNOT_OVERWRITE_MEDIA", "Media already uploaded", nil)
	case cur.PendingUntil != nil && cur.PendingUntil.Before(now):
		return errNotFound(errors.New("pending media id expired"))
	}
	return nil
}
