package apns

import (
	"encoding/json"
	"fmt"
	"maps"

	"github.com/atoll-matrix/atoll/pushgateway/push"
)

// Payload builds the APNs JSON for n: the pusher's default_payload as a
// base, the badge from counts, an alert from the event unless the pusher
// asked for event_id_only, and the ids and counts at the top level for the
// app's notification service extension.
func Payload(n *push.Notification, d push.Device) ([]byte, error) {
	for _, bodyMax := range []int{1024, 256, 0} {
		b, err := json.Marshal(payload(n, d, bodyMax))
		if err != nil {
			return nil, fmt.Errorf("encode apns payload: %w", err)
		}
		if len(b) <= maxPayload {
			return b, nil
		}
	}
	return nil, fmt.Errorf("apns payload exceeds %d bytes", maxPayload)
}

func payload(n *push.Notification, d push.Device, bodyMax int) map[string]any {
	p := maps.Clone(d.DefaultPayload())
	if p == nil {
		p = map[string]any{}
	}
	aps, _ := p["aps"].(map[string]any)
	aps = maps.Clone(aps)
	if aps == nil {
		aps = map[string]any{}
	}
	if n.Counts.Unread != nil {
		aps["badge"] = *n.Counts.Unread
		p["unread_count"] = *n.Counts.Unread
	}
	if n.Counts.MissedCalls != nil {
		p["missed_calls"] = *n.Counts.MissedCalls
	}
	if n.EventID != "" {
		p["event_id"] = n.EventID
	}
	if n.RoomID != "" {
		p["room_id"] = n.RoomID
	}
	full := d.Format() != push.FormatEventIDOnly && n.EventID != ""
	if full {
		title := n.RoomName
		if title == "" {
			title = n.SenderDisplayName
		}
		if title == "" {
			title = n.Sender
		}
		alert := map[string]any{"title": push.Truncate(title, 256)}
		if body := n.ContentBody(bodyMax); body != "" {
			alert["body"] = body
		}
		aps["alert"] = alert
		aps["mutable-content"] = 1
		if s, ok := d.Tweaks["sound"].(string); ok && s != "" {
			aps["sound"] = s
		}
		p["type"] = n.Type
		p["sender"] = n.Sender
	}
	p["prio"] = n.Prio
	if len(aps) > 0 {
		p["aps"] = aps
	}
	return p
}
