package federation

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

type metrics struct {
	authFailures prometheus.Counter
	pdus         *prometheus.CounterVec
	txnsSent     *prometheus.CounterVec
	queueDepth   *prometheus.GaugeVec
	queueAge     *prometheus.GaugeVec
	stateRes     prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	return &metrics{
		authFailures: f.NewCounter(prometheus.CounterOpts{Name: "atoll_federation_auth_failures_total",
			Help: "Inbound federation requests refused for a missing or invalid X-Matrix signature."}),
		pdus: f.NewCounterVec(prometheus.CounterOpts{Name: "atoll_federation_pdus_received_total",
			Help: "Inbound PDUs by outcome (accepted, rejected, soft_failed, duplicate, invalid)."}, []string{"outcome"}),
		txnsSent: f.NewCounterVec(prometheus.CounterOpts{Name: "atoll_federation_transactions_sent_total",
			Help: "Outbound transactions by outcome (sent, failed) and destination class (local, remote)."}, []string{"outcome", "destination"}),
		queueDepth: f.NewGaugeVec(prometheus.GaugeOpts{Name: "atoll_federation_queue_depth",
			Help: "Queued outbound PDUs and EDUs by destination class (local: a tenant of this installation)."}, []string{"destination"}),
		queueAge: f.NewGaugeVec(prometheus.GaugeOpts{Name: "atoll_federation_queue_oldest_age_seconds",
			Help: "Age of the oldest queued outbound item by destination class."}, []string{"destination"}),
		stateRes: f.NewHistogram(prometheus.HistogramOpts{Name: "atoll_federation_state_resolution_duration_seconds",
			Help: "Time to resolve a room's state across forks.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
	}
}

// ObserveStateResolution records one state resolution's duration.
func (s *Server) ObserveStateResolution(d time.Duration) { s.fed.stateRes.Observe(d.Seconds()) }
