package pushgateway_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/atoll-matrix/atoll/pushgateway/config"
	"github.com/atoll-matrix/atoll/pushgateway/push"
	"github.com/atoll-matrix/atoll/pushgateway/pushtest"
)

func TestAPNsDelivery(t *testing.T) {
	for _, certAuth := range []bool{false, true} {
		name := "token"
		if certAuth {
			name = "certificate"
		}
		t.Run(name, func(t *testing.T) {
			fake := pushtest.NewAPNs(t)
			if certAuth {
				fake = pushtest.NewAPNsCertAuth(t)
			}
			app := fake.Config()
			app.APNs.CollapseByRoom = true
			e := newEnv(t, map[string]*config.App{"org.example.ios.*": app})
			full, fullToken := apnsDevice("org.example.ios.prod", 1)
			slim, slimToken := apnsDevice("org.example.ios.prod", 2)
			slim.Data = map[string]any{"format": "event_id_only"}
			for i := range 3 {
				r := e.notify(message("$event"+string(rune('a'+i)), full, slim))
				expectStatus(t, r, 200, "")
				if len(r.Rejected) != 0 {
					t.Fatalf("rejected %v", r.Rejected)
				}
			}
			got := fake.Received()
			if len(got) != 6 {
				t.Fatalf("fake received %d notifications, want 6", len(got))
			}
			if !certAuth && fake.DistinctTokens() != 1 {
				t.Errorf("%d distinct provider tokens for 6 sends, want 1 (cached)", fake.DistinctTokens())
			}
			for _, g := range got {
				aps, _ := g.Payload["aps"].(map[string]any)
				if aps["badge"] != 3.0 || g.Payload["event_id"] == nil || g.Payload["room_id"] != "!room:example.org" {
					t.Errorf("payload %v lacks badge or ids", g.Payload)
				}
				if g.Header.Get("apns-priority") != "10" || g.Header.Get("apns-collapse-id") == "" {
					t.Errorf("headers %v", g.Header)
				}
				b, _ := json.Marshal(g.Payload)
				switch g.Token {
				case fullToken:
					alert, _ := aps["alert"].(map[string]any)
					if alert["body"] != "secret hello" || alert["title"] != "Pharmacy" {
						t.Errorf("full payload alert %v", alert)
					}
				case slimToken:
					if strings.Contains(string(b), "secret") || strings.Contains(string(b), "alice") {
						t.Errorf("event_id_only payload leaks content: %s", b)
					}
				default:
					t.Errorf("unexpected token %s", g.Token)
				}
			}
		})
	}
}

func TestFCMDelivery(t *testing.T) {
	fake := pushtest.NewFCM(t)
	e := newEnv(t, map[string]*config.App{"org.example.android": fake.Config()})
	full := push.Device{AppID: "org.example.android", Pushkey: "fcm-token-full"}
	slim := push.Device{AppID: "org.example.android", Pushkey: "fcm-token-slim", Data: map[string]any{"format": "event_id_only"}}
	for _, id := range []string{"$e1", "$e2", "$e3"} {
		expectStatus(t, e.notify(message(id, full, slim)), 200, "")
	}
	if g := fake.TokenGrants(); g != 1 {
		t.Errorf("%d access tokens fetched for 6 sends, want 1 (cached)", g)
	}
	got := fake.Received()
	if len(got) != 6 {
		t.Fatalf("received %d, want 6", len(got))
	}
	for _, m := range got {
		if m.Data["event_id"] == "" || m.Data["room_id"] != "!room:example.org" || m.Data["unread"] != "3" {
			t.Errorf("data %v", m.Data)
		}
		if m.Android["priority"] != "HIGH" {
			t.Errorf("android %v", m.Android)
		}
		switch m.Token {
		case full.Pushkey:
			if !strings.Contains(m.Data["content"], "secret hello") || m.Data["sender"] != "@alice:example.org" {
				t.Errorf("full data %v", m.Data)
			}
		case slim.Pushkey:
			if _, ok := m.Data["content"]; ok || m.Data["sender"] != "" {
				t.Errorf("event_id_only data leaks content: %v", m.Data)
			}
		}
	}
}

func webPushDevice(appID string, s *pushtest.Subscription) push.Device {
	return push.Device{AppID: appID, Pushkey: s.P256dh, Data: map[string]any{"endpoint": s.Endpoint, "auth": s.Auth}}
}

func TestWebPushDelivery(t *testing.T) {
	fake := pushtest.NewWebPush(t)
	e := newEnv(t, map[string]*config.App{"org.example.web": fake.Config()})
	full := webPushDevice("org.example.web", fake.Subscribe("full"))
	slim := webPushDevice("org.example.web", fake.Subscribe("slim"))
	slim.Data["format"] = "event_id_only"
	n := message("$e1", full, slim)
	n.Prio = "low"
	expectStatus(t, e.notify(n), 200, "")
	got := fake.Received()
	if len(got) != 2 {
		t.Fatalf("received %d, want 2", len(got))
	}
	for _, m := range got {
		if m.Payload["event_id"] != "$e1" || m.Header.Get("Urgency") != "normal" || m.Header.Get("TTL") != "3600" {
			t.Errorf("message %v %v", m.Payload, m.Header)
		}
		content, _ := m.Payload["content"].(map[string]any)
		switch m.Subscription {
		case "full":
			if content["body"] != "secret hello" {
				t.Errorf("full payload %v", m.Payload)
			}
		case "slim":
			if content != nil || m.Payload["sender"] != nil {
				t.Errorf("event_id_only payload leaks content: %v", m.Payload)
			}
		}
	}
}

func TestUnifiedPushDelivery(t *testing.T) {
	var mu sync.Mutex
	var bodies []push.Request
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req push.Request
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			t.Errorf("unifiedpush body: %v", err)
		}
		mu.Lock()
		bodies = append(bodies, req)
		mu.Unlock()
		if strings.HasSuffix(r.URL.Path, "/gone") {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(srv.Close)
	e := newEnv(t, map[string]*config.App{"org.example.up": {Type: config.TypeUnifiedPush, UnifiedPush: &config.UnifiedPush{
		AllowedEndpoints: []string{"127.0.0.1"}, AllowPrivateAddressesForTests: true,
	}}})
	ok := push.Device{AppID: "org.example.up", Pushkey: srv.URL + "/up/ok"}
	gone := push.Device{AppID: "org.example.up", Pushkey: srv.URL + "/up/gone"}
	r := e.notify(message("$e1", ok, gone))
	expectStatus(t, r, 200, "")
	if !slices.Equal(r.Rejected, []string{gone.Pushkey}) {
		t.Errorf("rejected %v, want the gone endpoint", r.Rejected)
	}
	if len(bodies) != 2 || bodies[0].Notification.EventID != "$e1" || len(bodies[0].Notification.Devices) != 1 {
		t.Errorf("bodies %+v", bodies)
	}
}

// TestErrorMapping checks each provider's permanent errors become
// rejections and transient ones are retried until the fake succeeds.
func TestErrorMapping(t *testing.T) {
	type want struct {
		status   int
		rejected bool
		calls    int
		minWait  time.Duration
	}
	apnsErr := func(status int, reason string) pushtest.Reply {
		return pushtest.Reply{Status: status, Body: `{"reason":"` + reason + `"}`}
	}
	fcmErr := func(status int, code, errorCode, msg string) pushtest.Reply {
		return pushtest.Reply{Status: status, Body: `{"error":{"code":` + strconv.Itoa(status) + `,"status":"` + code +
			`","message":"` + msg + `","details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"` + errorCode + `"}]}}`}
	}
	tests := []struct {
		name     string
		provider string
		replies  []pushtest.Reply
		timeout  time.Duration
		want     want
	}{
		{"apns bad device token", "apns", []pushtest.Reply{apnsErr(400, "BadDeviceToken")}, 0, want{200, true, 1, 0}},
		{"apns unregistered", "apns", []pushtest.Reply{apnsErr(410, "Unregistered")}, 0, want{200, true, 1, 0}},
		{"apns wrong topic", "apns", []pushtest.Reply{apnsErr(400, "DeviceTokenNotForTopic")}, 0, want{200, true, 1, 0}},
		{"apns bad payload is not the pushkey's fault", "apns", []pushtest.Reply{apnsErr(400, "PayloadTooLarge")}, 0, want{200, false, 1, 0}},
		{"apns 503 then ok", "apns", []pushtest.Reply{apnsErr(503, "ServiceUnavailable")}, 0, want{200, false, 2, 0}},
		{"apns 500 twice then ok", "apns", []pushtest.Reply{apnsErr(500, "InternalServerError"), apnsErr(500, "InternalServerError")}, 0, want{200, false, 3, 0}},
		{"apns 429 retry-after honoured", "apns", []pushtest.Reply{{Status: 429, Body: `{"reason":"TooManyRequests"}`, RetryAfter: "1"}}, 0, want{200, false, 2, time.Second}},
		{"apns retry-after beyond budget", "apns", []pushtest.Reply{{Status: 429, Body: `{"reason":"TooManyRequests"}`, RetryAfter: "30"}}, 2 * time.Second, want{502, false, 1, 0}},
		{"apns down past the deadline", "apns", slices.Repeat([]pushtest.Reply{apnsErr(503, "ServiceUnavailable")}, 100), 300 * time.Millisecond, want{502, false, -1, 0}},
		{"fcm unregistered", "fcm", []pushtest.Reply{fcmErr(404, "NOT_FOUND", "UNREGISTERED", "Requested entity was not found.")}, 0, want{200, true, 1, 0}},
		{"fcm invalid token", "fcm", []pushtest.Reply{fcmErr(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "The registration token is not a valid FCM registration token")}, 0, want{200, true, 1, 0}},
		{"fcm invalid payload", "fcm", []pushtest.Reply{fcmErr(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "Invalid JSON payload received.")}, 0, want{200, false, 1, 0}},
		{"fcm unavailable then ok", "fcm", []pushtest.Reply{fcmErr(503, "UNAVAILABLE", "UNAVAILABLE", "")}, 0, want{200, false, 2, 0}},
		{"fcm quota retry-after", "fcm", []pushtest.Reply{{Status: 429, Body: `{"error":{"status":"RESOURCE_EXHAUSTED"}}`, RetryAfter: "1"}}, 0, want{200, false, 2, time.Second}},
		{"webpush gone", "webpush", []pushtest.Reply{{Status: 410}}, 0, want{200, true, 1, 0}},
		{"webpush not found", "webpush", []pushtest.Reply{{Status: 404}}, 0, want{200, true, 1, 0}},
		{"webpush too large", "webpush", []pushtest.Reply{{Status: 413}}, 0, want{200, false, 1, 0}},
		{"webpush 502 then ok", "webpush", []pushtest.Reply{{Status: 502}}, 0, want{200, false, 2, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var (
				app   *config.App
				dev   push.Device
				key   string
				calls func() int
			)
			switch tt.provider {
			case "apns":
				f := pushtest.NewAPNs(t)
				app = f.Config()
				dev, key = apnsDevice("app", 1)
				f.Queue(key, tt.replies...)
				calls = func() int { return f.Calls(key) }
			case "fcm":
				f := pushtest.NewFCM(t)
				app = f.Config()
				dev, key = push.Device{AppID: "app", Pushkey: "fcm-token"}, "fcm-token"
				f.Queue(key, tt.replies...)
				calls = func() int { return f.Calls(key) }
			case "webpush":
				f := pushtest.NewWebPush(t)
				app = f.Config()
				s := f.Subscribe("sub")
				dev, key = webPushDevice("app", s), "sub"
				f.Queue(key, tt.replies...)
				calls = func() int { return f.Calls(key) }
			}
			e := newEnv(t, map[string]*config.App{"app": app}, func(c *config.Config) {
				if tt.timeout > 0 {
					c.NotifyTimeout = tt.timeout
				}
			})
			start := time.Now()
			r := e.notify(message("$e1", dev))
			elapsed := time.Since(start)
			if r.Status != tt.want.status {
				t.Fatalf("status %d (%s), want %d", r.Status, r.Raw, tt.want.status)
			}
			if got := len(r.Rejected) == 1 && r.Rejected[0] == dev.Pushkey; got != tt.want.rejected {
				t.Errorf("rejected %v, want rejected=%v", r.Rejected, tt.want.rejected)
			}
			if tt.want.calls >= 0 && calls() != tt.want.calls {
				t.Errorf("provider called %d times, want %d", calls(), tt.want.calls)
			}
			if tt.want.calls < 0 && calls() < 3 {
				t.Errorf("provider called %d times, want retries", calls())
			}
			if elapsed < tt.want.minWait {
				t.Errorf("answered after %v, Retry-After asked for %v", elapsed, tt.want.minWait)
			}
			if tt.timeout > 0 && elapsed > tt.timeout+time.Second {
				t.Errorf("answered after %v, budget %v", elapsed, tt.timeout)
			}
		})
	}
}

// TestDedupOfRetriedNotify: a notify for two devices where one fails
// transiently gets 502; the homeserver's retry reaches only the failed
// device, so nobody's phone rings twice.
func TestDedupOfRetriedNotify(t *testing.T) {
	fake := pushtest.NewAPNs(t)
	e := newEnv(t, map[string]*config.App{"app": fake.Config()}, func(c *config.Config) {
		c.NotifyTimeout = 300 * time.Millisecond
	})
	a, aTok := apnsDevice("app", 1)
	b, bTok := apnsDevice("app", 2)
	fake.Queue(bTok, slices.Repeat([]pushtest.Reply{{Status: 503, Body: `{"reason":"ServiceUnavailable"}`}}, 1000)...)
	expectStatus(t, e.notify(message("$e1", a, b)), 502, "M_UNKNOWN")
	if fake.Calls(aTok) != 1 {
		t.Fatalf("device a called %d times", fake.Calls(aTok))
	}
	fake.Clear(bTok) // APNs recovers; the homeserver retries the notify.
	r := e.notify(message("$e1", a, b))
	expectStatus(t, r, 200, "")
	if fake.Calls(aTok) != 1 {
		t.Errorf("device a rang %d times, want 1", fake.Calls(aTok))
	}
	count := map[string]int{}
	for _, g := range fake.Received() {
		count[g.Token]++
	}
	if count[aTok] != 1 || count[bTok] != 1 {
		t.Errorf("deliveries %v, want one each", count)
	}
	// A different event to the same devices is delivered.
	expectStatus(t, e.notify(message("$e2", a, b)), 200, "")
	if len(fake.Received()) != 4 {
		t.Errorf("received %d, want 4", len(fake.Received()))
	}
}

func TestConcurrencyLimit(t *testing.T) {
	fake := pushtest.NewAPNs(t)
	fake.SetDelay(40 * time.Millisecond)
	app := fake.Config()
	app.MaxConcurrency = 2
	e := newEnv(t, map[string]*config.App{"app": app})
	var devs []push.Device
	for i := range 8 {
		d, _ := apnsDevice("app", i)
		devs = append(devs, d)
	}
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Go(func() { expectStatus(t, e.notify(message("$e"+string(rune('0'+i)), devs...)), 200, "") })
	}
	wg.Wait()
	if len(fake.Received()) != 16 {
		t.Fatalf("received %d, want 16", len(fake.Received()))
	}
	if m := fake.MaxConcurrent(); m != 2 {
		t.Errorf("max concurrent sends %d, want 2", m)
	}
}
