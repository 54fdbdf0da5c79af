// Package fcm sends notifications through the Firebase Cloud Messaging
// HTTP v1 API, authenticating with a service account (OAuth2 JWT-bearer
// grant, tokens cached until shortly before they expire).
package fcm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/jwt"

	"github.com/atoll-matrix/atoll/pushgateway/config"
	"github.com/atoll-matrix/atoll/pushgateway/push"
)

// DefaultEndpoint is the FCM API base URL.
const DefaultEndpoint = "https://fcm.googleapis.com"

// Scope is the OAuth2 scope for sending messages.
const Scope = "https://www.googleapis.com/auth/firebase.messaging"

// maxData is FCM's limit on the data payload.
const maxData = 4000

// ServiceAccount is the part of a Google service account key file used here.
type ServiceAccount struct {
	Type         string `json:"type"`
	ProjectID    string `json:"project_id"`
	PrivateKeyID string `json:"private_key_id"`
	PrivateKey   string `json:"private_key"`
	ClientEmail  string `json:"client_email"`
	TokenURI     string `json:"token_uri"`
}

// Client sends to one Firebase project.
type Client struct {
	sendURL string
	http    *http.Client
	tokens  oauth2.TokenSource
	now     func() time.Time
}

// New reads the service account file and builds a client.
func New(cfg config.FCM, now func() time.Time) (*Client, error) {
	if now == nil {
		now = time.Now
	}
	b, err := os.ReadFile(cfg.ServiceAccountFile)
	if err != nil {
		return nil, fmt.Errorf("read fcm service_account_file: %w", err)
	}
	var sa ServiceAccount
	if err := json.Unmarshal(b, &sa); err != nil {
		return nil, fmt.Errorf("fcm service account: %w", err)
	}
	if sa.ClientEmail == "" || sa.PrivateKey == "" || sa.TokenURI == "" {
		return nil, errors.New("fcm service account: client_email, private_key and token_uri are required")
	}
	project := cfg.ProjectID
	if project == "" {
		project = sa.ProjectID
	}
	if project == "" {
		return nil, errors.New("fcm: project_id missing from config and service account")
	}
	endpoint := cfg.Endpoint
	if endpoint == "" {
		endpoint = DefaultEndpoint
	}
	hc := &http.Client{
		Timeout: 15 * time.Second,
		Transport: &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			ForceAttemptHTTP2:   true,
			MaxIdleConnsPerHost: 16,
			IdleConnTimeout:     90 * time.Second,
		},
	}
	jc := &jwt.Config{
		Email:        sa.ClientEmail,
		PrivateKey:   []byte(sa.PrivateKey),
		PrivateKeyID: sa.PrivateKeyID,
		Scopes:       []string{Scope},
		TokenURL:     sa.TokenURI,
	}
	// The token source keeps this context for every refresh; it only
	// carries the HTTP client (whose timeout bounds each refresh).
	tokCtx := context.WithValue(context.Background(), oauth2.HTTPClient, hc)
	return &Client{
		sendURL: strings.TrimRight(endpoint, "/") + "/v1/projects/" + url.PathEscape(project) + "/messages:send",
		http:    hc,
		tokens:  jc.TokenSource(tokCtx), // a ReuseTokenSource: cached until expiry
		now:     now,
	}, nil
}

// Close releases idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// Send delivers n to the registration token d.Pushkey.
func (c *Client) Send(ctx context.Context, n *push.Notification, d push.Device) error {
	if d.Pushkey == "" {
		return push.RejectedError(errors.New("empty fcm registration token"))
	}
	body, err := Message(n, d)
	if err != nil {
		return push.FailedError(err)
	}
	tok, err := c.tokens.Token()
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && re.Response != nil && re.Response.StatusCode >= 400 && re.Response.StatusCode < 500 {
			return push.FailedError(fmt.Errorf("fcm access token: %w", err))
		}
		return push.TransientError(fmt.Errorf("fcm access token: %w", err), 0)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.sendURL, bytes.NewReader(body))
	if err != nil {
		return push.FailedError(fmt.Errorf("build fcm request: %w", err))
	}
	req.Header.Set("Content-Type", "application/json")
	tok.SetAuthHeader(req)
	resp, err := c.http.Do(req)
	if err != nil {
		return push.TransientError(fmt.Errorf("fcm request: %w", err), 0)
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<10))
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	return classify(resp, rb, c.now())
}

type apiError struct {
	Error struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Status  string `json:"status"`
		Details []struct {
			Type            string `json:"@type"`
			ErrorCode       string `json:"errorCode"`
			FieldViolations []struct {
				Field string `json:"field"`
			} `json:"fieldViolations"`
		} `json:"details"`
	} `json:"error"`
}

func classify(resp *http.Response, body []byte, now time.Time) error {
	var ae apiError
	_ = json.Unmarshal(body, &ae)
	code := ae.Error.Status
	aboutToken := strings.Contains(strings.ToLower(ae.Error.Message), "token")
	for _, d := range ae.Error.Details {
		if d.ErrorCode != "" {
			code = d.ErrorCode
		}
		for _, f := range d.FieldViolations {
			if strings.Contains(f.Field, "token") {
				aboutToken = true
			}
		}
	}
	err := fmt.Errorf("fcm status %d %s", resp.StatusCode, code)
	switch {
	case resp.StatusCode == http.StatusNotFound || code == "UNREGISTERED":
		return push.RejectedError(err)
	case code == "SENDER_ID_MISMATCH":
		return push.RejectedError(err)
	case resp.StatusCode == http.StatusBadRequest && code == "INVALID_ARGUMENT" && aboutToken:
		return push.RejectedError(err)
	case push.StatusTransient(resp.StatusCode) || resp.StatusCode == http.StatusUnauthorized:
		return push.TransientError(err, push.ParseRetryAfter(resp.Header, now))
	default:
		return push.FailedError(err)
	}
}
