package webpush_test

import (
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"strings"
	"testing"

	"github.com/atoll-matrix/atoll/pushgateway/push"
	"github.com/atoll-matrix/atoll/pushgateway/webpush"
)

func TestParseVAPIDKey(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sec1, _ := x509.MarshalECPrivateKey(key)
	pkcs8, _ := x509.MarshalPKCS8PrivateKey(key)
	raw, _ := key.Bytes()
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	sec1p384, _ := x509.MarshalECPrivateKey(p384)
	tests := []struct {
		name string
		in   []byte
		ok   bool
	}{
		{"sec1 pem", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}), true},
		{"pkcs8 pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}), true},
		{"raw base64url", []byte(base64.RawURLEncoding.EncodeToString(raw) + "\n"), true},
		{"p384", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1p384}), false},
		{"garbage", []byte("hello world"), false},
		{"short raw", []byte("AAAA"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := webpush.ParseVAPIDKey(tt.in)
			if (err == nil) != tt.ok {
				t.Fatalf("err %v, want ok=%v", err, tt.ok)
			}
			if tt.ok && !k.Equal(key) {
				t.Error("parsed a different key")
			}
		})
	}
}

func TestEncryptLimits(t *testing.T) {
	ua, _ := ecdh.P256().GenerateKey(rand.Reader)
	auth := make([]byte, 16)
	tests := []struct {
		name  string
		plain int
		ua    []byte
		auth  []byte
		ok    bool
	}{
		{"max size", webpush.MaxPlaintext, ua.PublicKey().Bytes(), auth, true},
		{"too large", webpush.MaxPlaintext + 1, ua.PublicKey().Bytes(), auth, false},
		{"bad key", 10, []byte{4, 1, 2, 3}, auth, false},
		{"bad auth", 10, ua.PublicKey().Bytes(), auth[:8], false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := webpush.Encrypt(make([]byte, tt.plain), tt.ua, tt.auth, rand.Reader)
			if (err == nil) != tt.ok {
				t.Fatalf("err %v, want ok=%v", err, tt.ok)
			}
			if tt.ok && len(out) > 4096 {
				t.Errorf("body %d bytes exceeds 4096", len(out))
			}
		})
	}
}

func TestPayloadDropsLargeContent(t *testing.T) {
	n := &push.Notification{EventID: "$e", RoomID: "!r", Content: json.RawMessage(`{"body":"` + strings.Repeat("x", 5000) + `"}`)}
	b, err := webpush.Payload(n, push.Device{})
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > webpush.MaxPlaintext || strings.Contains(string(b), "xxxx") || !strings.Contains(string(b), "$e") {
		t.Errorf("payload %s", b)
	}
}
