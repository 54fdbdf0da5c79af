package apns

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"testing"
	"time"
)

func TestTokenCachedAndRefreshed(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	now := time.Unix(1_700_000_000, 0)
	ts, err := newTokenSource(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), "KID", "TEAM", func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		advance time.Duration
		same    bool
	}{
		{0, true},
		{20 * time.Minute, true},
		{29 * time.Minute, true}, // 49 min old
		{2 * time.Minute, false}, // 51 min old: refreshed before the hour
		{10 * time.Minute, true},
	}
	prev, _ := ts.token()
	for i, s := range steps {
		now = now.Add(s.advance)
		got, err := ts.token()
		if err != nil {
			t.Fatal(err)
		}
		if (got == prev) != s.same {
			t.Errorf("step %d: same=%v, want %v", i, got == prev, s.same)
		}
		prev = got
	}
	ts.invalidate("other")
	if got, _ := ts.token(); got != prev {
		t.Error("invalidating a stale token dropped the current one")
	}
	ts.invalidate(prev)
	if got, _ := ts.token(); got == prev {
		t.Error("invalidated token reused")
	}
	if _, err := newTokenSource([]byte("not pem"), "k", "t", time.Now); err == nil {
		t.Error("bad key accepted")
	}
}

func TestDeviceToken(t *testing.T) {
	tests := []struct {
		pushkey, want string
		ok            bool
	}{
		{"3q2+7w==", "deadbeef", true},
		{"3q2+7w", "deadbeef", true},
		{"3q2-7w", "deadbeef", true},
		{"", "", false},
		{"!!!", "", false},
	}
	for _, tt := range tests {
		got, err := DeviceToken(tt.pushkey)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("DeviceToken(%q) = %q %v, want %q ok=%v", tt.pushkey, got, err, tt.want, tt.ok)
		}
	}
}
