package mediaid_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/atoll-matrix/atoll/sidecars/media/mediaid"
)

func TestValidMediaID(t *testing.T) {
	for _, tc := range []struct {
		id   string
		want bool
	}{
		{"abcDEF012_-", true},
		{"", false},
		{"..", false},
		{"../etc/passwd", false},
		{"a/b", false},
		{"a%2Fb", false},
		{"a b", false},
		{"ä", false},
		{"a\x00", false},
		{strings.Repeat("a", mediaid.MaxIDLength), true},
		{strings.Repeat("a", mediaid.MaxIDLength+1), false},
	} {
		t.Run(tc.id, func(t *testing.T) {
			if got := mediaid.ValidMediaID(tc.id); got != tc.want {
				t.Fatalf("ValidMediaID(%q) = %v, want %v", tc.id, got, tc.want)
			}
		})
	}
}

func TestValidServerName(t *testing.T) {
	for _, tc := range []struct {
		name string
		want bool
	}{
		{"example.org", true},
		{"example.org:8448", true},
		{"localhost", true},
		{"1.2.3.4:80", true},
		{"[::1]", true},
		{"[::1]:8448", true},
		{"[1.2.3.4]", false},
		{"[::1", false},
		{"example.org:", false},
		{"example.org:0", false},
		{"example.org:65536", false},
		{"example.org:+80", false},
		{"exa mple.org", false},
		{"a..b", false},
		{"-a.b", false},
		{"example.org/x", false},
		{"", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := mediaid.ValidServerName(tc.name); got != tc.want {
				t.Fatalf("ValidServerName(%q) = %v, want %v", tc.name, got, tc.want)
			}
		})
	}
}

func TestParseMXC(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    mediaid.MXC
		wantErr bool
	}{
		{in: "mxc://example.org/abc", want: mediaid.MXC{ServerName: "example.org", MediaID: "abc"}},
		{in: "mxc://[::1]:8448/a_b-c", want: mediaid.MXC{ServerName: "[::1]:8448", MediaID: "a_b-c"}},
		{in: "https://example.org/abc", wantErr: true},
		{in: "mxc://example.org", wantErr: true},
		{in: "mxc://example.org/a/b", wantErr: true},
		{in: "mxc:///abc", wantErr: true},
		{in: "mxc://example.org/..", wantErr: true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := mediaid.ParseMXC(tc.in)
			if tc.wantErr {
				if !errors.Is(err, mediaid.ErrInvalid) {
					t.Fatalf("ParseMXC(%q) error = %v, want ErrInvalid", tc.in, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseMXC(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
			}
			if got.String() != tc.in {
				t.Fatalf("String() = %q, want %q", got.String(), tc.in)
			}
		})
	}
}

func TestNew(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := mediaid.New()
		if len(id) != 32 || !mediaid.ValidMediaID(id) {
			t.Fatalf("New() = %q: not a valid 32-character id", id)
		}
		if seen[id] {
			t.Fatalf("New() repeated %q", id)
		}
		seen[id] = true
	}
}

// FuzzParseMXC checks that whatever parses is safe to use as an object key component and
// round-trips.
func FuzzParseMXC(f *testing.F) {
	for _, s := range []string{
		"mxc://example.org/abc", "mxc://[::1]:8448/x", "mxc://a/../../b", "mxc://a/%2e%2e",
		"mxc://a:99999/b", "mxc://a/b/c", "mxc://", "mxc://a/\x00", "mxc://ex.org/" + strings.Repeat("z", 300),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := mediaid.ParseMXC(s)
		if err != nil {
			return
		}
		if strings.ContainsAny(m.MediaID, "/.%\\\x00") || strings.ContainsAny(m.ServerName, "/\\%\x00") {
			t.Fatalf("ParseMXC(%q) accepted unsafe parts %+v", s, m)
		}
		if m.String() != s {
			t.Fatalf("round trip %q -> %q", s, m.String())
		}
	})
}

// FuzzCheck feeds path values as a request delivers them ({serverName}/{mediaId}): whatever is
// accepted must stay one path segment of an object key.
func FuzzCheck(f *testing.F) {
	for _, s := range [][2]string{
		{"example.org", "abc"}, {"example.org", ".."}, {"example.org", "a/../b"}, {"..", "x"},
		{"example.org:8448", "A-b_9"}, {"[::1]:1", "z"}, {"a.b", "%2e%2e"}, {"a\\b", "c"}, {"", ""},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, server, id string) {
		if mediaid.Check(server, id) != nil {
			return
		}
		if id == "." || id == ".." || strings.ContainsAny(id, "/\\.%\x00") || strings.ContainsAny(server, "/\\%\x00 ") || strings.HasPrefix(server, ".") {
			t.Fatalf("Check accepted server %q id %q", server, id)
		}
	})
}
