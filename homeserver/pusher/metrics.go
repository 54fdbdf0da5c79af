package pusher

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

type metrics struct {
	sent *prometheus.CounterVec // labels: outcome (delivered, rejected, retry, dropped)
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	return &metrics{
		sent: f.NewCounterVec(prometheus.CounterOpts{
			Name: "atoll_homeserver_push_notifications_total",
			Help: "Notifications sent to push gateways, by outcome.",
		}, []string{"outcome"}),
	}
}
