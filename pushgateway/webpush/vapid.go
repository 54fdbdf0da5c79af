package webpush

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// VAPID token lifetime and reuse: tokens are valid 12 h and reused until
// an hour before they expire. At most maxAudiences are cached.
const (
	vapidLifetime = 12 * time.Hour
	vapidReuse    = 11 * time.Hour
	maxAudiences  = 1024
)

// ParseVAPIDKey reads a VAPID private key: PEM (SEC 1 or PKCS #8) or the
// base64url raw 32-byte scalar web-push tools print.
func ParseVAPIDKey(b []byte) (*ecdsa.PrivateKey, error) {
	if block, _ := pem.Decode(b); block != nil {
		if k, err := x509.ParseECPrivateKey(block.Bytes); err == nil {
			return checkP256(k)
		}
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse vapid private key: %w", err)
		}
		ek, ok := k.(*ecdsa.PrivateKey)
		if !ok {
			return nil, errors.New("vapid private key is not an EC key")
		}
		return checkP256(ek)
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(strings.TrimSpace(string(b)), "="))
	if err != nil {
		return nil, errors.New("vapid private key is neither PEM nor base64url")
	}
	k, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), raw)
	if err != nil {
		return nil, fmt.Errorf("parse vapid private key: %w", err)
	}
	return k, nil
}

func checkP256(k *ecdsa.PrivateKey) (*ecdsa.PrivateKey, error) {
	if k.Curve != elliptic.P256() {
		return nil, errors.New("vapid private key must be on P-256")
	}
	return k, nil
}

type vapidToken struct {
	jwt    string
	issued time.Time
}

// vapid signs RFC 8292 tokens per push service origin, caching them.
type vapid struct {
	key     *ecdsa.PrivateKey
	pub     string // base64url uncompressed public key, the k= parameter
	contact string
	now     func() time.Time

	mu    sync.Mutex
	cache map[string]vapidToken
}

func newVAPID(key *ecdsa.PrivateKey, contact string, now func() time.Time) (*vapid, error) {
	pub, err := key.PublicKey.Bytes()
	if err != nil {
		return nil, fmt.Errorf("vapid public key: %w", err)
	}
	return &vapid{key: key, pub: base64.RawURLEncoding.EncodeToString(pub), contact: contact, now: now, cache: map[string]vapidToken{}}, nil
}

// header returns the Authorization header value for the origin aud.
func (v *vapid) header(aud string) (string, error) {
	now := v.now()
	v.mu.Lock()
	defer v.mu.Unlock()
	if t, ok := v.cache[aud]; ok && now.Sub(t.issued) < vapidReuse {
		return "vapid t=" + t.jwt + ", k=" + v.pub, nil
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{
		"aud": aud,
		"exp": now.Add(vapidLifetime).Unix(),
		"sub": v.contact,
	})
	s, err := tok.SignedString(v.key)
	if err != nil {
		return "", fmt.Errorf("sign vapid token: %w", err)
	}
	if len(v.cache) >= maxAudiences {
		clear(v.cache)
	}
	v.cache[aud] = vapidToken{jwt: s, issued: now}
	return "vapid t=" + s + ", k=" + v.pub, nil
}
