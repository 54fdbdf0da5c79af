package safedial_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/atoll-matrix/atoll/pushgateway/safedial"
)

func TestPublic(t *testing.T) {
	tests := []struct {
		addr string
		want bool
	}{
		{"8.8.8.8", true},
		{"2a00:1450:4001::200e", true},
		{"127.0.0.1", false},
		{"::1", false},
		{"10.1.2.3", false},
		{"172.16.0.1", false},
		{"192.168.1.1", false},
		{"169.254.169.254", false}, // cloud metadata
		{"fe80::1", false},
		{"fc00::1", false},
		{"100.64.0.1", false},
		{"0.0.0.0", false},
		{"::", false},
		{"::ffff:127.0.0.1", false},
		{"::ffff:10.0.0.1", false},
		{"224.0.0.1", false},
		{"255.255.255.255", false},
		{"64:ff9b::a00:1", false},
		{"2002:a00:1::", false},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			if got := safedial.Public(netip.MustParseAddr(tt.addr)); got != tt.want {
				t.Errorf("Public(%s) = %v, want %v", tt.addr, got, tt.want)
			}
		})
	}
}

func TestAllowList(t *testing.T) {
	l := safedial.NewAllowList([]string{"*.push.services.mozilla.com", "fcm.googleapis.com"})
	tests := []struct {
		url       string
		allowHTTP bool
		ok        bool
	}{
		{"https://updates.push.services.mozilla.com/wpush/v2/abc", false, true},
		{"https://FCM.googleapis.com/fcm/send/x", false, true},
		{"https://fcm.googleapis.com:443/fcm/send/x", false, true},
		{"http://fcm.googleapis.com/fcm/send/x", false, false},
		{"http://fcm.googleapis.com/fcm/send/x", true, true},
		{"https://push.services.mozilla.com.evil.com/x", false, false},
		{"https://evil.com/?fcm.googleapis.com", false, false},
		{"https://user@fcm.googleapis.com/x", false, false},
		{"ftp://fcm.googleapis.com/x", true, false},
		{"not a url\x7f", false, false},
		{"", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			_, err := l.CheckURL(tt.url, tt.allowHTTP)
			if (err == nil) != tt.ok {
				t.Fatalf("CheckURL(%q) = %v, want ok=%v", tt.url, err, tt.ok)
			}
			if err != nil && !errors.Is(err, safedial.ErrHostNotAllowed) && !strings.Contains(err.Error(), "parse") {
				t.Errorf("error %v is not ErrHostNotAllowed", err)
			}
		})
	}
}

func TestClientRefusesLoopback(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
	}))
	t.Cleanup(srv.Close)
	for _, host := range []string{srv.URL, strings.Replace(srv.URL, "127.0.0.1", "localhost", 1)} {
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, host, nil)
		_, err := safedial.NewClient(safedial.Options{}).Do(req)
		var blocked *safedial.BlockedAddressError
		if !errors.As(err, &blocked) || !safedial.IsBlocked(err) {
			t.Errorf("%s: err %v, want BlockedAddressError", host, err)
		}
		if strings.Contains(safedial.StripURL(err).Error(), srv.URL) {
			t.Errorf("StripURL kept the URL: %v", safedial.StripURL(err))
		}
	}
	if hits.Load() != 0 {
		t.Fatal("a request reached the loopback server")
	}
	// The test flag lets it through.
	resp, err := safedial.NewClient(safedial.Options{AllowPrivate: true}).Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if hits.Load() != 1 {
		t.Errorf("hits %d, want 1", hits.Load())
	}
}

func TestClientNoRedirects(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/next" {
			t.Error("redirect followed")
		}
		http.Redirect(w, r, "/next", http.StatusFound)
	}))
	t.Cleanup(srv.Close)
	resp, err := safedial.NewClient(safedial.Options{AllowPrivate: true}).Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		t.Errorf("status %d", resp.StatusCode)
	}
}
