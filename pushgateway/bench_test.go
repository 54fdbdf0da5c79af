package pushgateway_test

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/atoll-matrix/atoll/pushgateway/apns"
	"github.com/atoll-matrix/atoll/pushgateway/config"
	"github.com/atoll-matrix/atoll/pushgateway/pushtest"
)

// BenchmarkGatewayToFakeAPNs measures notifications per second from an
// HTTP client through the gateway (decode, dedup, dispatch) to the fake
// APNs; compare with BenchmarkFakeAPNsDirect for the gateway's overhead.
func BenchmarkGatewayToFakeAPNs(b *testing.B) {
	fake := pushtest.NewAPNs(b)
	app := fake.Config()
	app.MaxConcurrency = 256
	e := newEnv(b, map[string]*config.App{"app": app})
	dev, _ := apnsDevice("app", 1)
	var seq atomic.Int64
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r := e.notify(message("$ev"+strconv.FormatInt(seq.Add(1), 10), dev))
			if r.Status != 200 || len(r.Rejected) != 0 {
				b.Errorf("notify: %d %s", r.Status, r.Raw)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "notifications/s")
}

// BenchmarkFakeAPNsDirect drives the fake APNs with the gateway's own APNs
// client (same HTTP/2 transport and cached provider token), no gateway.
func BenchmarkFakeAPNsDirect(b *testing.B) {
	fake := pushtest.NewAPNs(b)
	c, err := apns.New(*fake.Config().APNs, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(c.Close)
	dev, _ := apnsDevice("app", 1)
	var seq atomic.Int64
	ctx := context.Background()
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			n := message("$ev"+strconv.FormatInt(seq.Add(1), 10), dev)
			if err := c.Send(ctx, n, dev); err != nil {
				b.Errorf("send: %v", err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "notifications/s")
}
