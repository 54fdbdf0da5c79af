// Package preview fetches web pages for URL previews and extracts their OpenGraph data, over
// connections that refuse private, loopback, link-local, multicast and other special addresses
// at dial time (after DNS resolution, so a name pointing inside is refused too).
package preview

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"

	"golang.org/x/net/html"
)

var (
	// ErrForbiddenAddress is returned when a URL resolves to an address previews may not reach.
	ErrForbiddenAddress = errors.New("address not allowed for previews")
	// ErrUnsupported is returned for URLs and answers that cannot be previewed.
	ErrUnsupported = errors.New("cannot preview")
	// ErrTooLarge is returned when the answer exceeds the size limit.
	ErrTooLarge = errors.New("preview answer too large")
)

var forbiddenPrefixes = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("192.0.0.0/24"),
	netip.MustParsePrefix("192.0.2.0/24"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("198.51.100.0/24"),
	netip.MustParsePrefix("203.0.113.0/24"),
	netip.MustParsePrefix("240.0.0.0/4"),
	netip.MustParsePrefix("64:ff9b::/96"),
	netip.MustParsePrefix("64:ff9b:1::/48"),
	netip.MustParsePrefix("2001:db8::/32"),
	netip.MustParsePrefix("2002::/16"),
}

// Allowed reports whether previews may connect to ip.
func Allowed(ip netip.Addr) bool {
	ip = ip.Unmap()
	if !ip.IsValid() || ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsInterfaceLocalMulticast() || ip.IsMulticast() || ip.IsUnspecified() {
		return false
	}
	for _, p := range forbiddenPrefixes {
		if p.Contains(ip) {
			return false
		}
	}
	return true
}

// Dialer returns a dialer that refuses forbidden addresses unless allowPrivate (tests only).
func Dialer(timeout time.Duration, allowPrivate bool) *net.Dialer {
	d := &net.Dialer{Timeout: timeout}
	if !allowPrivate {
		d.Control = func(network, address string, _ syscall.RawConn) error {
			host, _, err := net.SplitHostPort(address)
			if err != nil {
				return fmt.Errorf("dial %s: %w", address, ErrForbiddenAddress)
			}
			ip, err := netip.ParseAddr(host)
			if err != nil || !Allowed(ip) {
				return fmt.Errorf("dial %s: %w", address, ErrForbiddenAddress)
			}
			return nil
		}
	}
	return d
}

// NewClient returns an HTTP client for fetching untrusted URLs: the guarded dialer, no proxy
// (a proxy would dial for us), at most 5 redirects, and an overall timeout.
func NewClient(timeout time.Duration, allowPrivate bool) *http.Client {
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           Dialer(timeout, allowPrivate).DialContext,
		TLSHandshakeTimeout:   timeout,
		ResponseHeaderTimeout: timeout,
		MaxIdleConns:          16,
		IdleConnTimeout:       30 * time.Second,
	}
	return &http.Client{
		Transport: tr,
		Timeout:   timeout,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 5 {
				return fmt.Errorf("too many redirects: %w", ErrUnsupported)
			}
			if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
				return fmt.Errorf("redirect to %s: %w", req.URL.Scheme, ErrUnsupported)
			}
			return nil
		},
	}
}

// Fetcher fetches pages.
type Fetcher struct {
	Client    *http.Client
	MaxBytes  int64
	UserAgent string
}

// Page is what a URL answered: OpenGraph data for HTML, or an image to be stored by the caller.
type Page struct {
	// OG holds og:* (and a few fallback) properties of an HTML page; og:image is absolute.
	OG map[string]string
	// Image is set when the URL itself is an image: its bytes (at most MaxBytes) and type.
	Image     []byte
	ImageType string
}

// CheckURL accepts absolute http(s) URLs only.
func CheckURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return nil, fmt.Errorf("url %q: %w", raw, ErrUnsupported)
	}
	return u, nil
}

// Fetch gets raw and reads a page or an image.
func (f *Fetcher) Fetch(ctx context.Context, raw string) (*Page, error) {
	u, err := CheckURL(raw)
	if err != nil {
		return nil, err
	}
	body, ct, final, err := f.get(ctx, u.String())
	if err != nil {
		return nil, err
	}
	mt, params, _ := mime.ParseMediaType(ct)
	switch {
	case strings.HasPrefix(mt, "image/"):
		return &Page{Image: body, ImageType: mt}, nil
	case mt == "text/html" || mt == "application/xhtml+xml":
		_ = params // charset: x/net/html reads UTF-8; pages in other charsets preview imperfectly
		return &Page{OG: ParseHTML(strings.NewReader(string(body)), final)}, nil
	}
	return nil, fmt.Errorf("content type %q: %w", mt, ErrUnsupported)
}

// FetchImage gets an image URL found on a page.
func (f *Fetcher) FetchImage(ctx context.Context, raw string) ([]byte, string, error) {
	u, err := CheckURL(raw)
	if err != nil {
		return nil, "", err
	}
	body, ct, _, err := f.get(ctx, u.String())
	if err != nil {
		return nil, "", err
	}
	mt, _, _ := mime.ParseMediaType(ct)
	if !strings.HasPrefix(mt, "image/") {
		return nil, "", fmt.Errorf("og:image type %q: %w", mt, ErrUnsupported)
	}
	return body, mt, nil
}

func (f *Fetcher) get(ctx context.Context, u string) ([]byte, string, *url.URL, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, "", nil, fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("User-Agent", f.UserAgent)
	req.Header.Set("Accept", "text/html, image/*;q=0.9, */*;q=0.1")
	resp, err := f.Client.Do(req)
	if err != nil {
		return nil, "", nil, fmt.Errorf("fetch %s: %w", u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, "", nil, fmt.Errorf("fetch %s: status %d: %w", u, resp.StatusCode, ErrUnsupported)
	}
	if resp.ContentLength > f.MaxBytes {
		return nil, "", nil, ErrTooLarge
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, f.MaxBytes+1))
	if err != nil {
		return nil, "", nil, fmt.Errorf("read %s: %w", u, err)
	}
	if int64(len(body)) > f.MaxBytes {
		return nil, "", nil, ErrTooLarge
	}
	return body, resp.Header.Get("Content-Type"), resp.Request.URL, nil
}

// ParseHTML extracts og:* meta properties, falling back to <title> and the description meta
// for og:title and og:description. Relative og:image and og:url are resolved against base.
func ParseHTML(r io.Reader, base *url.URL) map[string]string {
	og := map[string]string{}
	var title, description string
	z := html.NewTokenizer(r)
	inTitle := false
	for {
		tt := z.Next()
		switch tt {
		case html.ErrorToken:
			return finish(og, title, description, base)
		case html.StartTagToken, html.SelfClosingTagToken:
			name, hasAttr := z.TagName()
			switch string(name) {
			case "title":
				inTitle = tt == html.StartTagToken
			case "meta":
				var prop, content, metaName string
				for hasAttr {
					var k, v []byte
					k, v, hasAttr = z.TagAttr()
					switch string(k) {
					case "property":
						prop = string(v)
					case "name":
						metaName = string(v)
					case "content":
						content = string(v)
					}
				}
				if prop == "" && strings.HasPrefix(metaName, "og:") {
					prop = metaName // some sites use name= for og tags
				}
				if strings.HasPrefix(prop, "og:") && len(og) < 64 && len(content) <= 4096 {
					if _, dup := og[prop]; !dup {
						og[prop] = content
					}
				}
				if metaName == "description" && description == "" {
					description = content
				}
			case "body":
				// OpenGraph lives in <head>; stop at the body for speed, keeping a title seen.
				if len(og) > 0 {
					return finish(og, title, description, base)
				}
			}
		case html.TextToken:
			if inTitle && title == "" {
				title = strings.TrimSpace(string(z.Text()))
			}
		case html.EndTagToken:
			if name, _ := z.TagName(); string(name) == "title" {
				inTitle = false
			}
		}
	}
}

func finish(og map[string]string, title, description string, base *url.URL) map[string]string {
	if og["og:title"] == "" && title != "" {
		og["og:title"] = title
	}
	if og["og:description"] == "" && description != "" {
		og["og:description"] = description
	}
	for _, k := range []string{"og:image", "og:url"} {
		if v, ok := og[k]; ok && base != nil {
			if ref, err := url.Parse(v); err == nil {
				og[k] = base.ResolveReference(ref).String()
			} else {
				delete(og, k)
			}
		}
	}
	return og
}
