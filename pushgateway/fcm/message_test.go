package fcm_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/atoll-matrix/atoll/pushgateway/fcm"
	"github.com/atoll-matrix/atoll/pushgateway/push"
)

func TestMessage(t *testing.T) {
	unread := int64(4)
	tests := []struct {
		name        string
		n           push.Notification
		d           push.Device
		wantData    map[string]string
		absent      []string
		wantPrio    string
		wantDefault bool
	}{
		{
			name:     "full",
			n:        push.Notification{EventID: "$e", RoomID: "!r", Sender: "@a:x", Type: "m.room.message", UserIsTarget: true, Content: json.RawMessage(`{"body":"hi"}`), Counts: push.Counts{Unread: &unread}},
			d:        push.Device{Pushkey: "tok"},
			wantData: map[string]string{"event_id": "$e", "room_id": "!r", "sender": "@a:x", "unread": "4", "user_is_target": "true", "content": `{"body":"hi"}`},
			wantPrio: "HIGH",
		},
		{
			name:     "event_id_only low prio",
			n:        push.Notification{EventID: "$e", RoomID: "!r", Sender: "@a:x", Prio: "low", Content: json.RawMessage(`{"body":"hi"}`)},
			d:        push.Device{Pushkey: "tok", Data: map[string]any{"format": "event_id_only"}},
			wantData: map[string]string{"event_id": "$e", "room_id": "!r", "prio": "low"},
			absent:   []string{"sender", "content"},
			wantPrio: "NORMAL",
		},
		{
			name:     "oversized content dropped",
			n:        push.Notification{EventID: "$e", Content: json.RawMessage(`{"body":"` + strings.Repeat("x", 5000) + `"}`)},
			d:        push.Device{Pushkey: "tok"},
			wantData: map[string]string{"event_id": "$e"},
			absent:   []string{"content"},
			wantPrio: "HIGH",
		},
		{
			name:        "default payload is the base",
			n:           push.Notification{EventID: "$e"},
			d:           push.Device{Pushkey: "tok", Data: map[string]any{"default_payload": map[string]any{"data": map[string]any{"app": "x", "event_id": "spoof"}, "android": map[string]any{"ttl": "60s"}}}},
			wantData:    map[string]string{"event_id": "$e", "app": "x"},
			wantPrio:    "HIGH",
			wantDefault: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := fcm.Message(&tt.n, tt.d)
			if err != nil {
				t.Fatal(err)
			}
			var m struct {
				Message struct {
					Token   string            `json:"token"`
					Data    map[string]string `json:"data"`
					Android map[string]any    `json:"android"`
				} `json:"message"`
			}
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatal(err)
			}
			if m.Message.Token != "tok" || m.Message.Android["priority"] != tt.wantPrio {
				t.Errorf("message %s", b)
			}
			for k, v := range tt.wantData {
				if m.Message.Data[k] != v {
					t.Errorf("data[%s] = %q, want %q", k, m.Message.Data[k], v)
				}
			}
			for _, k := range tt.absent {
				if _, ok := m.Message.Data[k]; ok {
					t.Errorf("data has %s", k)
				}
			}
			if tt.wantDefault && m.Message.Android["ttl"] != "60s" {
				t.Errorf("default android options lost: %v", m.Message.Android)
			}
		})
	}
}
