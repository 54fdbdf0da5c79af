// Package webpush sends Web Push messages (RFC 8030) with aes128gcm payload
// encryption (RFC 8291) and VAPID authentication (RFC 8292), only to push
// services on an allow-list and never to non-public addresses.
//
// Pushers follow Sygnal's convention: the pushkey is the subscription's
// p256dh public key (base64url), data.endpoint the push endpoint URL and
// data.auth the authentication secret (base64url).
package webpush

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/atoll-matrix/atoll/pushgateway/config"
	"github.com/atoll-matrix/atoll/pushgateway/push"
	"github.com/atoll-matrix/atoll/pushgateway/safedial"
)

// Client sends Web Push messages for one app.
type Client struct {
	cfg       config.WebPush
	allow     *safedial.AllowList
	http      *http.Client
	vapid     *vapid
	now       func() time.Time
	allowHTTP bool
}

// New reads the VAPID key and builds a client.
func New(cfg config.WebPush, now func() time.Time) (*Client, error) {
	if now == nil {
		now = time.Now
	}
	b, err := os.ReadFile(cfg.VAPIDPrivateKeyFile)
	if err != nil {
		return nil, fmt.Errorf("read vapid_private_key_file: %w", err)
	}
	key, err := ParseVAPIDKey(b)
	if err != nil {
		return nil, err
	}
	v, err := newVAPID(key, cfg.VAPIDContact, now)
	if err != nil {
		return nil, err
	}
	return &Client{
		cfg:   cfg,
		allow: safedial.NewAllowList(cfg.AllowedEndpoints),
		http:  safedial.NewClient(safedial.Options{AllowPrivate: cfg.AllowPrivateAddressesForTests, MaxConnsPerHost: 64}),
		vapid: v,
		now:   now,
		// Plain http endpoints only exist on test loopback servers.
		allowHTTP: cfg.AllowPrivateAddressesForTests,
	}, nil
}

// Close releases idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// Send encrypts n for the subscription in d and posts it to its endpoint.
func (c *Client) Send(ctx context.Context, n *push.Notification, d push.Device) error {
	uaPublic, err := decodeB64(d.Pushkey)
	if err != nil {
		return push.RejectedError(fmt.Errorf("web push pushkey (p256dh): %w", err))
	}
	auth, err := decodeB64(d.DataString("auth"))
	if err != nil || len(auth) != 16 {
		return push.RejectedError(errors.New("web push data.auth is not a 16-byte base64url secret"))
	}
	u, err := c.allow.CheckURL(d.DataString("endpoint"), c.allowHTTP)
	if err != nil {
		return push.RejectedError(err)
	}
	plain, err := Payload(n, d)
	if err != nil {
		return push.FailedError(err)
	}
	body, err := Encrypt(plain, uaPublic, auth, rand.Reader)
	if err != nil {
		return push.RejectedError(err) // a malformed p256dh key
	}
	authz, err := c.vapid.header(u.Scheme + "://" + u.Host)
	if err != nil {
		return push.FailedError(err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(body))
	if err != nil {
		return push.RejectedError(fmt.Errorf("build web push request: %w", err))
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("Content-Encoding", "aes128gcm")
	req.Header.Set("TTL", strconv.FormatInt(int64(c.cfg.TTL/time.Second), 10))
	urgency := "high"
	if !n.HighPriority() {
		urgency = "normal"
	}
	req.Header.Set("Urgency", urgency)
	req.Header.Set("Authorization", authz)
	resp, err := c.http.Do(req)
	if err != nil {
		err = safedial.StripURL(err) // the endpoint URL is a credential
		if safedial.IsBlocked(err) {
			return push.RejectedError(err)
		}
		return push.TransientError(fmt.Errorf("web push request: %w", err), 0)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	return ClassifyStatus(resp, c.now())
}

// ClassifyStatus maps a push service response: 2xx delivered, 404 and 410
// rejected, 429 and 5xx transient, anything else failed.
func ClassifyStatus(resp *http.Response, now time.Time) error {
	err := fmt.Errorf("push service status %d", resp.StatusCode)
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return nil
	case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone:
		return push.RejectedError(err)
	case push.StatusTransient(resp.StatusCode):
		return push.TransientError(err, push.ParseRetryAfter(resp.Header, now))
	default:
		return push.FailedError(err)
	}
}

// Payload is the JSON a service worker receives: the pusher's
// default_payload overlaid with the notification's fields (only ids and
// counts for event_id_only pushers, which the gateway enforces upstream).
func Payload(n *push.Notification, d push.Device) ([]byte, error) {
	p := maps.Clone(d.DefaultPayload())
	if p == nil {
		p = map[string]any{}
	}
	set := func(k, v string) {
		if v != "" {
			p[k] = v
		}
	}
	set("event_id", n.EventID)
	set("room_id", n.RoomID)
	set("type", n.Type)
	set("sender", n.Sender)
	set("sender_display_name", n.SenderDisplayName)
	set("room_name", n.RoomName)
	set("room_alias", n.RoomAlias)
	set("prio", n.Prio)
	if n.UserIsTarget {
		p["user_is_target"] = true
	}
	counts := map[string]int64{}
	if n.Counts.Unread != nil {
		counts["unread"] = *n.Counts.Unread
	}
	if n.Counts.MissedCalls != nil {
		counts["missed_calls"] = *n.Counts.MissedCalls
	}
	if len(counts) > 0 {
		p["counts"] = counts
	}
	if len(n.Content) > 0 {
		p["content"] = n.Content
	}
	b, err := json.Marshal(p)
	if err == nil && len(b) > MaxPlaintext {
		delete(p, "content")
		b, err = json.Marshal(p)
	}
	if err != nil {
		return nil, fmt.Errorf("encode web push payload: %w", err)
	}
	if len(b) > MaxPlaintext {
		return nil, fmt.Errorf("web push payload exceeds %d bytes", MaxPlaintext)
	}
	return b, nil
}

func decodeB64(s string) ([]byte, error) {
	s = strings.TrimRight(strings.TrimSpace(s), "=")
	if s == "" {
		return nil, errors.New("empty")
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		b, err = base64.RawStdEncoding.DecodeString(s)
	}
	if err != nil {
		return nil, errors.New("not base64")
	}
	return b, nil
}
