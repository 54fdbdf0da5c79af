package dedup_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/atoll-matrix/atoll/pushgateway/dedup"
)

func TestCache(t *testing.T) {
	now := time.Unix(1000, 0)
	clock := func() time.Time { return now }
	k1 := dedup.NewKey("app", "pk", "$e1")
	k2 := dedup.NewKey("app", "pk", "$e2")

	tests := []struct {
		name string
		run  func(t *testing.T, c *dedup.Cache)
	}{
		{"claim then duplicate", func(t *testing.T, c *dedup.Cache) {
			if !c.Claim(k1) {
				t.Fatal("first claim refused")
			}
			if c.Claim(k1) {
				t.Fatal("in-flight claim granted twice")
			}
			c.Done(k1)
			if c.Claim(k1) {
				t.Fatal("delivered key claimed again")
			}
		}},
		{"release allows retry", func(t *testing.T, c *dedup.Cache) {
			c.Claim(k1)
			c.Release(k1)
			if !c.Claim(k1) {
				t.Fatal("released key not claimable")
			}
		}},
		{"release after done keeps entry", func(t *testing.T, c *dedup.Cache) {
			c.Claim(k1)
			c.Done(k1)
			c.Release(k1)
			if c.Claim(k1) {
				t.Fatal("done key forgotten by release")
			}
		}},
		{"ttl expiry", func(t *testing.T, c *dedup.Cache) {
			c.Claim(k1)
			c.Done(k1)
			now = now.Add(2 * time.Minute)
			if !c.Claim(k1) {
				t.Fatal("expired key not claimable")
			}
		}},
		{"capacity bound evicts oldest", func(t *testing.T, c *dedup.Cache) {
			for i := range 100 {
				c.Claim(dedup.NewKey("app", "pk", fmt.Sprint(i)))
			}
			if c.Len() != 10 {
				t.Fatalf("len %d, want 10", c.Len())
			}
			if !c.Claim(dedup.NewKey("app", "pk", "0")) {
				t.Fatal("oldest key not evicted")
			}
		}},
		{"keys differ", func(t *testing.T, c *dedup.Cache) {
			c.Claim(k1)
			if !c.Claim(k2) {
				t.Fatal("different event deduplicated")
			}
			if dedup.NewKey("a", "bc", "") == dedup.NewKey("ab", "c", "") {
				t.Fatal("ambiguous key encoding")
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.run(t, dedup.New(time.Minute, 10, clock))
		})
	}
}
