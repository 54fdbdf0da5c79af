package federation

import (
	"crypto/tls"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/atoll-matrix/atoll/homeserver/tenant"
)

// Transport carries federation requests, whose URLs are matrix://<server name>/<path>, to
// the server: tenants of this installation through the installation's own client listener
// (any shard serves any tenant); names in the static table to their URL (tests, private
// federations); every other name by the spec's discovery (well-known, SRV, port 8448) over
// HTTPS verified against the configured trust roots.
type Transport struct {
	registry *tenant.Registry
	localURL *url.URL
	static   map[string]*url.URL
	tlsBase  *tls.Config
	plain    http.RoundTripper

	mu    sync.Mutex
	bySNI map[string]*http.Transport
}

// NewTransport builds a transport. localURL is where this installation's shards listen;
// static maps server names to base URLs.
func NewTransport(registry *tenant.Registry, localURL string, static map[string]string, tlsConfig *tls.Config) (*Transport, error) {
	t := &Transport{registry: registry, static: map[string]*url.URL{}, tlsBase: tlsConfig, bySNI: map[string]*http.Transport{},
		plain: &http.Transport{MaxIdleConnsPerHost: 16, IdleConnTimeout: 90 * time.Second, ResponseHeaderTimeout: 60 * time.Second}}
	if localURL != "" {
		u, err := url.Parse(localURL)
		if err != nil {
			return nil, fmt.Errorf("federation local url: %w", err)
		}
		t.localURL = u
	}
	for name, raw := range static {
		u, err := url.Parse(raw)
		if err != nil || u.Scheme == "" || u.Host == "" {
			return nil, fmt.Errorf("federation address of %s: %q is not a URL", name, raw)
		}
		t.static[strings.ToLower(name)] = u
	}
	if t.tlsBase == nil {
		t.tlsBase = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	return t, nil
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	server := strings.ToLower(req.URL.Host)
	if base, ok := t.static[server]; ok {
		return t.plainTo(req, base, server)
	}
	if t.localURL != nil && t.registry != nil {
		if _, err := t.registry.ByHost(req.Context(), server); err == nil {
			return t.plainTo(req, t.localURL, server)
		}
	}
	results, err := fclient.ResolveServer(req.Context(), spec.ServerName(server))
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", server, err)
	}
	if len(results) == 0 {
		return nil, fmt.Errorf("no address found for %s", server)
	}
	var lastErr error
	for _, res := range results {
		out := req.Clone(req.Context())
		out.URL.Scheme = "https"
		out.URL.Host = res.Destination
		out.Host = string(res.Host)
		resp, err := t.tlsTransport(res.TLSServerName).RoundTrip(out)
		if err == nil {
			return resp, nil
		}
		lastErr = err
	}
	return nil, lastErr
}

func (t *Transport) plainTo(req *http.Request, base *url.URL, server string) (*http.Response, error) {
	out := req.Clone(req.Context())
	out.URL.Scheme = base.Scheme
	out.URL.Host = base.Host
	out.Host = server
	if base.Scheme == "https" {
		return t.tlsTransport(base.Hostname()).RoundTrip(out)
	}
	return t.plain.RoundTrip(out)
}

func (t *Transport) tlsTransport(sni string) *http.Transport {
	t.mu.Lock()
	defer t.mu.Unlock()
	tr := t.bySNI[sni]
	if tr == nil {
		cfg := t.tlsBase.Clone()
		cfg.ServerName = sni
		tr = &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 4,
			IdleConnTimeout: 90 * time.Second, ResponseHeaderTimeout: 60 * time.Second}
		t.bySNI[sni] = tr
	}
	return tr
}

// SetLocalURL sets where this installation's tenants are reached, once the listener is known.
func (t *Transport) SetLocalURL(raw string) {
	u, err := url.Parse(raw)
	if err == nil {
		t.localURL = u
	}
}
