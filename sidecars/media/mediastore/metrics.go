package mediastore

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	latency *prometheus.HistogramVec
	errors  *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "atoll_media_s3_request_duration_seconds",
			Help:    "Time taken by S3 calls of the media sidecar, by operation (a put or get lasts the whole transfer).",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}, []string{"op"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "atoll_media_s3_errors_total",
			Help: "S3 calls of the media sidecar that failed, by operation.",
		}, []string{"op"}),
	}
	for _, c := range []prometheus.Collector{m.latency, m.errors} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register mediastore metrics: %w", err)
		}
	}
	return m, nil
}
