package pushgateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/atoll-matrix/atoll/pushgateway"
	"github.com/atoll-matrix/atoll/pushgateway/config"
	"github.com/atoll-matrix/atoll/pushgateway/push"
	"github.com/atoll-matrix/atoll/pushgateway/pushtest"
)

func TestBadInput(t *testing.T) {
	apnsFake := pushtest.NewAPNs(t)
	webFake := pushtest.NewWebPush(t)
	strict := webFake.Config()
	strict.WebPush.AllowPrivateAddressesForTests = false
	strict.WebPush.AllowedEndpoints = []string{"127.0.0.1", "localhost", "*.example.org"}
	e := newEnv(t, map[string]*config.App{
		"org.example.ios":    apnsFake.Config(),
		"org.example.web":    webFake.Config(),
		"org.example.strict": strict,
	})
	sub := webFake.Subscribe("s1")
	good, _ := apnsDevice("org.example.ios", 1)
	goodJSON, _ := json.Marshal(good)

	tests := []struct {
		name     string
		body     string
		status   int
		errcode  string
		rejected []string
	}{
		{"not json", `{"notification":`, 400, "M_NOT_JSON", nil},
		{"empty body", ``, 400, "M_NOT_JSON", nil},
		{"binary", "\x00\xff\xfe", 400, "M_NOT_JSON", nil},
		{"array", `[]`, 400, "M_BAD_JSON", nil},
		{"string", `"notify"`, 400, "M_BAD_JSON", nil},
		{"null", `null`, 400, "M_BAD_JSON", nil},
		{"no notification", `{}`, 400, "M_BAD_JSON", nil},
		{"notification not object", `{"notification":5}`, 400, "M_BAD_JSON", nil},
		{"devices not array", `{"notification":{"devices":"x"}}`, 400, "M_BAD_JSON", nil},
		{"no devices", `{"notification":{"event_id":"$e"}}`, 400, "M_BAD_JSON", nil},
		{"empty devices", `{"notification":{"devices":[]}}`, 400, "M_BAD_JSON", nil},
		{"device without pushkey", `{"notification":{"devices":[{"app_id":"org.example.ios"}]}}`, 400, "M_BAD_JSON", nil},
		{"pushkey wrong type", `{"notification":{"devices":[{"app_id":"org.example.ios","pushkey":7}]}}`, 400, "M_BAD_JSON", nil},
		{"counts wrong type", `{"notification":{"counts":{"unread":"3"},"devices":[` + string(goodJSON) + `]}}`, 400, "M_BAD_JSON", nil},
		{"fractional count", `{"notification":{"counts":{"unread":1.5},"devices":[` + string(goodJSON) + `]}}`, 400, "M_BAD_JSON", nil},
		{"content not object", `{"notification":{"content":5,"devices":[` + string(goodJSON) + `]}}`, 400, "M_BAD_JSON", nil},
		{"data not object", `{"notification":{"devices":[{"app_id":"org.example.ios","pushkey":"a","data":[]}]}}`, 400, "M_BAD_JSON", nil},
		{"bad prio", `{"notification":{"prio":"urgent","devices":[` + string(goodJSON) + `]}}`, 400, "M_BAD_JSON", nil},
		{"unknown app id", `{"notification":{"event_id":"$e","devices":[{"app_id":"com.unknown","pushkey":"pk1"},` + string(goodJSON) + `]}}`, 200, "", []string{"pk1"}},
		{"apns pushkey not base64", `{"notification":{"event_id":"$e","devices":[{"app_id":"org.example.ios","pushkey":"not base64!"}]}}`, 200, "", []string{"not base64!"}},
		{"webpush missing auth", wp(sub.P256dh, sub.Endpoint, "", "org.example.web"), 200, "", []string{sub.P256dh}},
		{"webpush bad p256dh", wp("AAAA", sub.Endpoint, sub.Auth, "org.example.web"), 200, "", []string{"AAAA"}},
		{"webpush host not allowed", wp(sub.P256dh, "https://evil.example.com/push/s1", sub.Auth, "org.example.web"), 200, "", []string{sub.P256dh}},
		{"webpush loopback with test flag off", wp(sub.P256dh, strings.Replace(sub.Endpoint, "http://", "https://", 1), sub.Auth, "org.example.strict"), 200, "", []string{sub.P256dh}},
		{"webpush localhost name with test flag off", wp(sub.P256dh, "https://localhost:1/push/s1", sub.Auth, "org.example.strict"), 200, "", []string{sub.P256dh}},
		{"webpush http scheme with test flag off", wp(sub.P256dh, sub.Endpoint, sub.Auth, "org.example.strict"), 200, "", []string{sub.P256dh}},
		{"oversized", `{"notification":{"room_name":"` + strings.Repeat("x", 20<<10) + `","devices":[]}}`, 413, "M_TOO_LARGE", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.post([]byte(tt.body))
			expectStatus(t, r, tt.status, tt.errcode)
			if tt.status == 200 && !slices.Equal(r.Rejected, tt.rejected) {
				t.Errorf("rejected %v, want %v", r.Rejected, tt.rejected)
			}
		})
	}
	if n := len(webFake.Received()); n != 0 {
		t.Errorf("web push fake received %d messages from bad input", n)
	}
}

func wp(p256dh, endpoint, auth, app string) string {
	b, _ := json.Marshal(push.Request{Notification: &push.Notification{EventID: "$e", Devices: []push.Device{{
		AppID: app, Pushkey: p256dh, Data: map[string]any{"endpoint": endpoint, "auth": auth},
	}}}})
	return string(b)
}

func TestRoutes(t *testing.T) {
	e := newEnv(t, map[string]*config.App{"app": pushtest.NewAPNs(t).Config()})
	tests := []struct {
		method, path string
		status       int
		errcode      string
	}{
		{"GET", pushgateway.NotifyPath, 405, "M_UNRECOGNIZED"},
		{"PUT", pushgateway.NotifyPath, 405, "M_UNRECOGNIZED"},
		{"POST", "/_matrix/push/v2/notify", 404, "M_UNRECOGNIZED"},
		{"GET", "/", 404, "M_UNRECOGNIZED"},
		{"POST", "/health", 405, "M_UNRECOGNIZED"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, e.URL+tt.path, strings.NewReader("{}"))
			resp, err := e.hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			expectStatus(t, decodeResponse(t, resp), tt.status, tt.errcode)
		})
	}
	resp, err := e.hc.Get(e.URL + "/health")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("health: %v %v", resp, err)
	}
	resp.Body.Close()
}

func TestMetrics(t *testing.T) {
	fake := pushtest.NewAPNs(t)
	e := newEnv(t, map[string]*config.App{"app": fake.Config()})
	d, tok := apnsDevice("app", 1)
	bad, badTok := apnsDevice("app", 2)
	fake.Queue(badTok, pushtest.Reply{Status: 410, Body: `{"reason":"Unregistered"}`})
	fake.Queue(tok, pushtest.Reply{Status: 503, Body: `{"reason":"ServiceUnavailable"}`})
	e.notify(message("$e1", d, bad))
	e.notify(message("$e1", d))
	e.notify(message("$e1", push.Device{AppID: "other", Pushkey: "x"}))
	e.post([]byte("nope"))

	checks := []struct {
		name   string
		labels []string
		want   float64
	}{
		{"atoll_push_notifications_received_total", nil, 3},
		{"atoll_push_deliveries_total", []string{"delivered", "apns"}, 1},
		{"atoll_push_deliveries_total", []string{"rejected", "apns"}, 1},
		{"atoll_push_deliveries_total", []string{"deduplicated", "apns"}, 1},
		{"atoll_push_deliveries_total", []string{"rejected", "none"}, 1},
		{"atoll_push_rejected_pushkeys_total", []string{"apns"}, 1},
		{"atoll_push_rejected_pushkeys_total", []string{"none"}, 1},
		{"atoll_push_retries_total", []string{"apns"}, 1},
		{"atoll_push_notify_responses_total", []string{"200"}, 3},
		{"atoll_push_notify_responses_total", []string{"400"}, 1},
	}
	families, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range checks {
		if got := metricValue(families, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	for _, f := range families {
		if !strings.HasPrefix(f.GetName(), "atoll_push_") {
			t.Errorf("metric %s lacks the atoll_push_ prefix", f.GetName())
		}
	}
	problems, err := testutil.GatherAndLint(e.reg)
	if err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}

func TestServe(t *testing.T) {
	cfg := &config.Config{Apps: map[string]*config.App{"app": pushtest.NewAPNs(t).Config()}}
	if err := cfg.Complete(); err != nil {
		t.Fatal(err)
	}
	gw, reg := newGatewayForServe(t, cfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- gw.Serve(ctx, ln, mln, reg) }()
	for _, u := range []string{"http://" + ln.Addr().String() + "/health", "http://" + mln.Addr().String() + "/health", "http://" + mln.Addr().String() + "/metrics"} {
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("%s: %d", u, resp.StatusCode)
		}
		if strings.HasSuffix(u, "/metrics") && !bytes.Contains(b, []byte("atoll_push_notify_in_flight_requests")) {
			t.Errorf("metrics lack the gauge: %s", b)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not stop")
	}
}
