// Package safedial builds HTTP clients for sending to push endpoints that
// users choose: only hosts on an allow-list, never private, loopback,
// link-local or otherwise non-public addresses (checked on every IP the
// dialer connects to, so DNS rebinding can't slip through), no proxies and
// no redirects.
package safedial

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"path"
	"strings"
	"syscall"
	"time"
)

// ErrHostNotAllowed means the endpoint's host is not on the allow-list.
var ErrHostNotAllowed = errors.New("endpoint host not allowed")

// BlockedAddressError is returned when a dial would reach a non-public IP.
type BlockedAddressError struct {
	Addr netip.Addr
}

func (e *BlockedAddressError) Error() string {
	return fmt.Sprintf("refusing to connect to non-public address %s", e.Addr)
}

// AllowList matches endpoint hosts against globs (path.Match syntax).
type AllowList struct {
	globs []string
}

// NewAllowList returns an allow-list of host globs, compared case-insensitively.
func NewAllowList(globs []string) *AllowList {
	l := &AllowList{}
	for _, g := range globs {
		l.globs = append(l.globs, strings.ToLower(g))
	}
	return l
}

// CheckURL parses raw and returns it if it is an https (or, when
// allowHTTP, http) URL whose host is on the list.
func (l *AllowList) CheckURL(raw string, allowHTTP bool) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("parse endpoint: %w", err)
	}
	if u.Scheme != "https" && !(allowHTTP && u.Scheme == "http") {
		return nil, fmt.Errorf("endpoint scheme %q: %w", u.Scheme, ErrHostNotAllowed)
	}
	if u.User != nil {
		return nil, fmt.Errorf("endpoint with user info: %w", ErrHostNotAllowed)
	}
	host := strings.ToLower(u.Hostname())
	if host == "" {
		return nil, fmt.Errorf("endpoint without host: %w", ErrHostNotAllowed)
	}
	for _, g := range l.globs {
		if ok, _ := path.Match(g, host); ok {
			return u, nil
		}
	}
	return nil, fmt.Errorf("endpoint host %q: %w", host, ErrHostNotAllowed)
}

// Public reports whether a is a globally routable unicast address.
func Public(a netip.Addr) bool {
	a = a.Unmap()
	if !a.IsValid() || a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() ||
		a.IsLinkLocalMulticast() || a.IsInterfaceLocalMulticast() || a.IsMulticast() || a.IsUnspecified() {
		return false
	}
	for _, p := range nonPublic {
		if p.Contains(a) {
			return false
		}
	}
	return true
}

var nonPublic = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),       // "this" network
	netip.MustParsePrefix("100.64.0.0/10"),   // carrier-grade NAT
	netip.MustParsePrefix("192.0.0.0/24"),    // IETF protocol assignments
	netip.MustParsePrefix("192.0.2.0/24"),    // TEST-NET-1
	netip.MustParsePrefix("198.18.0.0/15"),   // benchmarking
	netip.MustParsePrefix("198.51.100.0/24"), // TEST-NET-2
	netip.MustParsePrefix("203.0.113.0/24"),  // TEST-NET-3
	netip.MustParsePrefix("240.0.0.0/4"),     // reserved, broadcast
	netip.MustParsePrefix("64:ff9b::/96"),    // NAT64 can reach private v4
	netip.MustParsePrefix("64:ff9b:1::/48"),  // local-use NAT64
	netip.MustParsePrefix("2001:db8::/32"),   // documentation
	netip.MustParsePrefix("2002::/16"),       // 6to4 embeds arbitrary v4
	netip.MustParsePrefix("fec0::/10"),       // site-local (deprecated)
}

// control refuses connections to non-public addresses; the dialer calls it
// for every resolved address it tries.
func control(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("parse dial address %q: %w", address, err)
	}
	if !Public(ap.Addr()) {
		return &BlockedAddressError{Addr: ap.Addr()}
	}
	return nil
}

// Options for NewClient.
type Options struct {
	// AllowPrivate disables the address check (tests only).
	AllowPrivate bool
	// TLS, if set, is the client's TLS configuration (tests: trusted roots).
	TLS *tls.Config
	// MaxConnsPerHost caps connections to one push service (0: unlimited).
	MaxConnsPerHost int
}

// NewClient returns an HTTP client that dials only public addresses (unless
// opts.AllowPrivate), ignores proxy environment variables and never follows
// redirects. Requests are bounded by their context.
func NewClient(opts Options) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	if !opts.AllowPrivate {
		d.Control = control
	}
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           d.DialContext,
		TLSClientConfig:       opts.TLS,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   16,
		MaxConnsPerHost:       opts.MaxConnsPerHost,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   5 * time.Second,
		ResponseHeaderTimeout: 10 * time.Second,
	}
	return &http.Client{
		Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// IsBlocked reports whether err came from a refused non-public address or
// a host off the allow-list.
func IsBlocked(err error) bool {
	var b *BlockedAddressError
	return errors.As(err, &b) || errors.Is(err, ErrHostNotAllowed)
}

// StripURL removes the request URL from an http.Client error: push
// endpoint URLs are credentials and must not reach logs.
func StripURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s: %w", ue.Op, ue.Err)
	}
	return err
}
