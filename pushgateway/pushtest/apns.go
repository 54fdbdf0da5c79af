package pushtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/atoll-matrix/atoll/pushgateway/config"
)

// APNsRequest is a notification the fake APNs accepted for verification.
type APNsRequest struct {
	Token   string // hex device token from the path
	Header  http.Header
	Payload map[string]any
}

// APNs is a fake Apple Push Notification service: an HTTP/2 TLS server
// that checks the path, the apns-* headers and the ES256 provider token
// against its own key.
type APNs struct {
	*script
	URL     string
	CAFile  string // PEM of the server certificate, for config ca_file
	KeyFile string // the .p8 the gateway signs with
	KeyID   string
	TeamID  string
	Topic   string

	// CertFile and CertKeyFile are a client certificate the server
	// requires instead of a provider token (NewAPNsCertAuth).
	CertFile    string
	CertKeyFile string

	t   testing.TB
	pub *ecdsa.PublicKey

	mu       sync.Mutex
	received []APNsRequest
	jwts     map[string]bool
}

// NewAPNs starts a fake APNs for t using token authentication.
func NewAPNs(t testing.TB) *APNs {
	t.Helper()
	return newAPNs(t, false)
}

// NewAPNsCertAuth starts a fake APNs that requires the TLS client
// certificate in CertFile instead of provider tokens.
func NewAPNsCertAuth(t testing.TB) *APNs {
	t.Helper()
	return newAPNs(t, true)
}

func newAPNs(t testing.TB, certAuth bool) *APNs {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	f := &APNs{
		script:  newScript(),
		KeyFile: filepath.Join(dir, "AuthKey.p8"),
		CAFile:  filepath.Join(dir, "ca.pem"),
		KeyID:   "ABC123DEFG",
		TeamID:  "TEAM123456",
		Topic:   "org.example.app",
		t:       t,
		pub:     &key.PublicKey,
		jwts:    map[string]bool{},
	}
	writeFile(t, f.KeyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	srv := httptest.NewUnstartedServer(http.HandlerFunc(f.serve))
	srv.EnableHTTP2 = true
	if certAuth {
		f.CertFile, f.CertKeyFile = filepath.Join(dir, "client.pem"), filepath.Join(dir, "client.key")
		srv.TLS = &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: clientCert(t, f.CertFile, f.CertKeyFile)}
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	f.URL = srv.URL
	writeFile(t, f.CAFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))
	return f
}

// Config returns an app config pointing at the fake.
func (f *APNs) Config() *config.App {
	c := &config.APNs{Platform: "sandbox", Endpoint: f.URL, Topic: f.Topic, PushType: "alert", CAFile: f.CAFile}
	if f.CertFile != "" {
		c.CertificateFile, c.PrivateKeyFile = f.CertFile, f.CertKeyFile
	} else {
		c.KeyFile, c.KeyID, c.TeamID = f.KeyFile, f.KeyID, f.TeamID
	}
	return &config.App{Type: config.TypeAPNs, APNs: c}
}

// clientCert writes a self-signed client certificate and key and returns
// a pool trusting it.
func clientCert(t testing.TB, certFile, keyFile string) *x509.CertPool {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "Apple Push Services: org.example.app"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	writeFile(t, keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}))
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return pool
}

// Received returns the accepted notifications.
func (f *APNs) Received() []APNsRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]APNsRequest(nil), f.received...)
}

// DistinctTokens returns how many different provider tokens were used.
func (f *APNs) DistinctTokens() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.jwts)
}

func (f *APNs) reject(w http.ResponseWriter, status int, reason, why string) {
	f.t.Errorf("fake apns: %s", why)
	w.WriteHeader(status)
	_, _ = fmt.Fprintf(w, `{"reason":%q}`, reason)
}

func (f *APNs) serve(w http.ResponseWriter, r *http.Request) {
	defer f.enter()()
	if r.ProtoMajor != 2 {
		f.reject(w, 400, "BadRequest", "request is not HTTP/2: "+r.Proto)
		return
	}
	token, ok := strings.CutPrefix(r.URL.Path, "/3/device/")
	if r.Method != http.MethodPost || !ok || token == "" || strings.Trim(token, "0123456789abcdef") != "" {
		f.reject(w, 405, "MethodNotAllowed", "bad method or path "+r.Method+" "+r.URL.Path)
		return
	}
	if got := r.Header.Get("apns-topic"); got != f.Topic {
		f.reject(w, 400, "BadTopic", "apns-topic "+got)
		return
	}
	switch r.Header.Get("apns-push-type") {
	case "alert", "background", "voip":
	default:
		f.reject(w, 400, "InvalidPushType", "apns-push-type "+r.Header.Get("apns-push-type"))
		return
	}
	if p := r.Header.Get("apns-priority"); p != "5" && p != "10" {
		f.reject(w, 400, "BadPriority", "apns-priority "+p)
		return
	}
	if _, err := strconv.ParseInt(r.Header.Get("apns-expiration"), 10, 64); err != nil {
		f.reject(w, 400, "BadExpirationDate", "apns-expiration "+r.Header.Get("apns-expiration"))
		return
	}
	if f.CertFile != "" {
		if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
			f.reject(w, 403, "MissingProviderToken", "no client certificate")
			return
		}
	} else if why := f.checkJWT(r.Header.Get("Authorization")); why != "" {
		f.reject(w, 403, "InvalidProviderToken", why)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 8192))
	var payload map[string]any
	if err != nil || len(body) > 4096 || json.Unmarshal(body, &payload) != nil {
		f.reject(w, 400, "BadPayload", "payload not a JSON object of at most 4096 bytes")
		return
	}
	reply := f.next(token)
	if reply.Status == 0 {
		f.mu.Lock()
		f.received = append(f.received, APNsRequest{Token: token, Header: r.Header.Clone(), Payload: payload})
		f.mu.Unlock()
	}
	w.Header().Set("apns-id", "00000000-0000-0000-0000-000000000000")
	f.write(w, reply, http.StatusOK)
}

func (f *APNs) checkJWT(authz string) string {
	raw, ok := strings.CutPrefix(authz, "bearer ")
	if !ok {
		return "no bearer provider token"
	}
	tok, err := jwt.Parse(raw, func(t *jwt.Token) (any, error) {
		if t.Header["kid"] != f.KeyID {
			return nil, fmt.Errorf("kid %v", t.Header["kid"])
		}
		return f.pub, nil
	}, jwt.WithValidMethods([]string{"ES256"}), jwt.WithIssuer(f.TeamID), jwt.WithIssuedAt())
	if err != nil {
		return "provider token: " + err.Error()
	}
	iat, err := tok.Claims.GetIssuedAt()
	if err != nil || iat == nil || time.Since(iat.Time) > time.Hour {
		return "provider token without fresh iat"
	}
	f.mu.Lock()
	f.jwts[raw] = true
	f.mu.Unlock()
	return ""
}

func writeFile(t testing.TB, p string, b []byte) {
	t.Helper()
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
