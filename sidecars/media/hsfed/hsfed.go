// Package hsfed lets the media sidecar speak signed federation through the homeserver, which
// holds every tenant's signing key and the key ring of other servers: the sidecar links no
// Matrix crypto. Client fetches remote media (a media.Fetcher) and verifies inbound X-Matrix
// requests (media.Deps.VerifyFederation).
//
// The contract (served by the homeserver's admin listener, authorised by the admin token):
//
//	GET  {base}/_atoll/internal/v1/federation/media/download?host=&server=&media_id=&max_bytes=
//	GET  {base}/_atoll/internal/v1/federation/media/thumbnail?...&width=&height=&method=
//	  -> 200 the remote server's multipart/mixed answer, streamed, with its Content-Type
//	  -> 404 M_NOT_FOUND (the remote server or the tenant has no such media), 413 M_TOO_LARGE,
//	     400 M_INVALID_PARAM, 502/504 M_UNKNOWN (remote server unreachable / too slow)
//	POST {base}/_atoll/internal/v1/federation/verify {"method","uri","host","authorization":[...]}
//	  -> 200 {"origin","tenant_id","server_name"} | 401 M_UNAUTHORIZED | 404 M_NOT_FOUND (host)
package hsfed

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/atoll-matrix/atoll/sidecars/media/fedmedia"
)

// ErrUnauthorized is an inbound federation request the homeserver did not verify.
var ErrUnauthorized = errors.New("federation request not verified")

// verifyTimeout bounds one verification (the homeserver may fetch the origin's keys).
const verifyTimeout = 30 * time.Second

// Options configure a Client.
type Options struct {
	BaseURL    string // the homeserver's admin listener
	AdminToken string
	// HTTPClient calls the homeserver; its timeout bounds a whole fetch, body included.
	HTTPClient *http.Client
	// LocationClient follows a Location part of a remote answer (an arbitrary URL: give it a
	// client that refuses private addresses). Nil refuses Location answers.
	LocationClient *http.Client
	// MaxBytes bounds remote media; the homeserver is asked for no more either.
	MaxBytes int64
}

// Client calls the homeserver's internal federation endpoints. It is safe for concurrent use.
type Client struct {
	o Options
}

// New returns a Client.
func New(o Options) *Client {
	o.BaseURL = strings.TrimRight(o.BaseURL, "/")
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{}
	}
	return &Client{o: o}
}

// Download fetches mediaID from serverName over federation signed as origin (the asking
// tenant's server name). Errors wrap fedmedia.ErrNotFound, ErrTooLarge or ErrUnavailable.
func (c *Client) Download(ctx context.Context, origin, serverName, mediaID string) (*fedmedia.Remote, error) {
	return c.fetch(ctx, "download", url.Values{"host": {origin}, "server": {serverName}, "media_id": {mediaID}})
}

// Thumbnail asks serverName for a thumbnail of mediaID, signed as origin; method is "crop",
// "scale" or "".
func (c *Client) Thumbnail(ctx context.Context, origin, serverName, mediaID string, width, height int, method string) (*fedmedia.Remote, error) {
	q := url.Values{"host": {origin}, "server": {serverName}, "media_id": {mediaID},
		"width": {strconv.Itoa(width)}, "height": {strconv.Itoa(height)}}
	if method != "" {
		q.Set("method", method)
	}
	return c.fetch(ctx, "thumbnail", q)
}

func (c *Client) fetch(ctx context.Context, kind string, q url.Values) (*fedmedia.Remote, error) {
	if c.o.MaxBytes > 0 {
		q.Set("max_bytes", strconv.FormatInt(c.o.MaxBytes, 10))
	}
	u := c.o.BaseURL + "/_atoll/internal/v1/federation/media/" + kind + "?" + q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", errors.Join(fedmedia.ErrUnavailable, err))
	}
	req.Header.Set("Authorization", "Bearer "+c.o.AdminToken)
	resp, err := c.o.HTTPClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch %s through the homeserver: %w", q.Get("server"), errors.Join(fedmedia.ErrUnavailable, err))
	}
	if resp.StatusCode == http.StatusRequestEntityTooLarge {
		resp.Body.Close()
		return nil, fmt.Errorf("fetch %s through the homeserver: %w", q.Get("server"), fedmedia.ErrTooLarge)
	}
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusNotFound {
		code := errCode(resp)
		return nil, fmt.Errorf("fetch %s through the homeserver: answer %d %s: %w", q.Get("server"), resp.StatusCode, code, fedmedia.ErrUnavailable)
	}
	r, err := fedmedia.ReadAnswer(ctx, resp, c.o.LocationClient, c.o.MaxBytes)
	if err != nil {
		return nil, fmt.Errorf("fetch %s through the homeserver: %w", q.Get("server"), err)
	}
	return r, nil
}

// errCode reads the errcode of a Matrix error answer and closes its body.
func errCode(resp *http.Response) string {
	defer resp.Body.Close()
	var me struct {
		ErrCode string `json:"errcode"`
	}
	_ = json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&me)
	return me.ErrCode
}

// Verify asks the homeserver whether r carries a valid X-Matrix signature of another server,
// addressed to the tenant r's Host names. It is media.Deps.VerifyFederation. Errors wrap
// ErrUnauthorized, or fedmedia.ErrUnavailable when the homeserver could not answer.
func (c *Client) Verify(r *http.Request) error {
	auth := r.Header.Values("Authorization")
	if len(auth) == 0 {
		return fmt.Errorf("no authorization: %w", ErrUnauthorized)
	}
	body, err := json.Marshal(map[string]any{"method": r.Method, "uri": r.URL.RequestURI(), "host": r.Host, "authorization": auth})
	if err != nil {
		return fmt.Errorf("encode verify request: %w", err)
	}
	ctx, cancel := context.WithTimeout(r.Context(), verifyTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.o.BaseURL+"/_atoll/internal/v1/federation/verify", bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("build verify request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+c.o.AdminToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.o.HTTPClient.Do(req)
	if err != nil {
		return fmt.Errorf("verify through the homeserver: %w", errors.Join(fedmedia.ErrUnavailable, err))
	}
	switch resp.StatusCode {
	case http.StatusOK:
		resp.Body.Close()
		return nil
	case http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound, http.StatusBadRequest:
		code := errCode(resp)
		if code == "M_UNKNOWN_TOKEN" || code == "M_MISSING_TOKEN" {
			// The homeserver refused the sidecar's admin token: a misconfiguration, not a
			// verdict on the request.
			return fmt.Errorf("verify through the homeserver: admin token refused: %w", fedmedia.ErrUnavailable)
		}
		return fmt.Errorf("homeserver answered %d %s: %w", resp.StatusCode, code, ErrUnauthorized)
	}
	resp.Body.Close()
	return fmt.Errorf("verify through the homeserver: answer %d: %w", resp.StatusCode, fedmedia.ErrUnavailable)
}
