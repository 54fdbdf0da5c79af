package apns

import (
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// tokenRefresh is how long a provider token is reused. Apple rejects tokens
// older than an hour and throttles refreshes more often than every 20 minutes.
const tokenRefresh = 50 * time.Minute

// tokenSource caches the ES256 provider token, signing a new one only when
// the old one nears expiry or APNs reports it expired.
type tokenSource struct {
	key    *ecdsa.PrivateKey
	keyID  string
	teamID string
	now    func() time.Time

	mu     sync.Mutex
	cur    string
	issued time.Time
}

func newTokenSource(p8 []byte, keyID, teamID string, now func() time.Time) (*tokenSource, error) {
	block, _ := pem.Decode(p8)
	if block == nil {
		return nil, errors.New("apns key_file: no PEM block")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		ek, ecErr := x509.ParseECPrivateKey(block.Bytes)
		if ecErr != nil {
			return nil, fmt.Errorf("apns key_file: parse private key: %w", err)
		}
		k = ek
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, errors.New("apns key_file: not an EC private key")
	}
	return &tokenSource{key: ek, keyID: keyID, teamID: teamID, now: now}, nil
}

func (s *tokenSource) token() (string, error) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur != "" && now.Sub(s.issued) < tokenRefresh {
		return s.cur, nil
	}
	t := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{
		"iss": s.teamID,
		"iat": now.Unix(),
	})
	t.Header["kid"] = s.keyID
	signed, err := t.SignedString(s.key)
	if err != nil {
		return "", fmt.Errorf("sign apns provider token: %w", err)
	}
	s.cur, s.issued = signed, now
	return signed, nil
}

// invalidate drops tok if it is still the cached token.
func (s *tokenSource) invalidate(tok string) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur == tok {
		s.cur = ""
	}
}
