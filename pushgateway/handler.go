package pushgateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/atoll-matrix/atoll/pushgateway/push"
)

// NotifyPath is the Push Gateway API endpoint.
const NotifyPath = "/_matrix/push/v1/notify"

// Matrix error codes used here (all from the spec).
const (
	errNotJSON      = "M_NOT_JSON"
	errBadJSON      = "M_BAD_JSON"
	errTooLarge     = "M_TOO_LARGE"
	errUnrecognized = "M_UNRECOGNIZED"
	errUnknown      = "M_UNKNOWN"
)

// httpError is a client-visible failure: Code and Msg go to the client,
// Err only to the log.
type httpError struct {
	Status int
	Code   string
	Msg    string
	Err    error
}

func (e *httpError) Error() string {
	return fmt.Sprintf("%d %s: %s: %v", e.Status, e.Code, e.Msg, e.Err)
}
func (e *httpError) Unwrap() error { return e.Err }

func badJSON(msg string) error {
	return &httpError{Status: http.StatusBadRequest, Code: errBadJSON, Msg: msg}
}

// ServeHTTP routes the API and turns handler errors into Matrix errors.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var err error
	switch r.URL.Path {
	case NotifyPath:
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			err = &httpError{Status: http.StatusMethodNotAllowed, Code: errUnrecognized, Msg: "method not allowed"}
			break
		}
		err = g.notify(w, r)
	case "/health":
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			err = &httpError{Status: http.StatusMethodNotAllowed, Code: errUnrecognized, Msg: "method not allowed"}
			break
		}
		health(w, r)
		return
	default:
		err = &httpError{Status: http.StatusNotFound, Code: errUnrecognized, Msg: "unrecognized request"}
	}
	if err != nil {
		g.writeError(w, r, err)
	}
}

func (g *Gateway) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var he *httpError
	if !errors.As(err, &he) {
		he = &httpError{Status: http.StatusInternalServerError, Code: errUnknown, Msg: "internal error", Err: err}
	}
	if he.Status >= 500 {
		g.log.Warn("notify failed", "path", r.URL.Path, "status", he.Status, "error", err)
	}
	if r.URL.Path == NotifyPath {
		g.m.responses.WithLabelValues(strconv.Itoa(he.Status)).Inc()
	}
	writeJSON(w, he.Status, map[string]string{"errcode": he.Code, "error": he.Msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func (g *Gateway) notify(w http.ResponseWriter, r *http.Request) error {
	start := time.Now()
	g.m.inFlight.Inc()
	defer g.m.inFlight.Dec()
	defer func() { g.m.notifySecs.Observe(time.Since(start).Seconds()) }()

	n, err := g.decode(w, r)
	if err != nil {
		return err
	}
	g.m.received.Inc()
	ctx, cancel := context.WithTimeout(r.Context(), g.cfg.NotifyTimeout)
	defer cancel()
	rejected, transient := g.dispatch(ctx, n)
	if transient > 0 {
		// Successful devices are in the de-duplication cache, so the
		// homeserver's retry only re-sends to the devices that failed.
		return &httpError{Status: http.StatusBadGateway, Code: errUnknown,
			Msg: "push provider temporarily unavailable, retry later",
			Err: fmt.Errorf("%d of %d devices failed transiently", transient, len(n.Devices))}
	}
	g.m.responses.WithLabelValues("200").Inc()
	writeJSON(w, http.StatusOK, map[string][]string{"rejected": rejected})
	return nil
}

// decode reads and validates a notify body.
func (g *Gateway) decode(w http.ResponseWriter, r *http.Request) (*push.Notification, error) {
	if r.ContentLength > g.cfg.MaxBodyBytes {
		return nil, &httpError{Status: http.StatusRequestEntityTooLarge, Code: errTooLarge, Msg: "request body too large"}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, g.cfg.MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, &httpError{Status: http.StatusRequestEntityTooLarge, Code: errTooLarge, Msg: "request body too large"}
		}
		return nil, &httpError{Status: http.StatusBadRequest, Code: errNotJSON, Msg: "could not read request body", Err: err}
	}
	return DecodeNotify(body)
}

// DecodeNotify parses and validates a notify request body; errors are
// client errors carrying the Matrix error code.
func DecodeNotify(body []byte) (*push.Notification, error) {
	if !json.Valid(body) {
		return nil, &httpError{Status: http.StatusBadRequest, Code: errNotJSON, Msg: "request body is not JSON"}
	}
	var req push.Request
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, badJSON("request body does not match the notify schema")
	}
	n := req.Notification
	if n == nil {
		return nil, badJSON("missing notification")
	}
	if len(n.Devices) == 0 {
		return nil, badJSON("notification has no devices")
	}
	for i, d := range n.Devices {
		if d.AppID == "" || d.Pushkey == "" {
			return nil, badJSON(fmt.Sprintf("device %d needs app_id and pushkey", i))
		}
	}
	if c := bytes.TrimSpace(n.Content); len(c) > 0 && c[0] != '{' && !bytes.Equal(c, []byte("null")) {
		return nil, badJSON("content must be an object")
	}
	if bytes.Equal(bytes.TrimSpace(n.Content), []byte("null")) {
		n.Content = nil
	}
	switch n.Prio {
	case "", "high", "low":
	default:
		return nil, badJSON("prio must be high or low")
	}
	return n, nil
}
