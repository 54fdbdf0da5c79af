package hsfed_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/atoll-matrix/atoll/sidecars/media/fedmedia"
	"github.com/atoll-matrix/atoll/sidecars/media/hsfed"
)

// TestAnswers maps the homeserver's answers to the fetcher's and verifier's errors; the
// contract against a real shard is tested in homeserver/adminapi.
func TestAnswers(t *testing.T) {
	var calls atomic.Int64
	status := 0
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		if r.Header.Get("Authorization") != "Bearer admin" {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"errcode":"M_UNKNOWN_TOKEN"}`))
			return
		}
		w.WriteHeader(status)
		_, _ = w.Write([]byte(`{"errcode":"M_X"}`))
	}))
	t.Cleanup(hs.Close)
	c := hsfed.New(hsfed.Options{BaseURL: hs.URL + "/", AdminToken: "admin", MaxBytes: 10})

	for _, tc := range []struct {
		status int
		want   error
	}{
		{404, fedmedia.ErrNotFound},
		{413, fedmedia.ErrTooLarge},
		{502, fedmedia.ErrUnavailable},
		{400, fedmedia.ErrUnavailable},
	} {
		status = tc.status
		if _, err := c.Download(t.Context(), "a.test", "b.test", "id"); !errors.Is(err, tc.want) {
			t.Errorf("download answered %d: err = %v, want %v", tc.status, err, tc.want)
		}
	}

	req := httptest.NewRequest("GET", "/_matrix/federation/v1/media/download/id", nil)
	before := calls.Load()
	if err := c.Verify(req); !errors.Is(err, hsfed.ErrUnauthorized) {
		t.Fatalf("unsigned: %v", err)
	}
	if calls.Load() != before {
		t.Fatal("an unsigned request was sent to the homeserver")
	}
	req.Header.Set("Authorization", `X-Matrix origin="b.test",key="ed25519:1",sig="x"`)
	for _, tc := range []struct {
		status int
		want   error
	}{
		{200, nil},
		{401, hsfed.ErrUnauthorized},
		{500, fedmedia.ErrUnavailable},
	} {
		status = tc.status
		if err := c.Verify(req); !errors.Is(err, tc.want) {
			t.Errorf("verify answered %d: err = %v, want %v", tc.status, err, tc.want)
		}
	}
	bad := hsfed.New(hsfed.Options{BaseURL: hs.URL, AdminToken: "wrong"})
	if err := bad.Verify(req); !errors.Is(err, fedmedia.ErrUnavailable) {
		t.Fatalf("admin token refused: %v", err)
	}
}
