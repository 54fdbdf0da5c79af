package preview_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/atoll-matrix/atoll/sidecars/media/preview"
)

func TestAllowed(t *testing.T) {
	for _, tc := range []struct {
		ip   string
		want bool
	}{
		{"93.184.216.34", true},
		{"2606:4700::1111", true},
		{"127.0.0.1", false},
		{"10.1.2.3", false},
		{"172.16.0.1", false},
		{"192.168.1.1", false},
		{"169.254.169.254", false},
		{"100.64.0.1", false},
		{"0.0.0.0", false},
		{"224.0.0.1", false},
		{"::1", false},
		{"fe80::1", false},
		{"fd00::1", false},
		{"ff02::1", false},
		{"::ffff:127.0.0.1", false},
		{"::ffff:10.0.0.1", false},
		{"64:ff9b::7f00:1", false},
	} {
		t.Run(tc.ip, func(t *testing.T) {
			if got := preview.Allowed(netip.MustParseAddr(tc.ip)); got != tc.want {
				t.Fatalf("Allowed(%s) = %v, want %v", tc.ip, got, tc.want)
			}
		})
	}
}

func TestRefusesLoopbackAtDial(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("<title>secret</title>"))
	}))
	t.Cleanup(srv.Close)
	f := &preview.Fetcher{Client: preview.NewClient(5*time.Second, false), MaxBytes: 1 << 20}
	// "localhost" resolves to loopback: the check happens after resolution.
	u := strings.Replace(srv.URL, "127.0.0.1", "localhost", 1)
	for _, raw := range []string{srv.URL, u} {
		if _, err := f.Fetch(context.Background(), raw); !errors.Is(err, preview.ErrForbiddenAddress) {
			t.Fatalf("Fetch(%s) err = %v, want ErrForbiddenAddress", raw, err)
		}
	}
	// Only http and https are fetched.
	other := &preview.Fetcher{Client: preview.NewClient(5*time.Second, true), MaxBytes: 1 << 20}
	if _, err := other.Fetch(context.Background(), "ftp://example.org/"); !errors.Is(err, preview.ErrUnsupported) {
		t.Fatalf("ftp URL: %v", err)
	}
}

func TestFetchAndParse(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/page":
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			_, _ = w.Write([]byte(`<!doctype html><html><head><title>Fallback</title>
<meta property="og:title" content="Hello &amp; welcome">
<meta property="og:image" content="/img.png">
<meta name="description" content="A page">
</head><body><p>text</p></body></html>`))
		case "/img.png":
			w.Header().Set("Content-Type", "image/png")
			_, _ = w.Write([]byte("\x89PNG fake"))
		case "/big":
			w.Header().Set("Content-Type", "text/html")
			_, _ = w.Write([]byte(strings.Repeat("a", 2000)))
		case "/pdf":
			w.Header().Set("Content-Type", "application/pdf")
		}
	}))
	t.Cleanup(srv.Close)
	f := &preview.Fetcher{Client: preview.NewClient(5*time.Second, true), MaxBytes: 1000}
	ctx := context.Background()
	p, err := f.Fetch(ctx, srv.URL+"/page")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"og:title": "Hello & welcome", "og:image": srv.URL + "/img.png", "og:description": "A page"}
	for k, v := range want {
		if p.OG[k] != v {
			t.Errorf("%s = %q, want %q", k, p.OG[k], v)
		}
	}
	img, ct, err := f.FetchImage(ctx, p.OG["og:image"])
	if err != nil || ct != "image/png" || len(img) == 0 {
		t.Fatalf("FetchImage = %d bytes %q, %v", len(img), ct, err)
	}
	if _, err := f.Fetch(ctx, srv.URL+"/big"); !errors.Is(err, preview.ErrTooLarge) {
		t.Fatalf("big page: %v", err)
	}
	if _, err := f.Fetch(ctx, srv.URL+"/pdf"); !errors.Is(err, preview.ErrUnsupported) {
		t.Fatalf("pdf: %v", err)
	}
}

func TestParseHTMLFallbacks(t *testing.T) {
	base, _ := url.Parse("https://example.org/a/")
	og := preview.ParseHTML(strings.NewReader(`<html><head><title> T </title><meta name="og:url" content="b"></head></html>`), base)
	if og["og:title"] != "T" || og["og:url"] != "https://example.org/a/b" {
		t.Fatalf("og = %v", og)
	}
}
