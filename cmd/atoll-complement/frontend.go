package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// serverCertificate returns a certificate for serverName signed by the CA in caDir
// (ca.crt, ca.key), or self-signed when the CA is absent.
func serverCertificate(caDir, serverName string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: serverName},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	if ip := net.ParseIP(serverName); ip != nil {
		tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
	} else {
		host := serverName
		if h, _, err := net.SplitHostPort(serverName); err == nil {
			host = h
		}
		tmpl.DNSNames = append(tmpl.DNSNames, host)
	}
	parent, signer := tmpl, any(key)
	var chain [][]byte
	caCert, errCert := os.ReadFile(filepath.Join(caDir, "ca.crt"))
	caKey, errKey := os.ReadFile(filepath.Join(caDir, "ca.key"))
	switch {
	case errCert == nil && errKey == nil:
		ca, err := tls.X509KeyPair(caCert, caKey)
		if err != nil {
			return tls.Certificate{}, fmt.Errorf("load CA from %s: %w", caDir, err)
		}
		if ca.Leaf == nil {
			if ca.Leaf, err = x509.ParseCertificate(ca.Certificate[0]); err != nil {
				return tls.Certificate{}, fmt.Errorf("parse CA certificate: %w", err)
			}
		}
		parent, signer = ca.Leaf, ca.PrivateKey
		chain = ca.Certificate[:1]
	case errors.Is(errCert, os.ErrNotExist) && errors.Is(errKey, os.ErrNotExist):
		// Outside Complement: self-signed.
	default:
		return tls.Certificate{}, fmt.Errorf("read CA from %s: %w", caDir, errors.Join(errCert, errKey))
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("sign certificate for %s: %w", serverName, err)
	}
	return tls.Certificate{Certificate: append([][]byte{der}, chain...), PrivateKey: key}, nil
}

// frontend serves the container's public ports and forwards every request to the
// homeserver's client listener with Host set to the tenant's server name.
type frontend struct {
	log     *slog.Logger
	handler http.Handler
	cert    tls.Certificate
	servers []*http.Server
}

func newFrontend(log *slog.Logger, serverName, upstream, mediaUpstream string, cert tls.Certificate) (*frontend, error) {
	proxy := func(upstream string) (*httputil.ReverseProxy, error) {
		target, err := url.Parse(upstream)
		if err != nil {
			return nil, err
		}
		return &httputil.ReverseProxy{
			Rewrite: func(pr *httputil.ProxyRequest) {
				pr.SetURL(target)
				pr.Out.Host = serverName
				pr.SetXForwarded()
			},
			FlushInterval: -1,
			ErrorLog:      slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		}, nil
	}
	hs, err := proxy(upstream)
	if err != nil {
		return nil, err
	}
	f := &frontend{log: log, handler: hs, cert: cert}
	if mediaUpstream == "" {
		return f, nil
	}
	media, err := proxy(mediaUpstream)
	if err != nil {
		return nil, err
	}
	// The paths an ingress sends to the media sidecar. No ServeMux: it would clean and
	// redirect the odd paths Complement sends on purpose.
	f.handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, prefix := range mediaPrefixes {
			if strings.HasPrefix(r.URL.Path, prefix) {
				media.ServeHTTP(w, r)
				return
			}
		}
		hs.ServeHTTP(w, r)
	})
	return f, nil
}

// mediaPrefixes are the paths the media sidecar serves.
var mediaPrefixes = []string{"/_matrix/media/", "/_matrix/client/v1/media/", "/_matrix/federation/v1/media/"}

// listen opens both listeners and serves them until shutdown; serving errors arrive on
// the returned channel.
func (f *frontend) listen(ctx context.Context, clientAddr, federationAddr string) (<-chan error, error) {
	cl, err := net.Listen("tcp", clientAddr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", clientAddr, err)
	}
	fl, err := net.Listen("tcp", federationAddr)
	if err != nil {
		cl.Close()
		return nil, fmt.Errorf("listen on %s: %w", federationAddr, err)
	}
	fl = tls.NewListener(fl, &tls.Config{Certificates: []tls.Certificate{f.cert}, MinVersion: tls.VersionTLS12})
	errc := make(chan error, 2)
	for _, l := range []net.Listener{cl, fl} {
		srv := &http.Server{Handler: f.handler, ReadHeaderTimeout: 30 * time.Second,
			BaseContext: func(net.Listener) context.Context { return ctx }}
		f.servers = append(f.servers, srv)
		go func() {
			if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("serve %s: %w", l.Addr(), err)
			}
		}()
	}
	return errc, nil
}

func (f *frontend) shutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, s := range f.servers {
		_ = s.Shutdown(ctx)
	}
}
