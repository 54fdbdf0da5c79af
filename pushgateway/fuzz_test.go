package pushgateway_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/atoll-matrix/atoll/pushgateway"
	"github.com/atoll-matrix/atoll/pushgateway/config"
)

// FuzzNotify feeds arbitrary bodies to the notify endpoint: the answer is
// always a well-formed 200, 400, 413 or 502, never a panic or a 500.
func FuzzNotify(f *testing.F) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusCreated)
	}))
	f.Cleanup(up.Close)
	cfg := &config.Config{
		NotifyTimeout: 200 * time.Millisecond, InitialBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
		MaxBodyBytes: 8 << 10,
		Apps: map[string]*config.App{
			"org.example.up.*": {Type: config.TypeUnifiedPush, UnifiedPush: &config.UnifiedPush{
				AllowedEndpoints: []string{"127.0.0.1"}, AllowPrivateAddressesForTests: true,
			}},
			"org.example.strict": {Type: config.TypeUnifiedPush, UnifiedPush: &config.UnifiedPush{
				AllowedEndpoints: []string{"*"},
			}},
		},
	}
	if err := cfg.Complete(); err != nil {
		f.Fatal(err)
	}
	gw, err := pushgateway.New(cfg, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(gw.Close)

	seeds := []string{
		`{"notification":{"event_id":"$e","room_id":"!r:x","counts":{"unread":2},"devices":[{"app_id":"org.example.up.a","pushkey":"` + up.URL + `/p"}]}}`,
		`{"notification":{"event_id":"$e","devices":[{"app_id":"org.example.strict","pushkey":"https://127.0.0.1/p"}]}}`,
		`{"notification":{"devices":[{"app_id":"org.example.up.b","pushkey":"` + up.URL + `/q","data":{"format":"event_id_only"}}],"content":{"body":"hi"},"prio":"low"}}`,
		`{"notification":{"devices":[{"app_id":"nope","pushkey":"k","pushkey_ts":12,"tweaks":{"sound":"default"}}]}}`,
		`{"notification":{"devices":[{"app_id":"org.example.up.c","pushkey":"ftp://127.0.0.1/x"}]}}`,
		`{"notification":{"counts":{"unread":1e400},"devices":[]}}`,
		`{"notification":{"content":[1,2],"devices":[{"app_id":"a","pushkey":"b"}]}}`,
		`{"notification":{"prio":"urgent","devices":[{"app_id":"a","pushkey":"b"}]}}`,
		`{"notification":null}`, `{}`, `[]`, `null`, `"x"`, ``, `{`, "\xff",
		`{"notification":{"devices":[{"app_id":"a"}]}}`,
		`{"notification":{"devices":[{"app_id":"org.example.up.d","pushkey":"http://[::1]:1/x"}]}}`,
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, pushgateway.NotifyPath, bytes.NewReader(body))
		gw.ServeHTTP(rec, req)
		var v struct {
			Rejected *[]string `json:"rejected"`
			ErrCode  string    `json:"errcode"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
			t.Fatalf("status %d body not JSON: %q", rec.Code, rec.Body.Bytes())
		}
		switch rec.Code {
		case http.StatusOK:
			if v.Rejected == nil {
				t.Fatalf("200 without rejected: %s", rec.Body.Bytes())
			}
		case http.StatusBadRequest:
			if v.ErrCode != "M_NOT_JSON" && v.ErrCode != "M_BAD_JSON" {
				t.Fatalf("400 with %q", v.ErrCode)
			}
		case http.StatusRequestEntityTooLarge:
			if v.ErrCode != "M_TOO_LARGE" {
				t.Fatalf("413 with %q", v.ErrCode)
			}
		case http.StatusBadGateway:
		default:
			t.Fatalf("status %d for %q: %s", rec.Code, body, rec.Body.Bytes())
		}
	})
}
