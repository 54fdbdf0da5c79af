package adminapi_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/atoll-matrix/atoll/homeserver/config"
	"github.com/atoll-matrix/atoll/internal/atolltest/shardtest"
	"github.com/atoll-matrix/atoll/sidecars/media/fedmedia"
	"github.com/atoll-matrix/atoll/sidecars/media/hsfed"
)

// keyVerifier checks signatures against one known key (the asking tenant's).
type keyVerifier struct {
	keyID gomatrixserverlib.KeyID
	key   ed25519.PublicKey
}

func (v keyVerifier) VerifyJSONs(_ context.Context, reqs []gomatrixserverlib.VerifyJSONRequest) ([]gomatrixserverlib.VerifyJSONResult, error) {
	out := make([]gomatrixserverlib.VerifyJSONResult, len(reqs))
	for i, r := range reqs {
		out[i].Error = gomatrixserverlib.VerifyJSON(string(r.ServerName), v.keyID, v.key, r.Message)
	}
	return out, nil
}

// TestFederationMediaContract drives the internal federation endpoints with the sidecar's own
// client (hsfed) against a real shard and a fake remote server named in federation.servers:
// the fetch is X-Matrix signed as the asking tenant and addressed to the remote, the answer is
// streamed back, and the remote's errors become Matrix errors.
func TestFederationMediaContract(t *testing.T) {
	var (
		mu       sync.Mutex
		verifier gomatrixserverlib.JSONVerifier
		seen     []string // "origin path" of verified requests
	)
	remote := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		v := verifier
		mu.Unlock()
		fr, resp := fclient.VerifyHTTPRequest(r, time.Now(), "remote.test", nil, v)
		if fr == nil {
			w.WriteHeader(resp.Code)
			return
		}
		mu.Lock()
		seen = append(seen, string(fr.Origin())+" "+r.URL.RequestURI())
		mu.Unlock()
		switch {
		case strings.HasSuffix(r.URL.Path, "/download/there"):
			_ = fedmedia.WriteDownload(w, "text/plain", "inline", strings.NewReader("from afar"))
		case strings.Contains(r.URL.Path, "/thumbnail/there"):
			_ = fedmedia.WriteDownload(w, "image/png", "", strings.NewReader("png bytes"))
		case strings.HasSuffix(r.URL.Path, "/download/big"):
			_ = fedmedia.WriteDownload(w, "text/plain", "", strings.NewReader(strings.Repeat("x", 200<<10)))
		case strings.HasSuffix(r.URL.Path, "/download/broken"):
			w.WriteHeader(http.StatusInternalServerError)
		default:
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"errcode":"M_NOT_FOUND","error":"no"}`))
		}
	}))
	t.Cleanup(remote.Close)
	s := shardtest.New(t, func(c *config.Config) {
		c.Federation.Servers = map[string]string{"remote.test": remote.URL, "down.test": "http://127.0.0.1:1"}
	})
	a := s.CreateTenant(t, "fedmedia_a")
	b := s.CreateTenant(t, "fedmedia_b")
	ctx := context.Background()
	recA, err := s.Process.Tenants.Get(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	verifier = keyVerifier{keyID: gomatrixserverlib.KeyID(recA.KeyID), key: recA.PrivateKey.Public().(ed25519.PublicKey)}
	mu.Unlock()

	c := hsfed.New(hsfed.Options{BaseURL: s.AdminURL, AdminToken: shardtest.AdminToken, MaxBytes: 100 << 10})
	read := func(r *fedmedia.Remote, err error) (string, error) {
		if err != nil {
			return "", err
		}
		defer r.Body.Close()
		b, err := io.ReadAll(r.Body)
		return r.ContentType + " " + string(b), err
	}

	got, err := read(c.Download(ctx, a.ServerName, "remote.test", "there"))
	if err != nil || got != "text/plain from afar" {
		t.Fatalf("download = %q, %v", got, err)
	}
	got, err = read(c.Thumbnail(ctx, a.ServerName, "remote.test", "there", 32, 32, "crop"))
	if err != nil || got != "image/png png bytes" {
		t.Fatalf("thumbnail = %q, %v", got, err)
	}
	mu.Lock()
	want := []string{a.ServerName + " /_matrix/federation/v1/media/download/there",
		a.ServerName + " /_matrix/federation/v1/media/thumbnail/there?height=32&method=crop&width=32"}
	if strings.Join(seen, "\n") != strings.Join(want, "\n") {
		t.Errorf("remote saw\n%s\nwant\n%s", strings.Join(seen, "\n"), strings.Join(want, "\n"))
	}
	mu.Unlock()

	for _, tc := range []struct {
		name, host, server, id string
		want                   error
	}{
		{"missing", a.ServerName, "remote.test", "nothere", fedmedia.ErrNotFound},
		{"too large", a.ServerName, "remote.test", "big", fedmedia.ErrTooLarge},
		{"remote fails", a.ServerName, "remote.test", "broken", fedmedia.ErrUnavailable},
		{"unreachable", a.ServerName, "down.test", "there", fedmedia.ErrUnavailable},
		// B's signature is not the one the remote knows.
		{"signed as another tenant", b.ServerName, "remote.test", "there", fedmedia.ErrUnavailable},
		{"unknown host", "nobody.test", "remote.test", "there", fedmedia.ErrNotFound},
		{"own server", a.ServerName, a.ServerName, "there", fedmedia.ErrUnavailable},
		{"bad media id", a.ServerName, "remote.test", "../x", fedmedia.ErrUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := read(c.Download(ctx, tc.host, tc.server, tc.id))
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}

	// Verification: requests B signs for A are accepted on A's host only.
	recB, err := s.Process.Tenants.Get(ctx, b.ID)
	if err != nil {
		t.Fatal(err)
	}
	inbound := func(host, destination string, sign bool) *http.Request {
		const path = "/_matrix/federation/v1/media/download/abc"
		r := httptest.NewRequest("GET", path, nil)
		r.Host = host
		if sign {
			fr := fclient.NewFederationRequest("GET", recB.ServerName, spec.ServerName(destination), path)
			if err := fr.Sign(recB.ServerName, gomatrixserverlib.KeyID(recB.KeyID), recB.PrivateKey); err != nil {
				t.Fatal(err)
			}
			hr, err := fr.HTTPRequest()
			if err != nil {
				t.Fatal(err)
			}
			r.Header.Set("Authorization", hr.Header.Get("Authorization"))
		}
		return r
	}
	if err := c.Verify(inbound(a.ServerName, a.ServerName, true)); err != nil {
		t.Fatalf("signed request refused: %v", err)
	}
	for _, tc := range []struct {
		name string
		r    *http.Request
	}{
		{"unsigned", inbound(a.ServerName, a.ServerName, false)},
		{"for another destination", inbound(b.ServerName, a.ServerName, true)},
		{"to itself", inbound(b.ServerName, b.ServerName, true)},
		{"unknown host", inbound("nobody.test", "nobody.test", true)},
	} {
		t.Run("verify "+tc.name, func(t *testing.T) {
			if err := c.Verify(tc.r); !errors.Is(err, hsfed.ErrUnauthorized) {
				t.Fatalf("err = %v, want ErrUnauthorized", err)
			}
		})
	}
	forged := inbound(a.ServerName, a.ServerName, true)
	forged.Header.Set("Authorization", strings.Replace(forged.Header.Get("Authorization"), `sig="`, `sig="AAAA`, 1))
	if err := c.Verify(forged); !errors.Is(err, hsfed.ErrUnauthorized) {
		t.Fatalf("forged signature: %v", err)
	}
	bad := hsfed.New(hsfed.Options{BaseURL: s.AdminURL, AdminToken: "wrong-token-wrong-token"})
	if err := bad.Verify(inbound(a.ServerName, a.ServerName, true)); errors.Is(err, hsfed.ErrUnauthorized) || !errors.Is(err, fedmedia.ErrUnavailable) {
		t.Fatalf("wrong admin token: %v", err)
	}
	if _, err := bad.Download(ctx, a.ServerName, "remote.test", "there"); !errors.Is(err, fedmedia.ErrUnavailable) {
		t.Fatalf("wrong admin token: %v", err)
	}
}
