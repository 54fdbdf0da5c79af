// Package redistest gives tests the real Redis named by ATOLL_TEST_REDIS_URL, with keys under
// a prefix of the test's own that is deleted on cleanup.
package redistest

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// URL returns the Redis URL, skipping (or failing under ATOLL_TEST_REQUIRE_SERVICES=1).
func URL(t testing.TB) string {
	t.Helper()
	u := os.Getenv("ATOLL_TEST_REDIS_URL")
	if u == "" {
		if os.Getenv("ATOLL_TEST_REQUIRE_SERVICES") == "1" {
			t.Fatal("ATOLL_TEST_REDIS_URL is not set (run the tests through `make test`)")
		}
		t.Skip("ATOLL_TEST_REDIS_URL is not set; run the tests through `make test`")
	}
	return u
}

// New returns a client and a key prefix unique to this test; keys under it are removed on cleanup.
func New(t testing.TB) (*redis.Client, string) {
	t.Helper()
	opt, err := redis.ParseURL(URL(t))
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opt)
	prefix := "test:" + t.Name() + ":" + time.Now().Format("150405.000000000") + ":"
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			c.Del(ctx, iter.Val())
		}
		_ = c.Close()
	})
	return c, prefix
}
