package media

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"time"

	"github.com/atoll-matrix/atoll/sidecars/media/config"
	"github.com/atoll-matrix/atoll/sidecars/media/fedmedia"
	"github.com/atoll-matrix/atoll/sidecars/media/mediadb"
	"github.com/atoll-matrix/atoll/sidecars/media/mediaid"
	"github.com/atoll-matrix/atoll/sidecars/media/mediastore"
	"github.com/atoll-matrix/atoll/sidecars/media/thumbnail"
)

func contextWithoutCancel(r *http.Request, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(r.Context()), d)
}

// contentSecurityPolicy keeps served media from running scripts in the client's origin.
const contentSecurityPolicy = "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; " +
	"style-src 'unsafe-inline'; media-src 'self'; object-src 'self';"

// inlineTypes may be shown inline; everything else is served as an attachment.
var inlineTypes = map[string]bool{
	"text/css": true, "text/plain": true, "text/csv": true, "application/json": true, "application/ld+json": true,
	"image/jpeg": true, "image/gif": true, "image/png": true, "image/apng": true, "image/webp": true, "image/avif": true,
	"video/mp4": true, "video/webm": true, "video/ogg": true, "video/quicktime": true,
	"audio/mp4": true, "audio/webm": true, "audio/aac": true, "audio/mpeg": true, "audio/ogg": true,
	"audio/wave": true, "audio/wav": true, "audio/x-wav": true, "audio/x-pn-wav": true, "audio/flac": true, "audio/x-flac": true,
}

func isInline(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && inlineTypes[mt]
}

// setMediaHeaders sets the security headers of every media answer.
func setMediaHeaders(h http.Header, contentType, fileName string) {
	if contentType == "" {
		contentType = "application/octet-stream"
	}
	h.Set("Content-Type", contentType)
	h.Set("Content-Disposition", fedmedia.ContentDisposition(isInline(contentType), fileName))
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cross-Origin-Resource-Policy", "cross-origin")
	h.Set("Cache-Control", "private, max-age=86400")
}

// lookup finds servable media for tenant, fetching remote media when allowed, and waiting up to
// timeout for a pending upload.
func (s *Server) lookup(ctx context.Context, tenant, localServer, serverName, mediaID string, allowRemote bool, timeout time.Duration) (mediadb.Media, error) {
	if err := mediaid.Check(serverName, mediaID); err != nil {
		return mediadb.Media{}, errNotFound(err)
	}
	ref := mediadb.Ref{TenantID: tenant, MediaID: mediaID}
	if serverName != localServer {
		ref.Origin = serverName
	}
	deadline := time.Now().Add(timeout)
	for {
		m, err := s.db.Get(ctx, ref)
		switch {
		case errors.Is(err, mediadb.ErrNotFound) && ref.Origin != "" && allowRemote:
			m, err = s.fetchRemote(ctx, localServer, ref)
			if err != nil {
				return mediadb.Media{}, err
			}
		case errors.Is(err, mediadb.ErrNotFound):
			return mediadb.Media{}, errNotFound(err)
		case err != nil:
			return mediadb.Media{}, err
		}
		if m.QuarantinedAt != nil {
			return mediadb.Media{}, errNotFound(errors.New("media quarantined"))
		}
		if m.UploadedAt != nil {
			return m, nil
		}
		if m.PendingUntil != nil && m.PendingUntil.Before(s.now()) {
			return mediadb.Media{}, errNotFound(errors.New("pending media expired"))
		}
		if time.Now().After(deadline) {
			return mediadb.Media{}, matrixError(http.StatusGatewayTimeout, "M_NOT_YET_UPLOADED", "Media has not been uploaded yet", nil)
		}
		select {
		case <-ctx.Done():
			return mediadb.Media{}, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// fetchRemote copies remote media into the tenant's cache and records it; localServer is the
// tenant's server name, which the federation request is signed as.
func (s *Server) fetchRemote(ctx context.Context, localServer string, ref mediadb.Ref) (mediadb.Media, error) {
	if s.fetcher == nil {
		return mediadb.Media{}, errNotFound(errors.New("remote media disabled"))
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Federation.Timeout)
	defer cancel()
	rem, err := s.fetcher.Download(ctx, localServer, ref.Origin, ref.MediaID)
	if err != nil {
		s.m.remoteFetches.WithLabelValues(fetchResult(err)).Inc()
		return mediadb.Media{}, fmt.Errorf("fetch remote media: %w", err)
	}
	defer rem.Body.Close()
	if rem.Size > s.cfg.Federation.MaxRemoteBytes {
		s.m.remoteFetches.WithLabelValues("too_large").Inc()
		return mediadb.Media{}, fmt.Errorf("remote media of %d bytes: %w", rem.Size, fedmedia.ErrTooLarge)
	}
	ct := rem.ContentType
	if _, _, err := mime.ParseMediaType(ct); err != nil || len(ct) > 255 {
		ct = "application/octet-stream"
	}
	key := mediastore.RemoteKey(ref.Origin, ref.MediaID)
	n, err := s.store.Put(ctx, ref.TenantID, key, rem.Body, rem.Size, ct)
	if err != nil {
		if errors.Is(err, fedmedia.ErrTooLarge) {
			s.m.remoteFetches.WithLabelValues("too_large").Inc()
			return mediadb.Media{}, fedmedia.ErrTooLarge
		}
		s.m.remoteFetches.WithLabelValues("error").Inc()
		return mediadb.Media{}, fmt.Errorf("store remote media: %w", err)
	}
	m := mediadb.Media{TenantID: ref.TenantID, Origin: ref.Origin, MediaID: ref.MediaID, ContentType: ct,
		UploadName: rem.FileName, Size: n, ObjectKey: key, CreatedAt: s.now()}
	if err := s.db.InsertRemote(ctx, m); err != nil {
		return mediadb.Media{}, err
	}
	s.m.remoteFetches.WithLabelValues("ok").Inc()
	// A concurrent fetch may have won: serve what is recorded.
	return s.db.Get(ctx, ref)
}

func fetchResult(err error) string {
	switch {
	case errors.Is(err, fedmedia.ErrNotFound):
		return "not_found"
	case errors.Is(err, fedmedia.ErrTooLarge):
		return "too_large"
	}
	return "error"
}

// timeoutParam reads timeout_ms (default 20 s, at most 60 s).
func timeoutParam(r *http.Request) (time.Duration, error) {
	v := r.URL.Query().Get("timeout_ms")
	if v == "" {
		return 20 * time.Second, nil
	}
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil || ms < 0 {
		return 0, errBadParam("timeout_ms must be a non-negative integer")
	}
	return min(time.Duration(ms)*time.Millisecond, 60*time.Second), nil
}

func (s *Server) download(w http.ResponseWriter, r *http.Request) error {
	id, err := s.authenticate(r)
	if err != nil {
		return err
	}
	timeout, err := timeoutParam(r)
	if err != nil {
		return err
	}
	m, err := s.lookup(r.Context(), id.TenantID, id.ServerName, r.PathValue("serverName"), r.PathValue("mediaId"), true, timeout)
	if err != nil {
		return err
	}
	return s.serveObject(w, r, m, r.PathValue("fileName"))
}

// serveObject streams the media object, honouring Range and conditional requests.
func (s *Server) serveObject(w http.ResponseWriter, r *http.Request, m mediadb.Media, fileName string) error {
	obj, err := s.store.Get(r.Context(), m.TenantID, m.ObjectKey)
	if err != nil {
		return err
	}
	defer obj.Close()
	if fileName == "" {
		fileName = m.UploadName
	}
	setMediaHeaders(w.Header(), m.ContentType, fileName)
	if r.Method == http.MethodGet && r.Header.Get("Range") == "" && r.Header.Get("If-Modified-Since") == "" &&
		r.Header.Get("If-None-Match") == "" && r.Header.Get("If-Range") == "" {
		// The common whole-body download: copy in large blocks (fewer syscalls than
		// ServeContent's 32 KiB) with memory bounded by one buffer per transfer.
		w.Header().Set("Accept-Ranges", "bytes")
		w.Header().Set("Last-Modified", obj.ModTime.UTC().Format(http.TimeFormat))
		w.Header().Set("Content-Length", strconv.FormatInt(obj.Size, 10))
		w.WriteHeader(http.StatusOK)
		buf := make([]byte, 256<<10)
		if _, err := io.CopyBuffer(writerOnly{w}, readerOnly{obj}, buf); err != nil {
			return fmt.Errorf("send media: %w", err)
		}
		return nil
	}
	http.ServeContent(w, r, "", obj.ModTime, obj)
	return nil
}

// writerOnly and readerOnly hide ReadFrom and WriteTo so io.CopyBuffer uses its buffer.
type writerOnly struct{ io.Writer }

type readerOnly struct{ io.Reader }

func (s *Server) mediaConfig(w http.ResponseWriter, r *http.Request) error {
	if _, err := s.authenticate(r); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"m.upload.size": s.cfg.MaxUploadBytes})
	return nil
}

type thumbRequest struct {
	width, height int
	method        string
}

func parseThumbRequest(r *http.Request) (thumbRequest, error) {
	q := r.URL.Query()
	w, errW := strconv.Atoi(q.Get("width"))
	h, errH := strconv.Atoi(q.Get("height"))
	if errW != nil || errH != nil || w < 1 || h < 1 || w > 10000 || h > 10000 {
		return thumbRequest{}, errBadParam("width and height must be positive integers")
	}
	method := q.Get("method")
	if method == "" {
		method = config.MethodScale
	}
	if method != config.MethodCrop && method != config.MethodScale {
		return thumbRequest{}, errBadParam("method must be crop or scale")
	}
	return thumbRequest{w, h, method}, nil
}

// pickSize chooses the configured size to serve: the smallest of the requested method at least
// as large as asked, else the largest of that method (any method if none is configured).
func pickSize(sizes []config.ThumbnailSize, want thumbRequest) config.ThumbnailSize {
	var cands []config.ThumbnailSize
	for _, s := range sizes {
		if s.Method == want.method {
			cands = append(cands, s)
		}
	}
	if len(cands) == 0 {
		cands = sizes
	}
	var best, largest *config.ThumbnailSize
	for i := range cands {
		c := &cands[i]
		if c.Width >= want.width && c.Height >= want.height && (best == nil || c.Width*c.Height < best.Width*best.Height) {
			best = c
		}
		if largest == nil || c.Width*c.Height > largest.Width*largest.Height {
			largest = c
		}
	}
	if best != nil {
		return *best
	}
	return *largest
}

func (s *Server) thumbnail(w http.ResponseWriter, r *http.Request) error {
	id, err := s.authenticate(r)
	if err != nil {
		return err
	}
	req, err := parseThumbRequest(r)
	if err != nil {
		return err
	}
	timeout, err := timeoutParam(r)
	if err != nil {
		return err
	}
	m, err := s.lookup(r.Context(), id.TenantID, id.ServerName, r.PathValue("serverName"), r.PathValue("mediaId"), true, timeout)
	if err != nil {
		return err
	}
	return s.serveThumbnail(w, r, m, req, nil)
}

// serveThumbnail serves a stored thumbnail or makes one. With write set, the bytes go through
// it (the federation multipart writer) instead of http.ServeContent.
func (s *Server) serveThumbnail(w http.ResponseWriter, r *http.Request, m mediadb.Media, req thumbRequest,
	write func(contentType string, body io.Reader) error) error {
	size := pickSize(s.cfg.Thumbnails.Sizes, req)
	ref := mediadb.Ref{TenantID: m.TenantID, Origin: m.Origin, MediaID: m.MediaID}
	t, err := s.db.GetThumbnail(r.Context(), ref, size.Width, size.Height, size.Method)
	if err == nil {
		obj, err := s.store.Get(r.Context(), m.TenantID, t.ObjectKey)
		if err == nil {
			defer obj.Close()
			if write != nil {
				return write(t.ContentType, obj)
			}
			setMediaHeaders(w.Header(), t.ContentType, "")
			http.ServeContent(w, r, "", obj.ModTime, obj)
			return nil
		}
		if !errors.Is(err, mediastore.ErrNotFound) {
			return err
		}
		// The row outlived its object: make the thumbnail again.
	} else if !errors.Is(err, mediadb.ErrNotFound) {
		return err
	}
	ct, data, err := s.generateThumbnail(r, m, ref, size)
	if err != nil {
		return err
	}
	if write != nil {
		return write(ct, bytes.NewReader(data))
	}
	setMediaHeaders(w.Header(), ct, "")
	http.ServeContent(w, r, "", s.now(), bytes.NewReader(data))
	return nil
}

func (s *Server) generateThumbnail(r *http.Request, m mediadb.Media, ref mediadb.Ref, size config.ThumbnailSize) (string, []byte, error) {
	ct, _, _ := mime.ParseMediaType(m.ContentType)
	if !thumbnail.SupportedContentType(ct) {
		return "", nil, matrixError(http.StatusBadRequest, "M_UNKNOWN", "Cannot thumbnail this content", nil)
	}
	if m.Size > s.cfg.Thumbnails.MaxSourceBytes {
		s.m.thumbnails.WithLabelValues("too_large").Inc()
		return "", nil, errTooLarge("Media is too large to thumbnail", nil)
	}
	obj, err := s.store.Get(r.Context(), m.TenantID, m.ObjectKey)
	if err != nil {
		return "", nil, err
	}
	defer obj.Close()
	var out bytes.Buffer
	res, err := s.thumbs.Generate(r.Context(), obj, size.Width, size.Height, size.Method, &out)
	switch {
	case errors.Is(err, thumbnail.ErrTooLarge):
		s.m.thumbnails.WithLabelValues("too_large").Inc()
		return "", nil, errTooLarge("Image is too large to thumbnail", err)
	case errors.Is(err, thumbnail.ErrUnsupported):
		s.m.thumbnails.WithLabelValues("unsupported").Inc()
		return "", nil, matrixError(http.StatusBadRequest, "M_UNKNOWN", "Cannot thumbnail this content", err)
	case err != nil:
		s.m.thumbnails.WithLabelValues("error").Inc()
		return "", nil, fmt.Errorf("thumbnail: %w", err)
	}
	s.m.thumbnails.WithLabelValues("ok").Inc()
	key := mediastore.ThumbnailKey(m.ObjectKey, size.Width, size.Height, size.Method)
	if _, err := s.store.Put(r.Context(), m.TenantID, key, bytes.NewReader(out.Bytes()), int64(out.Len()), res.ContentType); err != nil {
		return "", nil, fmt.Errorf("store thumbnail: %w", err)
	}
	err = s.db.InsertThumbnail(r.Context(), ref, mediadb.Thumbnail{
		Width: size.Width, Height: size.Height, Method: size.Method, ContentType: res.ContentType,
		Size: int64(out.Len()), ObjectKey: key,
	}, s.now())
	if err != nil {
		s.removeObjects(r, m.TenantID, key)
		if errors.Is(err, mediadb.ErrNotFound) {
			return "", nil, errNotFound(err) // deleted meanwhile
		}
		return "", nil, err
	}
	return res.ContentType, out.Bytes(), nil
}

// legacyTenant resolves the tenant of an unauthenticated request by its Host.
func (s *Server) legacyTenant(r *http.Request) (tenant, serverName string, err error) {
	t, err := s.auth.TenantByHost(r.Context(), requestHost(r))
	if err != nil {
		return "", "", fmt.Errorf("tenant by host: %w", err)
	}
	if !mediastore.ValidTenantID(t.TenantID) {
		return "", "", errNotFound(fmt.Errorf("homeserver named tenant %q", t.TenantID))
	}
	return t.TenantID, t.ServerName, nil
}

// legacyMedia finds media the unauthenticated endpoints may serve: created before the cut-off,
// never fetched anew from remote servers.
func (s *Server) legacyMedia(r *http.Request) (mediadb.Media, error) {
	tenant, serverName, err := s.legacyTenant(r)
	if err != nil {
		return mediadb.Media{}, err
	}
	m, err := s.lookup(r.Context(), tenant, serverName, r.PathValue("serverName"), r.PathValue("mediaId"), false, 0)
	if err != nil {
		return mediadb.Media{}, err
	}
	if !m.CreatedAt.Before(s.cfg.LegacyMediaBefore) {
		return mediadb.Media{}, errNotFound(errors.New("media newer than the authenticated-media cut-off"))
	}
	return m, nil
}

func (s *Server) legacyDownload(w http.ResponseWriter, r *http.Request) error {
	m, err := s.legacyMedia(r)
	if err != nil {
		return err
	}
	return s.serveObject(w, r, m, r.PathValue("fileName"))
}

func (s *Server) legacyThumbnail(w http.ResponseWriter, r *http.Request) error {
	req, err := parseThumbRequest(r)
	if err != nil {
		return err
	}
	m, err := s.legacyMedia(r)
	if err != nil {
		return err
	}
	return s.serveThumbnail(w, r, m, req, nil)
}

// federationMedia authenticates a federation request and finds local media of the tenant
// served on the request's Host.
func (s *Server) federationMedia(r *http.Request) (mediadb.Media, error) {
	switch {
	case s.verify != nil:
		if err := s.verify(r); err != nil {
			return mediadb.Media{}, matrixError(http.StatusUnauthorized, "M_UNAUTHORIZED", "Request not signed", err)
		}
	case !s.cfg.Federation.AcceptUnsignedRequests:
		return mediadb.Media{}, matrixError(http.StatusUnauthorized, "M_UNAUTHORIZED", "Federation media requests are not accepted", nil)
	}
	tenant, serverName, err := s.legacyTenant(r)
	if err != nil {
		return mediadb.Media{}, err
	}
	return s.lookup(r.Context(), tenant, serverName, serverName, r.PathValue("mediaId"), false, 0)
}

func (s *Server) federationDownload(w http.ResponseWriter, r *http.Request) error {
	m, err := s.federationMedia(r)
	if err != nil {
		return err
	}
	obj, err := s.store.Get(r.Context(), m.TenantID, m.ObjectKey)
	if err != nil {
		return err
	}
	defer obj.Close()
	return fedmedia.WriteDownload(w, m.ContentType, fedmedia.ContentDisposition(isInline(m.ContentType), m.UploadName), obj)
}

func (s *Server) federationThumbnail(w http.ResponseWriter, r *http.Request) error {
	req, err := parseThumbRequest(r)
	if err != nil {
		return err
	}
	m, err := s.federationMedia(r)
	if err != nil {
		return err
	}
	return s.serveThumbnail(w, r, m, req, func(ct string, body io.Reader) error {
		return fedmedia.WriteDownload(w, ct, "", body)
	})
}
