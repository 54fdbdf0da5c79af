// Package apns sends notifications to Apple Push Notification service over
// HTTP/2, with token (.p8, ES256 JWT) or certificate authentication.
package apns

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/atoll-matrix/atoll/pushgateway/config"
	"github.com/atoll-matrix/atoll/pushgateway/push"
)

// Hosts of the two APNs environments.
const (
	ProductionEndpoint = "https://api.push.apple.com"
	SandboxEndpoint    = "https://api.sandbox.push.apple.com"
)

// maxPayload is APNs' limit for regular notifications.
const maxPayload = 4096

// Client sends to one APNs topic.
type Client struct {
	cfg    config.APNs
	base   string
	http   *http.Client
	tokens *tokenSource // nil with certificate auth
	now    func() time.Time
}

// New builds a client from cfg, reading its key or certificate files.
func New(cfg config.APNs, now func() time.Time) (*Client, error) {
	if now == nil {
		now = time.Now
	}
	c := &Client{cfg: cfg, now: now, base: cfg.Endpoint}
	if c.base == "" {
		c.base = ProductionEndpoint
		if cfg.Platform == "sandbox" {
			c.base = SandboxEndpoint
		}
	}
	c.base = strings.TrimRight(c.base, "/")
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read apns ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, errors.New("apns ca_file: no PEM certificates")
		}
		tlsCfg.RootCAs = pool
	}
	if cfg.CertificateFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.CertificateFile, cfg.PrivateKeyFile)
		if err != nil {
			return nil, fmt.Errorf("load apns client certificate: %w", err)
		}
		tlsCfg.Certificates = []tls.Certificate{cert}
	} else {
		key, err := os.ReadFile(cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("read apns key_file: %w", err)
		}
		ts, err := newTokenSource(key, cfg.KeyID, cfg.TeamID, now)
		if err != nil {
			return nil, err
		}
		c.tokens = ts
	}
	tr := &http.Transport{
		TLSClientConfig:     tlsCfg,
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     10 * time.Minute,
		TLSHandshakeTimeout: 10 * time.Second,
		HTTP2: &http.HTTP2Config{
			SendPingTimeout: 60 * time.Second,
			PingTimeout:     15 * time.Second,
		},
	}
	c.http = &http.Client{Transport: tr}
	return c, nil
}

// Close releases idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// Send delivers n to device d.
func (c *Client) Send(ctx context.Context, n *push.Notification, d push.Device) error {
	token, err := DeviceToken(d.Pushkey)
	if err != nil {
		return push.RejectedError(err)
	}
	body, err := Payload(n, d)
	if err != nil {
		return push.FailedError(err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+"/3/device/"+token, bytes.NewReader(body))
	if err != nil {
		return push.FailedError(fmt.Errorf("build apns request: %w", err))
	}
	c.setHeaders(req.Header, n)
	var jwt string
	if c.tokens != nil {
		jwt, err = c.tokens.token()
		if err != nil {
			return push.FailedError(err)
		}
		req.Header.Set("Authorization", "bearer "+jwt)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return push.TransientError(fmt.Errorf("apns request: %w", err), 0)
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	var reason struct {
		Reason string `json:"reason"`
	}
	_ = json.Unmarshal(rb, &reason)
	err = fmt.Errorf("apns status %d reason %q", resp.StatusCode, reason.Reason)
	switch {
	case resp.StatusCode == http.StatusGone,
		reason.Reason == "BadDeviceToken", reason.Reason == "DeviceTokenNotForTopic", reason.Reason == "Unregistered":
		return push.RejectedError(err)
	case reason.Reason == "ExpiredProviderToken":
		c.tokens.invalidate(jwt)
		return push.TransientError(err, 0)
	case push.StatusTransient(resp.StatusCode):
		return push.TransientError(err, push.ParseRetryAfter(resp.Header, c.now()))
	default:
		return push.FailedError(err)
	}
}

func (c *Client) setHeaders(h http.Header, n *push.Notification) {
	h.Set("Content-Type", "application/json")
	h.Set("apns-push-type", c.cfg.PushType)
	h.Set("apns-topic", c.cfg.Topic)
	prio := "10"
	if !n.HighPriority() || c.cfg.PushType == "background" {
		prio = "5"
	}
	h.Set("apns-priority", prio)
	exp := "0"
	if c.cfg.Expiration > 0 {
		exp = strconv.FormatInt(c.now().Add(c.cfg.Expiration).Unix(), 10)
	}
	h.Set("apns-expiration", exp)
	if c.cfg.CollapseByRoom && n.RoomID != "" {
		sum := sha256.Sum256([]byte(n.RoomID))
		h.Set("apns-collapse-id", hex.EncodeToString(sum[:16]))
	}
}

// DeviceToken turns a Matrix APNs pushkey (the base64 device token, as
// iOS clients register it) into the hex form APNs paths use.
func DeviceToken(pushkey string) (string, error) {
	s := strings.TrimRight(strings.TrimSpace(pushkey), "=")
	raw, err := base64.RawStdEncoding.DecodeString(s)
	if err != nil {
		raw, err = base64.RawURLEncoding.DecodeString(s)
	}
	if err != nil || len(raw) == 0 || len(raw) > 200 {
		return "", errors.New("apns pushkey is not a base64 device token")
	}
	return hex.EncodeToString(raw), nil
}
