package adminapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/atoll-matrix/atoll/homeserver/clientapi"
	"github.com/atoll-matrix/atoll/homeserver/rooms"
	"github.com/atoll-matrix/atoll/internal/mxhttp"
)

// Federation is what the internal federation endpoints need of the federation server: a
// client signing as a tenant, and the key ring verifying other servers' signatures.
type Federation interface {
	Client(t *rooms.Host) fclient.FederationClient
	KeyRing() *gomatrixserverlib.KeyRing
}

const (
	// maxRemoteMediaBytes bounds media the media sidecar fetches through the homeserver; the
	// sidecar asks for less with max_bytes (its federation.max_remote_bytes).
	maxRemoteMediaBytes = 1 << 30
	// remoteMediaTimeout bounds one remote media fetch, body included.
	remoteMediaTimeout = 2 * time.Minute
)

// httpDoer is the part of the federation client that sends a prepared request and returns the
// response unread. gomatrixserverlib's client has it but its FederationClient interface does
// not list it.
type httpDoer interface {
	DoHTTPRequest(ctx context.Context, req *http.Request) (*http.Response, error)
}

// federationMedia fetches media from another server for the tenant named by host, over signed
// federation, and streams the remote answer (multipart/mixed) back to the media sidecar.
//
//	GET /_atoll/internal/v1/federation/media/download?host=&server=&media_id=[&max_bytes=]
//	GET /_atoll/internal/v1/federation/media/thumbnail?host=&server=&media_id=&width=&height=[&method=][&max_bytes=]
func (s *Server) federationMedia(thumbnail bool) mxhttp.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if s.fed == nil {
			return mxhttp.Unrecognized(http.StatusNotFound, "federation is not available on this homeserver")
		}
		q := r.URL.Query()
		t, err := s.resolveHost(r.Context(), q.Get("host"))
		if err != nil {
			return err
		}
		server := spec.ServerName(strings.ToLower(q.Get("server")))
		if _, _, ok := spec.ParseAndValidateServerName(server); !ok {
			return mxhttp.InvalidParam("server is not a server name")
		}
		if server == t.ServerName {
			return mxhttp.InvalidParam("server is the tenant's own server name")
		}
		mediaID := q.Get("media_id")
		if !validMediaID(mediaID) {
			return mxhttp.InvalidParam("media_id is not a media ID")
		}
		limit := int64(maxRemoteMediaBytes)
		if v := q.Get("max_bytes"); v != "" {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n <= 0 {
				return mxhttp.InvalidParam("max_bytes must be a positive integer")
			}
			limit = min(limit, n)
		}
		ctx, cancel := context.WithTimeout(r.Context(), remoteMediaTimeout)
		defer cancel()
		client := s.fed.Client(t.Host)
		var resp *http.Response
		if thumbnail {
			resp, err = s.remoteThumbnail(ctx, client, t.Host, server, mediaID, q)
		} else {
			resp, err = client.DownloadMedia(ctx, t.ServerName, server, mediaID)
		}
		if err != nil {
			var me *mxhttp.Error
			if errors.As(err, &me) {
				return me
			}
			return remoteUnavailable(ctx, server, err)
		}
		defer resp.Body.Close()
		switch {
		case resp.StatusCode == http.StatusNotFound:
			return mxhttp.NotFound("the remote server does not have this media")
		case resp.StatusCode != http.StatusOK:
			return &mxhttp.Error{Status: http.StatusBadGateway,
				Body: spec.MatrixError{ErrCode: spec.ErrorUnknown, Err: fmt.Sprintf("the remote server answered %d", resp.StatusCode)},
				Err:  fmt.Errorf("remote media from %s: status %d", server, resp.StatusCode)}
		case resp.ContentLength > limit:
			return mxhttp.TooLarge("remote media is larger than %d bytes", limit)
		}
		w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
		if resp.ContentLength >= 0 {
			w.Header().Set("Content-Length", strconv.FormatInt(resp.ContentLength, 10))
		}
		w.WriteHeader(http.StatusOK)
		// The multipart framing is counted too: a little slack over the media limit.
		n, err := io.Copy(w, io.LimitReader(resp.Body, limit+64<<10))
		if err != nil {
			return fmt.Errorf("stream remote media from %s: %w", server, err)
		}
		if n > limit {
			// Headers are out: the answer ends without its closing boundary, which the
			// sidecar reads as a failed fetch.
			return fmt.Errorf("remote media from %s: more than %d bytes", server, limit)
		}
		return nil
	}
}

// remoteThumbnail asks server for a thumbnail, signed as the tenant.
func (s *Server) remoteThumbnail(ctx context.Context, client fclient.FederationClient, t *rooms.Host, server spec.ServerName, mediaID string, q url.Values) (*http.Response, error) {
	params := url.Values{}
	for _, k := range []string{"width", "height"} {
		v := q.Get(k)
		if n, err := strconv.Atoi(v); err != nil || n <= 0 || n > 10000 {
			return nil, mxhttp.InvalidParam("%s must be a positive integer", k)
		}
		params.Set(k, v)
	}
	switch m := q.Get("method"); m {
	case "":
	case "crop", "scale":
		params.Set("method", m)
	default:
		return nil, mxhttp.InvalidParam("method must be crop or scale")
	}
	doer, ok := client.(httpDoer)
	if !ok {
		return nil, errors.New("federation client cannot send raw requests")
	}
	fr := fclient.NewFederationRequest(http.MethodGet, t.ServerName, server,
		"/_matrix/federation/v1/media/thumbnail/"+url.PathEscape(mediaID)+"?"+params.Encode())
	if err := fr.Sign(t.ServerName, t.KeyID, t.Key); err != nil {
		return nil, fmt.Errorf("sign thumbnail request: %w", err)
	}
	req, err := fr.HTTPRequest()
	if err != nil {
		return nil, fmt.Errorf("build thumbnail request: %w", err)
	}
	return doer.DoHTTPRequest(ctx, req)
}

func remoteUnavailable(ctx context.Context, server spec.ServerName, err error) error {
	status := http.StatusBadGateway
	msg := "the remote server could not be reached"
	if errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
		status, msg = http.StatusGatewayTimeout, "the remote server did not answer in time"
	}
	return &mxhttp.Error{Status: status, Body: spec.MatrixError{ErrCode: spec.ErrorUnknown, Err: msg},
		Err: fmt.Errorf("remote media from %s: %w", server, err)}
}

// validMediaID accepts the media IDs the spec allows: [A-Za-z0-9_-]+.
func validMediaID(id string) bool {
	if id == "" || len(id) > 255 {
		return false
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// verifyRequest is the body of /_atoll/internal/v1/federation/verify: an inbound federation
// request as the media sidecar received it (federation media requests have no body).
type verifyRequest struct {
	Method        string   `json:"method"`
	URI           string   `json:"uri"`  // request URI: path and query
	Host          string   `json:"host"` // the Host it was sent to: names the destination tenant
	Authorization []string `json:"authorization"`
}

// federationVerify checks the X-Matrix signature of a request the media sidecar received:
// 200 {"origin"} when it is signed by a server for the tenant named by host, 401
// M_UNAUTHORIZED otherwise.
func (s *Server) federationVerify(w http.ResponseWriter, r *http.Request) error {
	if s.fed == nil {
		return mxhttp.Unrecognized(http.StatusNotFound, "federation is not available on this homeserver")
	}
	var req verifyRequest
	if err := mxhttp.DecodeJSON(r, &req); err != nil {
		return err
	}
	if req.Method == "" || !strings.HasPrefix(req.URI, "/") {
		return mxhttp.InvalidParam("method and uri (a request URI starting with /) are required")
	}
	t, err := s.resolveHost(r.Context(), req.Host)
	if err != nil {
		return err
	}
	in, err := http.NewRequestWithContext(r.Context(), req.Method, req.URI, http.NoBody)
	if err != nil {
		return mxhttp.InvalidParam("method or uri is invalid")
	}
	in.Host = req.Host
	for _, a := range req.Authorization {
		in.Header.Add("Authorization", a)
	}
	unauthorized := func(msg string) error {
		return mxhttp.Errorf(http.StatusUnauthorized, spec.MatrixError{ErrCode: "M_UNAUTHORIZED", Err: msg})
	}
	if len(req.Authorization) == 0 {
		return unauthorized("missing X-Matrix authorization")
	}
	fr, resp := fclient.VerifyHTTPRequest(in, time.Now(), t.ServerName, func(n spec.ServerName) bool { return n == t.ServerName }, s.fed.KeyRing())
	if fr == nil {
		if resp.Code == http.StatusUnauthorized || resp.Code == http.StatusBadRequest {
			msg := "invalid X-Matrix authorization"
			if m, ok := resp.JSON.(map[string]any); ok {
				if e, ok := m["error"].(string); ok {
					msg = e
				}
			}
			return unauthorized(msg)
		}
		return fmt.Errorf("verify federation request: %d %v", resp.Code, resp.JSON)
	}
	if fr.Origin() == t.ServerName {
		return mxhttp.Forbidden("a server does not federate with itself")
	}
	return mxhttp.JSON(w, http.StatusOK, map[string]string{"origin": string(fr.Origin()), "tenant_id": t.TenantID, "server_name": string(t.ServerName)})
}

// resolveHost finds the tenant served at host, with or without a port.
func (s *Server) resolveHost(ctx context.Context, host string) (*clientapi.Tenant, error) {
	host = strings.ToLower(host)
	if host == "" {
		return nil, mxhttp.MissingParam("host is required")
	}
	t, err := s.tenants.Resolve(ctx, host)
	if err == nil {
		return t, nil
	}
	if h, _, splitErr := net.SplitHostPort(host); splitErr == nil {
		t, err = s.tenants.Resolve(ctx, h)
	}
	if err != nil {
		return nil, resolveErr(err)
	}
	return t, nil
}
