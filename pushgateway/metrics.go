package pushgateway

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

type metrics struct {
	received     prometheus.Counter
	responses    *prometheus.CounterVec   // code
	deliveries   *prometheus.CounterVec   // provider, outcome
	retries      *prometheus.CounterVec   // provider
	rejected     *prometheus.CounterVec   // provider
	sendSeconds  *prometheus.HistogramVec // provider
	notifySecs   prometheus.Histogram
	inFlight     prometheus.Gauge
	sendInFlight *prometheus.GaugeVec // provider
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	return &metrics{
		received: f.NewCounter(prometheus.CounterOpts{
			Name: "atoll_push_notifications_received_total",
			Help: "Notify requests received and decoded.",
		}),
		responses: f.NewCounterVec(prometheus.CounterOpts{
			Name: "atoll_push_notify_responses_total",
			Help: "Notify endpoint responses, by HTTP status code.",
		}, []string{"code"}),
		deliveries: f.NewCounterVec(prometheus.CounterOpts{
			Name: "atoll_push_deliveries_total",
			Help: "Per-device delivery outcomes (delivered, rejected, transient, failed, deduplicated), by provider.",
		}, []string{"provider", "outcome"}),
		retries: f.NewCounterVec(prometheus.CounterOpts{
			Name: "atoll_push_retries_total",
			Help: "Provider requests retried after a transient failure.",
		}, []string{"provider"}),
		rejected: f.NewCounterVec(prometheus.CounterOpts{
			Name: "atoll_push_rejected_pushkeys_total",
			Help: "Pushkeys reported back to the homeserver as rejected.",
		}, []string{"provider"}),
		sendSeconds: f.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "atoll_push_provider_request_duration_seconds",
			Help:    "Latency of one request to a push provider.",
			Buckets: prometheus.ExponentialBuckets(0.002, 2, 13),
		}, []string{"provider"}),
		notifySecs: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "atoll_push_notify_duration_seconds",
			Help:    "Time to answer one notify request, retries included.",
			Buckets: prometheus.ExponentialBuckets(0.002, 2, 14),
		}),
		inFlight: f.NewGauge(prometheus.GaugeOpts{
			Name: "atoll_push_notify_in_flight_requests",
			Help: "Notify requests being processed.",
		}),
		sendInFlight: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "atoll_push_provider_in_flight_requests",
			Help: "Requests to push providers in flight.",
		}, []string{"provider"}),
	}
}
