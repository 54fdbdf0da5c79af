package pushtest

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/atoll-matrix/atoll/pushgateway/config"
)

// Subscription is one browser push subscription held by the fake.
type Subscription struct {
	ID       string
	Endpoint string
	P256dh   string // base64url: the Matrix pushkey
	Auth     string // base64url: data.auth
	priv     *ecdh.PrivateKey
	auth     []byte
}

// WebPushMessage is a decrypted message the fake accepted.
type WebPushMessage struct {
	Subscription string
	Header       http.Header
	Payload      map[string]any
}

// WebPush is a fake push service: it checks the VAPID token against the
// configured key, decrypts the aes128gcm body with the subscription's
// private key and auth secret, and records the plaintext.
type WebPush struct {
	*script
	URL       string
	VAPIDFile string
	vapidPub  string

	t testing.TB

	mu       sync.Mutex
	subs     map[string]*Subscription
	received []WebPushMessage
}

// NewWebPush starts a fake push service and writes a VAPID key file.
func NewWebPush(t testing.TB) *WebPush {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := key.PublicKey.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	f := &WebPush{script: newScript(), t: t, subs: map[string]*Subscription{}, vapidPub: base64.RawURLEncoding.EncodeToString(pub)}
	f.VAPIDFile = filepath.Join(t.TempDir(), "vapid.pem")
	writeFile(t, f.VAPIDFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}))
	mux := http.NewServeMux()
	mux.HandleFunc("POST /push/{id}", f.serve)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	f.URL = srv.URL
	return f
}

// Config returns a webpush app config allowing the fake's loopback address.
func (f *WebPush) Config() *config.App {
	return &config.App{Type: config.TypeWebPush, WebPush: &config.WebPush{
		VAPIDPrivateKeyFile: f.VAPIDFile, VAPIDContact: "mailto:ops@example.org",
		AllowedEndpoints: []string{"127.0.0.1", "localhost"}, TTL: time.Hour,
		AllowPrivateAddressesForTests: true,
	}}
}

// Subscribe creates a subscription as a browser would.
func (f *WebPush) Subscribe(id string) *Subscription {
	f.t.Helper()
	priv, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		f.t.Fatal(err)
	}
	auth := make([]byte, 16)
	_, _ = rand.Read(auth)
	s := &Subscription{
		ID: id, Endpoint: f.URL + "/push/" + id,
		P256dh: base64.RawURLEncoding.EncodeToString(priv.PublicKey().Bytes()),
		Auth:   base64.RawURLEncoding.EncodeToString(auth),
		priv:   priv, auth: auth,
	}
	f.mu.Lock()
	f.subs[id] = s
	f.mu.Unlock()
	return s
}

// Received returns the decrypted messages.
func (f *WebPush) Received() []WebPushMessage {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]WebPushMessage(nil), f.received...)
}

func (f *WebPush) serve(w http.ResponseWriter, r *http.Request) {
	defer f.enter()()
	id := r.PathValue("id")
	f.mu.Lock()
	sub := f.subs[id]
	f.mu.Unlock()
	if sub == nil {
		w.WriteHeader(http.StatusGone)
		return
	}
	fail := func(format string, args ...any) {
		f.t.Errorf("fake webpush: "+format, args...)
		w.WriteHeader(http.StatusBadRequest)
	}
	if r.Header.Get("Content-Encoding") != "aes128gcm" || r.Header.Get("TTL") == "" {
		fail("headers Content-Encoding %q TTL %q", r.Header.Get("Content-Encoding"), r.Header.Get("TTL"))
		return
	}
	if err := f.checkVAPID(r.Header.Get("Authorization")); err != nil {
		f.t.Errorf("fake webpush: vapid: %v", err)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, 8192))
	if len(body) > 4096 {
		fail("body of %d bytes", len(body))
		return
	}
	plain, err := decrypt(body, sub)
	if err != nil {
		fail("decrypt: %v", err)
		return
	}
	var payload map[string]any
	if err := json.Unmarshal(plain, &payload); err != nil {
		fail("payload not JSON: %q", plain)
		return
	}
	reply := f.next(id)
	if reply.Status == 0 {
		f.mu.Lock()
		f.received = append(f.received, WebPushMessage{Subscription: id, Header: r.Header.Clone(), Payload: payload})
		f.mu.Unlock()
	}
	f.write(w, reply, http.StatusCreated)
}

func (f *WebPush) checkVAPID(h string) error {
	rest, ok := strings.CutPrefix(h, "vapid ")
	if !ok {
		return errors.New("no vapid authorization")
	}
	params := map[string]string{}
	for _, p := range strings.Split(rest, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(p), "=")
		params[k] = v
	}
	if params["k"] != f.vapidPub {
		return errors.New("k is not the configured VAPID public key")
	}
	raw, err := base64.RawURLEncoding.DecodeString(params["k"])
	if err != nil {
		return fmt.Errorf("k: %w", err)
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), raw)
	if err != nil {
		return fmt.Errorf("k: %w", err)
	}
	tok, err := jwt.Parse(params["t"], func(*jwt.Token) (any, error) { return pub, nil },
		jwt.WithValidMethods([]string{"ES256"}), jwt.WithAudience(f.URL), jwt.WithExpirationRequired())
	if err != nil {
		return fmt.Errorf("t: %w", err)
	}
	exp, _ := tok.Claims.GetExpirationTime()
	if exp == nil || time.Until(exp.Time) > 24*time.Hour {
		return errors.New("exp more than 24h ahead")
	}
	if sub, _ := tok.Claims.GetSubject(); !strings.HasPrefix(sub, "mailto:") && !strings.HasPrefix(sub, "https:") {
		return fmt.Errorf("sub %q", sub)
	}
	return nil
}

// decrypt implements the receiving side of RFC 8291/8188, independently
// of the gateway's code.
func decrypt(body []byte, sub *Subscription) ([]byte, error) {
	if len(body) < 21 {
		return nil, errors.New("short body")
	}
	salt, rs, idlen := body[:16], binary.BigEndian.Uint32(body[16:20]), int(body[20])
	if idlen != 65 || len(body) < 21+idlen {
		return nil, fmt.Errorf("keyid length %d", idlen)
	}
	asPub, ct := body[21:21+idlen], body[21+idlen:]
	if int(rs) < len(ct) {
		return nil, fmt.Errorf("record size %d smaller than ciphertext %d (multiple records)", rs, len(ct))
	}
	as, err := ecdh.P256().NewPublicKey(asPub)
	if err != nil {
		return nil, fmt.Errorf("keyid: %w", err)
	}
	secret, err := sub.priv.ECDH(as)
	if err != nil {
		return nil, err
	}
	ua := sub.priv.PublicKey().Bytes()
	prkKey := hmacSHA256(sub.auth, secret)
	ikm := hmacSHA256(prkKey, append(append(append([]byte("WebPush: info\x00"), ua...), asPub...), 1))
	prk := hmacSHA256(salt, ikm)
	cek := hmacSHA256(prk, []byte("Content-Encoding: aes128gcm\x00\x01"))[:16]
	nonce := hmacSHA256(prk, []byte("Content-Encoding: nonce\x00\x01"))[:12]
	block, err := aes.NewCipher(cek)
	if err != nil {
		return nil, err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	plain, err := gcm.Open(nil, nonce, ct, nil)
	if err != nil {
		return nil, fmt.Errorf("open: %w", err)
	}
	i := len(plain) - 1
	for i >= 0 && plain[i] == 0 {
		i--
	}
	if i < 0 || plain[i] != 0x02 {
		return nil, errors.New("missing last-record delimiter")
	}
	return plain[:i], nil
}

func hmacSHA256(key, data []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(data)
	return m.Sum(nil)
}
