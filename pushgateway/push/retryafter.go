package push

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// ParseRetryAfter reads a Retry-After header (delay seconds or HTTP date)
// relative to now; it returns 0 when absent or unparsable.
func ParseRetryAfter(h http.Header, now time.Time) time.Duration {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		if secs > 86400 {
			secs = 86400
		}
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d
		}
	}
	return 0
}

// StatusTransient reports the provider-neutral part of an HTTP status: 429 and
// 5xx are transient; anything else the caller decides.
func StatusTransient(status int) bool {
	return status == http.StatusTooManyRequests || status >= 500
}
