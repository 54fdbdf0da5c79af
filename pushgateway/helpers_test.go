package pushgateway_test

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/atoll-matrix/atoll/pushgateway"
	"github.com/atoll-matrix/atoll/pushgateway/config"
	"github.com/atoll-matrix/atoll/pushgateway/push"
)

// env is a gateway under test served on loopback.
type env struct {
	t   testing.TB
	URL string
	reg *prometheus.Registry
	hc  *http.Client
}

func newEnv(t testing.TB, apps map[string]*config.App, mutate ...func(*config.Config)) *env {
	t.Helper()
	cfg := &config.Config{
		NotifyTimeout:  5 * time.Second,
		InitialBackoff: 10 * time.Millisecond,
		MaxBackoff:     50 * time.Millisecond,
		MaxBodyBytes:   16 << 10,
		Apps:           apps,
	}
	for _, m := range mutate {
		m(cfg)
	}
	if err := cfg.Complete(); err != nil {
		t.Fatalf("config: %v", err)
	}
	reg := prometheus.NewRegistry()
	gw, err := pushgateway.New(cfg, slog.New(slog.DiscardHandler), reg)
	if err != nil {
		t.Fatalf("new gateway: %v", err)
	}
	t.Cleanup(gw.Close)
	srv := httptest.NewServer(gw)
	t.Cleanup(srv.Close)
	return &env{t: t, URL: srv.URL, reg: reg, hc: srv.Client()}
}

// response is a decoded gateway answer.
type response struct {
	Status   int
	Rejected []string
	ErrCode  string
	Raw      string
}

func (e *env) post(body []byte) response {
	e.t.Helper()
	resp, err := e.hc.Post(e.URL+pushgateway.NotifyPath, "application/json", bytes.NewReader(body))
	if err != nil {
		e.t.Fatalf("post notify: %v", err)
	}
	defer resp.Body.Close()
	return decodeResponse(e.t, resp)
}

func decodeResponse(t testing.TB, resp *http.Response) response {
	t.Helper()
	b, _ := io.ReadAll(resp.Body)
	r := response{Status: resp.StatusCode, Raw: string(b)}
	var v struct {
		Rejected *[]string `json:"rejected"`
		ErrCode  string    `json:"errcode"`
		Error    string    `json:"error"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("response %d is not JSON: %q", resp.StatusCode, b)
	}
	if resp.StatusCode == http.StatusOK {
		if v.Rejected == nil {
			t.Fatalf("200 response without rejected: %s", b)
		}
		r.Rejected = *v.Rejected
	} else if v.ErrCode == "" || v.Error == "" {
		t.Fatalf("error response %d without errcode/error: %s", resp.StatusCode, b)
	}
	r.ErrCode = v.ErrCode
	return r
}

func (e *env) notify(n *push.Notification) response {
	e.t.Helper()
	b, err := json.Marshal(push.Request{Notification: n})
	if err != nil {
		e.t.Fatal(err)
	}
	return e.post(b)
}

func i64(v int64) *int64 { return &v }

// message is a full m.room.message notification for devices.
func message(eventID string, devices ...push.Device) *push.Notification {
	return &push.Notification{
		EventID:           eventID,
		RoomID:            "!room:example.org",
		Type:              "m.room.message",
		Sender:            "@alice:example.org",
		SenderDisplayName: "Alice",
		RoomName:          "Pharmacy",
		Prio:              "high",
		Content:           json.RawMessage(`{"msgtype":"m.text","body":"secret hello"}`),
		Counts:            push.Counts{Unread: i64(3), MissedCalls: i64(1)},
		Devices:           devices,
	}
}

// apnsDevice returns a device with an APNs pushkey (base64 token) and the
// hex token the fake sees.
func apnsDevice(appID string, i int) (push.Device, string) {
	raw := []byte(fmt.Sprintf("device-token-%04d-0123456789abcdef", i))
	return push.Device{AppID: appID, Pushkey: base64.StdEncoding.EncodeToString(raw)}, hex.EncodeToString(raw)
}

func expectStatus(t testing.TB, r response, status int, errcode string) {
	t.Helper()
	if r.Status != status || r.ErrCode != errcode {
		t.Fatalf("got %d %q (%s), want %d %q", r.Status, r.ErrCode, r.Raw, status, errcode)
	}
}
