// Package unifiedpush forwards notifications to UnifiedPush endpoints: the
// pushkey is the endpoint URL and the body is the Matrix notify JSON for
// that one device, posted in plain HTTP(S) under the same host allow-list
// and address rules as Web Push.
package unifiedpush

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/atoll-matrix/atoll/pushgateway/config"
	"github.com/atoll-matrix/atoll/pushgateway/push"
	"github.com/atoll-matrix/atoll/pushgateway/safedial"
	"github.com/atoll-matrix/atoll/pushgateway/webpush"
)

// maxBody is the payload size UnifiedPush distributors accept.
const maxBody = 4096

// Client posts to UnifiedPush endpoints for one app.
type Client struct {
	allow     *safedial.AllowList
	http      *http.Client
	now       func() time.Time
	allowHTTP bool
}

// New builds a client.
func New(cfg config.UnifiedPush, now func() time.Time) *Client {
	if now == nil {
		now = time.Now
	}
	return &Client{
		allow:     safedial.NewAllowList(cfg.AllowedEndpoints),
		http:      safedial.NewClient(safedial.Options{AllowPrivate: cfg.AllowPrivateAddressesForTests, MaxConnsPerHost: 64}),
		now:       now,
		allowHTTP: cfg.AllowPrivateAddressesForTests,
	}
}

// Close releases idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// Send posts n to the endpoint d.Pushkey.
func (c *Client) Send(ctx context.Context, n *push.Notification, d push.Device) error {
	u, err := c.allow.CheckURL(d.Pushkey, c.allowHTTP)
	if err != nil {
		return push.RejectedError(err)
	}
	one := *n
	one.Devices = []push.Device{{AppID: d.AppID, Pushkey: d.Pushkey, PushkeyTS: d.PushkeyTS}}
	body, err := json.Marshal(push.Request{Notification: &one})
	if err == nil && len(body) > maxBody {
		one.Content = nil
		body, err = json.Marshal(push.Request{Notification: &one})
	}
	if err != nil {
		return push.FailedError(fmt.Errorf("encode unifiedpush body: %w", err))
	}
	if len(body) > maxBody {
		return push.FailedError(fmt.Errorf("unifiedpush body exceeds %d bytes", maxBody))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(body))
	if err != nil {
		return push.RejectedError(fmt.Errorf("build unifiedpush request: %w", err))
	}
	req.Header.Set("Content-Type", "application/json")
	if !n.HighPriority() {
		req.Header.Set("Urgency", "normal")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		err = safedial.StripURL(err) // the endpoint URL is a credential
		if safedial.IsBlocked(err) {
			return push.RejectedError(err)
		}
		return push.TransientError(fmt.Errorf("unifiedpush request: %w", err), 0)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	return webpush.ClassifyStatus(resp, c.now())
}
