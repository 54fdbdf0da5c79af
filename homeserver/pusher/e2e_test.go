package pusher_test

import (
	"encoding/base64"
	"encoding/hex"
	"log/slog"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/atoll-matrix/atoll/internal/atolltest/shardtest"
	"github.com/atoll-matrix/atoll/pushgateway"
	"github.com/atoll-matrix/atoll/pushgateway/config"
	"github.com/atoll-matrix/atoll/pushgateway/pushtest"
)

// TestMessageReachesPhone runs the whole push path over real HTTP: a message in a room makes
// the shard evaluate push rules and call the push gateway, which delivers to a fake APNs
// (HTTP/2, TLS, JWT checked); a pushkey APNs rejects makes the shard delete the pusher.
func TestMessageReachesPhone(t *testing.T) {
	apns := pushtest.NewAPNs(t)
	cfg := &config.Config{NotifyTimeout: 5 * time.Second, InitialBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
		MaxBodyBytes: 64 << 10, Apps: map[string]*config.App{"org.atoll.ios": apns.Config()}}
	if err := cfg.Complete(); err != nil {
		t.Fatal(err)
	}
	gw, err := pushgateway.New(cfg, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gw.Close)
	gwSrv := httptest.NewServer(gw)
	t.Cleanup(gwSrv.Close)

	s := shardtest.New(t)
	tn := s.CreateTenant(t, "push")
	alice := tn.Register(t, "alice")
	bob := tn.Register(t, "bob")
	room := url.PathEscape(alice.MustDo(t, "POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "trusted_private_chat", "invite": []string{bob.UserID}, "is_direct": true})["room_id"].(string))
	bob.MustDo(t, "POST", "/_matrix/client/v3/join/"+room, map[string]any{})

	good := []byte("bob-phone-token-0123456789abcdef")
	bad := []byte("bob-old-phone-token-0123456789ab")
	for _, tok := range [][]byte{good, bad} {
		bob.MustDo(t, "POST", "/_matrix/client/v3/pushers/set", map[string]any{
			"kind": "http", "app_id": "org.atoll.ios", "pushkey": base64.StdEncoding.EncodeToString(tok),
			"app_display_name": "Atoll", "device_display_name": "phone", "lang": "en", "append": true,
			"data": map[string]any{"url": gwSrv.URL + "/_matrix/push/v1/notify"},
		})
	}
	apns.Queue(hex.EncodeToString(bad), pushtest.Reply{Status: 410, Body: `{"reason":"Unregistered"}`})

	alice.MustDo(t, "PUT", "/_matrix/client/v3/rooms/"+room+"/send/m.room.message/1", map[string]any{"msgtype": "m.text", "body": "the lab results are in"})

	deadline := time.Now().Add(20 * time.Second)
	for {
		var got bool
		for _, r := range apns.Received() {
			if r.Token == hex.EncodeToString(good) {
				got = true
				aps, _ := r.Payload["aps"].(map[string]any)
				if aps == nil {
					t.Fatalf("APNs payload without aps: %v", r.Payload)
				}
			}
		}
		pushers := bob.MustDo(t, "GET", "/_matrix/client/v3/pushers", nil)
		list, _ := pushers["pushers"].([]any)
		if got && len(list) == 1 {
			if list[0].(map[string]any)["pushkey"] != base64.StdEncoding.EncodeToString(good) {
				t.Fatalf("the wrong pusher was removed: %v", list)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 20s: APNs received %d notifications, bob has %d pushers", len(apns.Received()), len(list))
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The message (and the invite before it, by .m.rule.invite_for_me) are listed for bob.
	n := bob.MustDo(t, "GET", "/_matrix/client/v3/notifications", nil)
	list, _ := n["notifications"].([]any)
	var types []string
	for _, item := range list {
		ev, _ := item.(map[string]any)["event"].(map[string]any)
		types = append(types, ev["type"].(string))
	}
	if len(types) != 2 || types[0] != "m.room.message" || types[1] != "m.room.member" {
		t.Fatalf("notifications are %v, want the message then the invite", types)
	}
}
