package process

import (
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"
)

// mediaFederationPrefix is served by the media sidecar, not by the homeserver. In production
// the ingress routes it to the sidecar; requests that reach a shard directly (between tenants
// of this installation, through federation.local_url, or on listen.federation) are forwarded
// to the sidecar beside the shard, Host unchanged, so both paths serve the same answer.
const mediaFederationPrefix = "/_matrix/federation/v1/media/"

// mediaProxy forwards requests to the media sidecar at raw, keeping the Host (it names the
// tenant) and streaming answers as they come.
func mediaProxy(raw string) (http.Handler, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return nil, fmt.Errorf("media.url %q is not a URL", raw)
	}
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.Out.Host = pr.In.Host
			pr.SetXForwarded()
		},
		FlushInterval: -1,
	}, nil
}
