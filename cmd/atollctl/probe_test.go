package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

func TestProbeCmd(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/flaky":
			if calls.Add(1) < 3 {
				http.Error(w, "starting", http.StatusServiceUnavailable)
				return
			}
		case "/down":
			http.Error(w, "down", http.StatusBadGateway)
			return
		}
		w.Write([]byte(`{"versions":["v1.11"]}`))
	}))
	t.Cleanup(srv.Close)
	for _, tc := range []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"ok", []string{srv.URL + "/_matrix/client/versions"}, ""},
		{"retries until ready", []string{"--interval=10ms", srv.URL + "/flaky"}, ""},
		{"times out", []string{"--interval=10ms", "--timeout=200ms", srv.URL + "/down"}, "status 502"},
		{"no url", nil, "usage"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := probeCmd(context.Background(), tc.args)
			if tc.wantErr == "" && err != nil {
				t.Fatal(err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("err %v, want %q", err, tc.wantErr)
			}
		})
	}
}
