// Package mxhttp turns handlers that return errors into Matrix HTTP responses: one place
// writes error JSON, assigns request IDs, logs failures once and records route metrics.
package mxhttp

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// HandlerFunc is an HTTP handler that reports failure by returning an error.
type HandlerFunc func(w http.ResponseWriter, r *http.Request) error

// Error is a failure with a client-safe body and a cause for the log only.
type Error struct {
	Status int // HTTP status; 0 means 500
	Body   any // JSON sent to the client, usually a spec.MatrixError
	Err    error
}

func (e *Error) Error() string {
	code := ""
	if m, ok := e.Body.(spec.MatrixError); ok {
		code = string(m.ErrCode)
	}
	if e.Err != nil {
		return fmt.Sprintf("%d %s: %v", e.Status, code, e.Err)
	}
	return fmt.Sprintf("%d %s", e.Status, code)
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf returns a Matrix error response with the given status.
func Errorf(status int, body spec.MatrixError) *Error {
	return &Error{Status: status, Body: body}
}

// Common client errors, named for what went wrong.
func BadJSON(format string, a ...any) *Error {
	return Errorf(http.StatusBadRequest, spec.BadJSON(fmt.Sprintf(format, a...)))
}
func NotJSON(format string, a ...any) *Error {
	return Errorf(http.StatusBadRequest, spec.NotJSON(fmt.Sprintf(format, a...)))
}
func InvalidParam(format string, a ...any) *Error {
	return Errorf(http.StatusBadRequest, spec.InvalidParam(fmt.Sprintf(format, a...)))
}
func MissingParam(format string, a ...any) *Error {
	return Errorf(http.StatusBadRequest, spec.MissingParam(fmt.Sprintf(format, a...)))
}
func Forbidden(format string, a ...any) *Error {
	return Errorf(http.StatusForbidden, spec.Forbidden(fmt.Sprintf(format, a...)))
}
func NotFound(format string, a ...any) *Error {
	return Errorf(http.StatusNotFound, spec.NotFound(fmt.Sprintf(format, a...)))
}
func Unrecognized(status int, format string, a ...any) *Error {
	return Errorf(status, spec.Unrecognized(fmt.Sprintf(format, a...)))
}
func UnknownToken(format string, a ...any) *Error {
	return Errorf(http.StatusUnauthorized, spec.UnknownToken(fmt.Sprintf(format, a...)))
}
func MissingToken(format string, a ...any) *Error {
	return Errorf(http.StatusUnauthorized, spec.MissingToken(fmt.Sprintf(format, a...)))
}
func TooLarge(format string, a ...any) *Error {
	return Errorf(http.StatusRequestEntityTooLarge, spec.MatrixError{ErrCode: "M_TOO_LARGE", Err: fmt.Sprintf(format, a...)})
}

// Code builds an error with an arbitrary spec error code, for codes gomatrixserverlib lacks
// constructors for (M_TOO_LARGE, M_USER_DEACTIVATED, ...). Only codes from the spec belong here.
func Code(status int, code spec.MatrixErrorCode, format string, a ...any) *Error {
	return Errorf(status, spec.MatrixError{ErrCode: code, Err: fmt.Sprintf(format, a...)})
}

// Internal wraps an unexpected failure: the client sees M_UNKNOWN, the log the cause.
func Internal(err error) *Error { return &Error{Status: http.StatusInternalServerError, Err: err} }

// JSON writes v with the given status.
func JSON(w http.ResponseWriter, status int, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return Internal(fmt.Errorf("encode response: %w", err))
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
	return nil
}

// MaxBody bounds request bodies read through DecodeJSON.
const MaxBody = 1 << 20

// DecodeJSON reads a JSON object body into v, mapping every failure to the spec's error.
// An empty body decodes as {} for endpoints whose fields are all optional.
func DecodeJSON(r *http.Request, v any) error {
	// The Content-Type is not checked: clients in the wild (and curl -d) send JSON under other
	// types, and the body itself is validated below.
	b, err := io.ReadAll(io.LimitReader(r.Body, MaxBody+1))
	if err != nil {
		return BadJSON("reading request body: %v", safeErr(err))
	}
	if len(b) > MaxBody {
		return TooLarge("request body exceeds %d bytes", MaxBody)
	}
	if len(strings.TrimSpace(string(b))) == 0 {
		b = []byte("{}")
	}
	if !utf8.Valid(b) || !json.Valid(b) {
		// JSON is UTF-8; encoding/json would quietly replace invalid bytes.
		return NotJSON("request body is not valid UTF-8 JSON")
	}
	if b[firstNonSpace(b)] != '{' {
		return BadJSON("request body must be a JSON object")
	}
	if err := json.Unmarshal(b, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return BadJSON("field %q has the wrong type: want %s", te.Field, te.Type)
		}
		return BadJSON("invalid request body: %v", safeErr(err))
	}
	return nil
}

func firstNonSpace(b []byte) int {
	for i, c := range b {
		if c != ' ' && c != '\t' && c != '\n' && c != '\r' {
			return i
		}
	}
	return 0
}

// safeErr keeps decoding errors short; they describe the client's own input.
func safeErr(err error) string {
	s := err.Error()
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}

// Metrics records requests per route.
type Metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	inFlight prometheus.Gauge
}

// NewMetrics registers the HTTP metrics of one API surface on reg.
func NewMetrics(reg prometheus.Registerer, component string) *Metrics {
	f := promauto.With(reg)
	return &Metrics{
		requests: f.NewCounterVec(prometheus.CounterOpts{
			Name: "atoll_" + component + "_http_requests_total",
			Help: "HTTP requests by route and status code.",
		}, []string{"route", "code"}),
		duration: f.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "atoll_" + component + "_http_request_duration_seconds",
			Help:    "HTTP request latency by route (long-polling /sync included).",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"route"}),
		inFlight: f.NewGauge(prometheus.GaugeOpts{
			Name: "atoll_" + component + "_http_requests_in_flight",
			Help: "HTTP requests being served.",
		}),
	}
}

// Handler adapts h, naming it route for metrics and logs.
type Handler struct {
	Route   string
	Fn      HandlerFunc
	Log     *slog.Logger
	Metrics *Metrics
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusWriter) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// ServeHTTP runs the handler, converts its error and records the outcome.
func (h Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w}
	if h.Metrics != nil {
		h.Metrics.inFlight.Inc()
		defer h.Metrics.inFlight.Dec()
	}
	defer func() {
		if p := recover(); p != nil {
			// A panic is a bug; the client still gets a Matrix error, the log the stack.
			h.writeError(sw, r, Internal(fmt.Errorf("panic: %v", p)))
		}
		if h.Metrics != nil {
			code := sw.status
			if code == 0 {
				code = http.StatusOK
			}
			h.Metrics.requests.WithLabelValues(h.Route, fmt.Sprint(code)).Inc()
			h.Metrics.duration.WithLabelValues(h.Route).Observe(time.Since(start).Seconds())
		}
	}()
	if err := h.Fn(sw, r); err != nil {
		h.writeError(sw, r, err)
	}
}

func (h Handler) writeError(w *statusWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		// The client went away (a long-poll it abandoned, a shutdown): nobody reads an answer,
		// and it is not a server failure worth an error line.
		return
	}
	var me *Error
	if !errors.As(err, &me) {
		me = Internal(err)
	}
	status := me.Status
	if status == 0 {
		status = http.StatusInternalServerError
	}
	body := me.Body
	if body == nil {
		id := newRequestID()
		body = spec.MatrixError{ErrCode: spec.ErrorUnknown, Err: "internal error, request " + id}
		if h.Log != nil {
			h.Log.ErrorContext(r.Context(), "request failed", "route", h.Route, "request_id", id, "host", r.Host, "err", err)
		}
	} else if status >= 500 && h.Log != nil {
		h.Log.WarnContext(r.Context(), "request failed", "route", h.Route, "host", r.Host, "status", status, "err", err)
	}
	if w.status != 0 {
		return // the handler already wrote a response; nothing more can be sent
	}
	if ra, ok := body.(spec.LimitExceededError); ok && ra.RetryAfterMS > 0 {
		w.Header().Set("Retry-After", fmt.Sprint((ra.RetryAfterMS+999)/1000))
	}
	_ = JSON(w, status, body)
}

func newRequestID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// CORS adds the headers the spec requires on every client API response and answers
// preflight requests.
func CORS(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE, OPTIONS")
		h.Set("Access-Control-Allow-Headers", "X-Requested-With, Content-Type, Authorization")
		if r.Method == http.MethodOptions {
			w.WriteHeader(http.StatusOK)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// MatrixNotFound rewrites a ServeMux's plain-text 404 and 405 into Matrix errors
// (M_UNRECOGNIZED), as the spec asks of unknown endpoints and methods.
func MatrixNotFound(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mux.ServeHTTP(&notFoundWriter{ResponseWriter: w}, r)
	})
}

type notFoundWriter struct {
	http.ResponseWriter
	swallow bool
}

func (n *notFoundWriter) WriteHeader(code int) {
	h := n.ResponseWriter.Header()
	if (code == http.StatusNotFound || code == http.StatusMethodNotAllowed) && strings.HasPrefix(h.Get("Content-Type"), "text/plain") {
		n.swallow = true
		h.Del("X-Content-Type-Options")
		msg := "unrecognized request"
		if code == http.StatusMethodNotAllowed {
			msg = "method not allowed for this endpoint"
		}
		_ = JSON(n.ResponseWriter, code, spec.Unrecognized(msg))
		return
	}
	n.ResponseWriter.WriteHeader(code)
}

func (n *notFoundWriter) Write(b []byte) (int, error) {
	if n.swallow {
		return len(b), nil
	}
	return n.ResponseWriter.Write(b)
}

func (n *notFoundWriter) Flush() {
	if f, ok := n.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (n *notFoundWriter) Unwrap() http.ResponseWriter { return n.ResponseWriter }
