package debpkg_test

import (
	"testing"

	"github.com/atoll-matrix/atoll/images/debpkg"
)

func TestDefaultSkip(t *testing.T) {
	for p, want := range map[string]bool{
		"/usr/share/doc/redis-server/copyright": true,
		"/usr/share/man/man1/redis-server.1.gz": true,
		"/lib/systemd/system/redis.service":     true,
		"/usr/share/documents":                  false,
		"/usr/bin/redis-server":                 false,
		"/usr/share/zoneinfo/UTC":               false,
	} {
		if got := debpkg.DefaultSkip(p); got != want {
			t.Errorf("DefaultSkip(%s) = %v, want %v", p, got, want)
		}
	}
}
