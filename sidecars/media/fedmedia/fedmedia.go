// Package fedmedia speaks the federation side of the content repository
// (/_matrix/federation/v1/media/download): it writes the multipart/mixed answer (a JSON metadata
// part, then the file) and fetches media from other servers, reading such answers as a stream.
//
// X-Matrix request signing and server discovery are not done here: HTTPFetcher takes a base-URL
// resolver and a request signer as hooks, and ReadAnswer reads a federation media answer that
// another component fetched (the homeserver, which signs: see sidecars/media/hsfed).
package fedmedia

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
)

var (
	// ErrNotFound is returned when the remote server does not have the media.
	ErrNotFound = errors.New("remote media not found")
	// ErrTooLarge is returned when remote media exceeds the size limit.
	ErrTooLarge = errors.New("remote media too large")
	// ErrUnavailable wraps every other failure to fetch remote media.
	ErrUnavailable = errors.New("remote media unavailable")
)

// Remote is remote media being read. Close Body when done.
type Remote struct {
	ContentType string
	FileName    string
	Size        int64 // -1 when unknown
	Body        io.ReadCloser
}

// WriteDownload answers a federation download request: a multipart/mixed body holding the
// (empty) JSON metadata object and then the file, streamed from body.
func WriteDownload(w http.ResponseWriter, contentType, disposition string, body io.Reader) error {
	mw := multipart.NewWriter(w)
	var b [16]byte
	_, _ = rand.Read(b[:])
	if err := mw.SetBoundary(hex.EncodeToString(b[:])); err != nil {
		return fmt.Errorf("set boundary: %w", err)
	}
	w.Header().Set("Content-Type", "multipart/mixed; boundary="+mw.Boundary())
	w.WriteHeader(http.StatusOK)
	meta, err := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"application/json"}})
	if err != nil {
		return fmt.Errorf("write metadata part: %w", err)
	}
	if _, err := meta.Write([]byte("{}")); err != nil {
		return fmt.Errorf("write metadata part: %w", err)
	}
	h := textproto.MIMEHeader{"Content-Type": {contentType}}
	if disposition != "" {
		h.Set("Content-Disposition", disposition)
	}
	file, err := mw.CreatePart(h)
	if err != nil {
		return fmt.Errorf("write file part: %w", err)
	}
	if _, err := io.Copy(file, body); err != nil {
		return fmt.Errorf("write file part: %w", err)
	}
	if err := mw.Close(); err != nil {
		return fmt.Errorf("close multipart: %w", err)
	}
	return nil
}

// HTTPFetcher fetches remote media over HTTP(S).
type HTTPFetcher struct {
	// Client makes the federation request.
	Client *http.Client
	// LocationClient follows a Location part (an arbitrary URL: give it a client that refuses
	// private addresses). Nil refuses Location answers.
	LocationClient *http.Client
	// BaseURL resolves a server name to the base URL of its federation API. Nil uses
	// https://<server name>, which is not full server discovery (.well-known, SRV).
	BaseURL func(ctx context.Context, serverName string) (string, error)
	// Sign adds authentication (X-Matrix) to the request, from origin (the asking tenant's
	// server name) to destination. Nil sends it unsigned, which servers that check signatures
	// refuse.
	Sign func(req *http.Request, origin, destination string) error
	// MaxBytes bounds the media read.
	MaxBytes int64
}

// Download fetches mediaID from serverName's federation media API on behalf of origin.
func (f *HTTPFetcher) Download(ctx context.Context, origin, serverName, mediaID string) (*Remote, error) {
	base := "https://" + serverName
	if f.BaseURL != nil {
		var err error
		if base, err = f.BaseURL(ctx, serverName); err != nil {
			return nil, fmt.Errorf("resolve %s: %w", serverName, errors.Join(ErrUnavailable, err))
		}
	}
	u := strings.TrimRight(base, "/") + "/_matrix/federation/v1/media/download/" + url.PathEscape(mediaID)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", errors.Join(ErrUnavailable, err))
	}
	if f.Sign != nil {
		if err := f.Sign(req, origin, serverName); err != nil {
			return nil, fmt.Errorf("sign request: %w", errors.Join(ErrUnavailable, err))
		}
	}
	resp, err := f.Client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch from %s: %w", serverName, errors.Join(ErrUnavailable, err))
	}
	r, err := ReadAnswer(ctx, resp, f.LocationClient, f.MaxBytes)
	if err != nil {
		return nil, fmt.Errorf("fetch from %s: %w", serverName, err)
	}
	return r, nil
}

// ReadAnswer reads a federation media answer: 404 is ErrNotFound, other non-200 answers are
// ErrUnavailable; a multipart/mixed body yields its file part, read as a stream bounded by
// maxBytes (a Location part is followed with locationClient; nil refuses it). On error the
// body is closed; otherwise closing the Remote's Body closes it.
func ReadAnswer(ctx context.Context, resp *http.Response, locationClient *http.Client, maxBytes int64) (*Remote, error) {
	f := &HTTPFetcher{LocationClient: locationClient, MaxBytes: maxBytes}
	r, err := f.read(ctx, resp)
	if err != nil {
		resp.Body.Close()
		return nil, err
	}
	return r, nil
}

func (f *HTTPFetcher) read(ctx context.Context, resp *http.Response) (*Remote, error) {
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return nil, ErrNotFound
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("answer %d: %w", resp.StatusCode, ErrUnavailable)
	}
	mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/mixed" || params["boundary"] == "" {
		return nil, fmt.Errorf("answer is %q, not multipart/mixed: %w", resp.Header.Get("Content-Type"), ErrUnavailable)
	}
	mr := multipart.NewReader(resp.Body, params["boundary"])
	meta, err := mr.NextPart()
	if err != nil {
		return nil, fmt.Errorf("read metadata part: %w", errors.Join(ErrUnavailable, err))
	}
	var m map[string]any
	if err := json.NewDecoder(io.LimitReader(meta, 64<<10)).Decode(&m); err != nil {
		return nil, fmt.Errorf("decode metadata part: %w", errors.Join(ErrUnavailable, err))
	}
	file, err := mr.NextPart()
	if err != nil {
		return nil, fmt.Errorf("read file part: %w", errors.Join(ErrUnavailable, err))
	}
	if loc := file.Header.Get("Location"); loc != "" {
		resp.Body.Close()
		return f.follow(ctx, loc)
	}
	r := &Remote{
		ContentType: file.Header.Get("Content-Type"),
		FileName:    dispositionFileName(file.Header.Get("Content-Disposition")),
		Size:        -1,
		Body:        &limitedBody{r: file, closer: resp.Body, left: f.MaxBytes},
	}
	return r, nil
}

func (f *HTTPFetcher) follow(ctx context.Context, loc string) (*Remote, error) {
	if f.LocationClient == nil {
		return nil, fmt.Errorf("location answers not accepted: %w", ErrUnavailable)
	}
	u, err := url.Parse(loc)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") {
		return nil, fmt.Errorf("bad location %q: %w", loc, ErrUnavailable)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("build location request: %w", errors.Join(ErrUnavailable, err))
	}
	resp, err := f.LocationClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("follow location: %w", errors.Join(ErrUnavailable, err))
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		if resp.StatusCode == http.StatusNotFound {
			return nil, ErrNotFound
		}
		return nil, fmt.Errorf("location answered %d: %w", resp.StatusCode, ErrUnavailable)
	}
	size := resp.ContentLength
	if size > f.MaxBytes {
		resp.Body.Close()
		return nil, ErrTooLarge
	}
	return &Remote{
		ContentType: resp.Header.Get("Content-Type"),
		FileName:    dispositionFileName(resp.Header.Get("Content-Disposition")),
		Size:        size,
		Body:        &limitedBody{r: resp.Body, closer: resp.Body, left: f.MaxBytes},
	}, nil
}

func dispositionFileName(d string) string {
	if d == "" {
		return ""
	}
	_, params, err := mime.ParseMediaType(d)
	if err != nil {
		return ""
	}
	return params["filename"]
}

// limitedBody fails with ErrTooLarge once more than left bytes were read.
type limitedBody struct {
	r      io.Reader
	closer io.Closer
	left   int64
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		// Anything more than the limit is an error; exactly the limit is fine.
		var one [1]byte
		if n, _ := b.r.Read(one[:]); n > 0 {
			return 0, ErrTooLarge
		}
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	return n, err
}

func (b *limitedBody) Close() error { return b.closer.Close() }

// ContentDisposition renders an RFC 6266 header value: inline or attachment, with the file name
// as a quoted ASCII fallback and, when needed, an RFC 8187 filename* parameter.
func ContentDisposition(inline bool, fileName string) string {
	kind := "attachment"
	if inline {
		kind = "inline"
	}
	if fileName == "" {
		return kind
	}
	ascii := true
	var fallback strings.Builder
	for _, r := range fileName {
		switch {
		case r < 0x20 || r == 0x7f:
			ascii = false
			fallback.WriteByte('_')
		case r > 0x7e:
			ascii = false
			fallback.WriteByte('_')
		case r == '"' || r == '\\':
			fallback.WriteByte('\\')
			fallback.WriteRune(r)
		default:
			fallback.WriteRune(r)
		}
	}
	v := kind + `; filename="` + fallback.String() + `"`
	if !ascii {
		v += "; filename*=utf-8''" + rfc8187Escape(fileName)
	}
	return v
}

func rfc8187Escape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$&+-.^_`|~", c) >= 0 {
			b.WriteByte(c)
			continue
		}
		b.WriteString("%" + strings.ToUpper(strconv.FormatInt(int64(c)|0x100, 16)[1:]))
	}
	return b.String()
}
