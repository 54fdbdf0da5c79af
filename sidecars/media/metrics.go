package media

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	requests        *prometheus.CounterVec
	duration        *prometheus.HistogramVec
	bytesIn         prometheus.Counter
	bytesOut        prometheus.Counter
	thumbnails      *prometheus.CounterVec
	quotaRejections prometheus.Counter
	remoteFetches   *prometheus.CounterVec
	retentionDelete *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "atoll_media_http_requests_total",
			Help: "HTTP requests served by the media sidecar, by route and status code.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "atoll_media_http_request_duration_seconds",
			Help:    "Time to serve a media sidecar request, by route (transfers included).",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}, []string{"route"}),
		bytesIn: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "atoll_media_received_bytes_total",
			Help: "Media bytes received from clients (uploads).",
		}),
		bytesOut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "atoll_media_sent_bytes_total",
			Help: "Media bytes sent to clients and servers (downloads, thumbnails).",
		}),
		thumbnails: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "atoll_media_thumbnails_generated_total",
			Help: "Thumbnails generated, by result (ok, too_large, unsupported, error).",
		}, []string{"result"}),
		quotaRejections: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "atoll_media_quota_rejections_total",
			Help: "Uploads refused because the user's quota was reached.",
		}),
		remoteFetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "atoll_media_remote_fetches_total",
			Help: "Remote media fetched over federation, by result.",
		}, []string{"result"}),
		retentionDelete: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "atoll_media_retention_deleted_total",
			Help: "Media deleted by retention, by kind (local, remote, pending).",
		}, []string{"kind"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.bytesIn, m.bytesOut, m.thumbnails,
		m.quotaRejections, m.remoteFetches, m.retentionDelete} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register media metrics: %w", err)
		}
	}
	return m, nil
}
