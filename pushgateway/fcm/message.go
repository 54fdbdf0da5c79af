package fcm

import (
	"encoding/json"
	"fmt"
	"maps"
	"strconv"

	"github.com/atoll-matrix/atoll/pushgateway/push"
)

// Message builds the HTTP v1 send body for n. The pusher's default_payload
// is the base of the message object (so it may set android/apns/webpush
// options); data carries the notification's fields as strings, only ids
// and counts for event_id_only pushers.
func Message(n *push.Notification, d push.Device) ([]byte, error) {
	data := dataFields(n, d)
	if size(data) > maxData {
		delete(data, "content")
	}
	for _, k := range []string{"room_name", "sender_display_name", "room_alias"} {
		if size(data) <= maxData {
			break
		}
		delete(data, k)
	}
	if size(data) > maxData {
		return nil, fmt.Errorf("fcm data payload exceeds %d bytes", maxData)
	}
	msg := maps.Clone(d.DefaultPayload())
	if msg == nil {
		msg = map[string]any{}
	}
	if base, ok := msg["data"].(map[string]any); ok {
		for k, v := range base {
			if s, ok := v.(string); ok {
				if _, set := data[k]; !set {
					data[k] = s
				}
			}
		}
	}
	msg["data"] = data
	msg["token"] = d.Pushkey
	prio := "HIGH"
	if !n.HighPriority() {
		prio = "NORMAL"
	}
	android, _ := msg["android"].(map[string]any)
	android = maps.Clone(android)
	if android == nil {
		android = map[string]any{}
	}
	android["priority"] = prio
	msg["android"] = android
	b, err := json.Marshal(map[string]any{"message": msg})
	if err != nil {
		return nil, fmt.Errorf("encode fcm message: %w", err)
	}
	return b, nil
}

func dataFields(n *push.Notification, d push.Device) map[string]string {
	m := map[string]string{}
	set := func(k, v string) {
		if v != "" {
			m[k] = v
		}
	}
	set("event_id", n.EventID)
	set("room_id", n.RoomID)
	set("prio", n.Prio)
	if n.Counts.Unread != nil {
		m["unread"] = strconv.FormatInt(*n.Counts.Unread, 10)
	}
	if n.Counts.MissedCalls != nil {
		m["missed_calls"] = strconv.FormatInt(*n.Counts.MissedCalls, 10)
	}
	if d.Format() == push.FormatEventIDOnly {
		return m
	}
	set("type", n.Type)
	set("sender", n.Sender)
	set("sender_display_name", n.SenderDisplayName)
	set("room_name", n.RoomName)
	set("room_alias", n.RoomAlias)
	if n.UserIsTarget {
		m["user_is_target"] = "true"
	}
	if len(n.Content) > 0 {
		m["content"] = string(n.Content)
	}
	return m
}

func size(m map[string]string) int {
	s := 0
	for k, v := range m {
		s += len(k) + len(v)
	}
	return s
}
