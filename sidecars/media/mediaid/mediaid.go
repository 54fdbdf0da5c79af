// Package mediaid parses and validates Matrix content identifiers: media IDs, server names and
// mxc:// URIs. Everything that reaches a database row or an S3 object key passes through here
// first, so only the characters [A-Za-z0-9_-] ever appear in a media ID.
package mediaid

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// MaxIDLength bounds a media ID; Matrix sets no limit, S3 keys and database rows need one.
const MaxIDLength = 255

// maxServerNameLength is the spec's bound on a server name.
const maxServerNameLength = 255

// ErrInvalid is returned for any identifier that does not parse.
var ErrInvalid = errors.New("invalid media identifier")

// MXC is a parsed mxc:// content URI.
type MXC struct {
	ServerName string
	MediaID    string
}

// String renders the URI.
func (m MXC) String() string { return "mxc://" + m.ServerName + "/" + m.MediaID }

// ValidMediaID reports whether s is a non-empty media ID made only of [A-Za-z0-9_-].
func ValidMediaID(s string) bool {
	if s == "" || len(s) > MaxIDLength {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// ValidServerName reports whether s follows the spec's server name grammar: a DNS name, an IPv4
// literal or a bracketed IPv6 literal, with an optional decimal port.
func ValidServerName(s string) bool {
	if s == "" || len(s) > maxServerNameLength {
		return false
	}
	host, port := s, ""
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return false
		}
		host, port = s[:end+1], s[end+1:]
		addr, err := netip.ParseAddr(host[1 : len(host)-1])
		if err != nil || !addr.Is6() || addr.Zone() != "" {
			return false
		}
	} else {
		if i := strings.LastIndexByte(s, ':'); i >= 0 {
			host, port = s[:i], s[i:]
		}
		if !validDNSName(host) {
			return false
		}
	}
	if port == "" {
		return true
	}
	if port[0] != ':' || len(port) < 2 || len(port) > 6 {
		return false
	}
	n, err := strconv.Atoi(port[1:])
	return err == nil && n > 0 && n <= 65535 && port[1] != '+' && port[1] != '-'
}

func validDNSName(h string) bool {
	if h == "" || h[0] == '.' || h[0] == '-' || h[len(h)-1] == '-' {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-':
		case c == '.':
			if i > 0 && h[i-1] == '.' {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// Check returns ErrInvalid, wrapped with what was wrong, unless both parts are valid.
func Check(serverName, mediaID string) error {
	if !ValidServerName(serverName) {
		return fmt.Errorf("server name %q: %w", serverName, ErrInvalid)
	}
	if !ValidMediaID(mediaID) {
		return fmt.Errorf("media id %q: %w", mediaID, ErrInvalid)
	}
	return nil
}

// ParseMXC parses mxc://<server name>/<media id>.
func ParseMXC(s string) (MXC, error) {
	rest, ok := strings.CutPrefix(s, "mxc://")
	if !ok {
		return MXC{}, fmt.Errorf("uri without mxc scheme: %w", ErrInvalid)
	}
	server, id, ok := strings.Cut(rest, "/")
	if !ok {
		return MXC{}, fmt.Errorf("uri without media id: %w", ErrInvalid)
	}
	if err := Check(server, id); err != nil {
		return MXC{}, err
	}
	return MXC{ServerName: server, MediaID: id}, nil
}

const idAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// New returns a fresh random media ID of 32 alphanumeric characters (~190 bits).
func New() string {
	// rand.Text-style rejection-free mapping: 62 symbols from bytes would bias, so draw from
	// 64 and retry the two values outside the alphabet.
	var b [32]byte
	out := make([]byte, 0, len(b))
	for len(out) < len(b) {
		_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
		for _, c := range b {
			if v := c & 63; v < 62 && len(out) < len(b) {
				out = append(out, idAlphabet[v])
			}
		}
	}
	return string(out)
}
