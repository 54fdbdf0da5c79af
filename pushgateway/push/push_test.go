package push_test

import (
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/atoll-matrix/atoll/pushgateway/push"
)

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		value string
		want  time.Duration
	}{
		{"", 0},
		{"5", 5 * time.Second},
		{"0", 0},
		{"-3", 0},
		{"999999999", 24 * time.Hour},
		{now.Add(30 * time.Second).Format(http.TimeFormat), 30 * time.Second},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0},
		{"soon", 0},
	}
	for _, tt := range tests {
		t.Run(tt.value, func(t *testing.T) {
			h := http.Header{}
			if tt.value != "" {
				h.Set("Retry-After", tt.value)
			}
			if got := push.ParseRetryAfter(h, now); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestClassify(t *testing.T) {
	base := errors.New("boom")
	tests := []struct {
		name  string
		err   error
		want  push.Result
		after time.Duration
	}{
		{"nil", nil, push.Delivered, 0},
		{"plain error is transient", base, push.Transient, 0},
		{"rejected", push.RejectedError(base), push.Rejected, 0},
		{"failed", push.FailedError(base), push.Failed, 0},
		{"transient with retry-after", push.TransientError(base, time.Second), push.Transient, time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, after := push.Classify(tt.err)
			if got != tt.want || after != tt.after {
				t.Errorf("got %v %v, want %v %v", got, after, tt.want, tt.after)
			}
			if tt.err != nil && !errors.Is(tt.err, base) {
				t.Error("cause not unwrappable")
			}
		})
	}
}

func TestTruncate(t *testing.T) {
	tests := []struct {
		s    string
		max  int
		want string
	}{
		{"hello", 10, "hello"},
		{"hello", 3, "hel"},
		{"héllo", 2, "h"},
		{"日本", 4, "日"},
		{"", 0, ""},
	}
	for _, tt := range tests {
		if got := push.Truncate(tt.s, tt.max); got != tt.want {
			t.Errorf("Truncate(%q, %d) = %q, want %q", tt.s, tt.max, got, tt.want)
		}
	}
}
