package process_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/atoll-matrix/atoll/homeserver/config"
	"github.com/atoll-matrix/atoll/homeserver/process"
	"github.com/atoll-matrix/atoll/internal/atolltest/pgtest"
	"github.com/atoll-matrix/atoll/internal/atolltest/shardtest"
)

// selfSigned writes a certificate for localhost and 127.0.0.1 and its key to dir, and returns
// a pool trusting it.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, roots *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	roots = x509.NewCertPool()
	roots.AddCert(cert)
	return certFile, keyFile, roots
}

// TestFederationListenerTLS: listen.federation serves the shard's handler over TLS (HTTP/2
// offered); the tenant is chosen by the Host header, as on the client listener.
func TestFederationListenerTLS(t *testing.T) {
	certFile, keyFile, roots := selfSigned(t, t.TempDir())
	s := shardtest.New(t, func(c *config.Config) {
		c.Listen.Federation = "127.0.0.1:0"
		c.TLS = config.TLS{CertFile: certFile, KeyFile: keyFile}
	})
	fedAddr := s.Process.FederationAddr
	if fedAddr == "" {
		t.Fatal("no federation listener address")
	}
	tn := s.CreateTenant(t, "fedtls")
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "localhost"}, ForceAttemptHTTP2: true}}
	get := func(host, path string) (int, map[string]any, *http.Response) {
		t.Helper()
		req, err := http.NewRequest("GET", "https://"+fedAddr+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = host
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("GET %s (Host %s): %v", path, host, err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		var out map[string]any
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatalf("GET %s: %d, not JSON: %q", path, resp.StatusCode, b)
		}
		return resp.StatusCode, out, resp
	}

	st, body, resp := get(tn.ServerName, "/_matrix/federation/v1/version")
	if st != http.StatusOK {
		t.Fatalf("version: %d %v", st, body)
	}
	if server, _ := body["server"].(map[string]any); server["name"] == nil {
		t.Fatalf("version body = %v", body)
	}
	if resp.TLS == nil || resp.ProtoMajor != 2 {
		t.Errorf("version answered over %s, TLS %v; want HTTP/2 over TLS", resp.Proto, resp.TLS != nil)
	}

	st, body, _ = get(tn.ServerName, "/_matrix/key/v2/server")
	if st != http.StatusOK || body["server_name"] != tn.ServerName {
		t.Fatalf("server keys for Host %s: %d %v", tn.ServerName, st, body)
	}
	if keys, _ := body["verify_keys"].(map[string]any); len(keys) == 0 {
		t.Fatalf("server keys without verify_keys: %v", body)
	}
	// The same Host with the listener's port, as a server whose name carries a port sends it.
	_, port, _ := net.SplitHostPort(fedAddr)
	st, body, _ = get(net.JoinHostPort(tn.ServerName, port), "/_matrix/key/v2/server")
	if st != http.StatusOK || body["server_name"] != tn.ServerName {
		t.Fatalf("server keys for Host %s:%s: %d %v", tn.ServerName, port, st, body)
	}

	st, body, _ = get("nobody.invalid", "/_matrix/key/v2/server")
	if st != http.StatusNotFound {
		t.Fatalf("server keys for an unknown Host: %d %v, want 404", st, body)
	}

	// The plain client listener still answers as before.
	req, _ := http.NewRequest("GET", s.ClientURL+"/_matrix/key/v2/server", nil)
	req.Host = tn.ServerName
	plain, err := s.HTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	plain.Body.Close()
	if plain.StatusCode != http.StatusOK {
		t.Fatalf("client listener: %d", plain.StatusCode)
	}
}

// TestFederationListenerBadCertificate: a certificate that does not load stops Listen with an
// error naming it, before any listener opens.
func TestFederationListenerBadCertificate(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "missing.pem")
	cfg := config.Default()
	cfg.Listen = config.Listen{Client: "127.0.0.1:0", Federation: "127.0.0.1:0"}
	cfg.TLS = config.TLS{CertFile: bad, KeyFile: bad}
	cfg.Database.URL = pgtest.URL(t)
	cfg.Database.MaxConns = 4
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := process.New(ctx, cfg, slog.New(slog.DiscardHandler), process.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Pool.Close)
	err = p.Listen()
	if err == nil || !strings.Contains(err.Error(), "federation listener certificate") {
		t.Fatalf("Listen = %v, want a certificate error", err)
	}
	if p.ClientAddr != "" || p.FederationAddr != "" {
		t.Fatalf("listeners opened before the certificate failed: client %q federation %q", p.ClientAddr, p.FederationAddr)
	}
}
