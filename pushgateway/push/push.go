// Package push holds the Matrix Push Gateway API notification model shared by
// the gateway and its providers, and the error kinds providers report: a
// rejected pushkey (permanent, the homeserver deletes the pusher), a
// transient failure (retry later) and a permanent failure that is not the
// pushkey's fault.
package push

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"
)

// FormatEventIDOnly is the pusher data format that asks for payloads
// carrying only identifiers and counts, never event content.
const FormatEventIDOnly = "event_id_only"

// Request is the body of POST /_matrix/push/v1/notify.
type Request struct {
	Notification *Notification `json:"notification"`
}

// Notification is the spec's notification object.
type Notification struct {
	EventID           string          `json:"event_id,omitempty"`
	RoomID            string          `json:"room_id,omitempty"`
	Type              string          `json:"type,omitempty"`
	Sender            string          `json:"sender,omitempty"`
	SenderDisplayName string          `json:"sender_display_name,omitempty"`
	RoomName          string          `json:"room_name,omitempty"`
	RoomAlias         string          `json:"room_alias,omitempty"`
	UserIsTarget      bool            `json:"user_is_target,omitempty"`
	Prio              string          `json:"prio,omitempty"`
	Content           json.RawMessage `json:"content,omitempty"`
	Counts            Counts          `json:"counts"`
	Devices           []Device        `json:"devices"`
}

// Counts are the badge counts of a notification.
type Counts struct {
	Unread      *int64 `json:"unread,omitempty"`
	MissedCalls *int64 `json:"missed_calls,omitempty"`
}

// Device is one pusher the notification goes to.
type Device struct {
	AppID     string         `json:"app_id"`
	Pushkey   string         `json:"pushkey"`
	PushkeyTS int64          `json:"pushkey_ts,omitempty"`
	Data      map[string]any `json:"data,omitempty"`
	Tweaks    map[string]any `json:"tweaks,omitempty"`
}

// Format returns the pusher data format ("" or FormatEventIDOnly).
func (d Device) Format() string {
	s, _ := d.Data["format"].(string)
	return s
}

// DataString returns a string value from the pusher data, or "".
func (d Device) DataString(key string) string {
	s, _ := d.Data[key].(string)
	return s
}

// DefaultPayload returns the pusher data's default_payload object, if any.
func (d Device) DefaultPayload() map[string]any {
	m, _ := d.Data["default_payload"].(map[string]any)
	return m
}

// HighPriority reports whether the notification should wake the device now.
func (n *Notification) HighPriority() bool { return n.Prio != "low" }

// EventIDOnly returns a copy of n carrying only identifiers, counts and
// priority: what an event_id_only pusher may see.
func (n *Notification) EventIDOnly() *Notification {
	return &Notification{EventID: n.EventID, RoomID: n.RoomID, Prio: n.Prio, Counts: n.Counts}
}

// Result is how one delivery attempt ended.
type Result int

const (
	// Delivered means the provider accepted the notification.
	Delivered Result = iota
	// Rejected means the pushkey is permanently invalid.
	Rejected
	// Transient means the attempt may succeed later.
	Transient
	// Failed means the attempt failed permanently for a reason other than
	// the pushkey (bad payload, provider configuration): retrying won't help.
	Failed
)

// String returns the metric label for r.
func (r Result) String() string {
	switch r {
	case Delivered:
		return "delivered"
	case Rejected:
		return "rejected"
	case Transient:
		return "transient"
	case Failed:
		return "failed"
	}
	return "unknown"
}

// Error is a classified delivery failure returned by providers.
type Error struct {
	Result     Result        // Rejected, Transient or Failed
	RetryAfter time.Duration // from the provider's Retry-After, 0 if none
	Err        error
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %v", e.Result, e.Err) }
func (e *Error) Unwrap() error { return e.Err }

// RejectedError marks err as a permanent pushkey failure.
func RejectedError(err error) error { return &Error{Result: Rejected, Err: err} }

// TransientError marks err as retryable, after at least retryAfter.
func TransientError(err error, retryAfter time.Duration) error {
	return &Error{Result: Transient, RetryAfter: retryAfter, Err: err}
}

// FailedError marks err as permanent but not caused by the pushkey.
func FailedError(err error) error { return &Error{Result: Failed, Err: err} }

// Classify returns the Result for a provider error: nil is Delivered, an
// unclassified error is Transient (network trouble, timeouts).
func Classify(err error) (Result, time.Duration) {
	if err == nil {
		return Delivered, 0
	}
	var pe *Error
	if errors.As(err, &pe) {
		return pe.Result, pe.RetryAfter
	}
	return Transient, 0
}

// ContentBody returns content.body (for messages) truncated to max bytes at
// a rune boundary, or "".
func (n *Notification) ContentBody(max int) string {
	if len(n.Content) == 0 {
		return ""
	}
	var c struct {
		Body any `json:"body"`
	}
	if json.Unmarshal(n.Content, &c) != nil {
		return ""
	}
	s, _ := c.Body.(string)
	return Truncate(s, max)
}

// Truncate shortens s to at most max bytes without splitting a rune.
func Truncate(s string, max int) string {
	if len(s) <= max {
		return s
	}
	for max > 0 && !utf8.RuneStart(s[max]) {
		max--
	}
	return s[:max]
}
