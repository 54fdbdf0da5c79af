package pushgateway_test

import (
	"log/slog"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/atoll-matrix/atoll/pushgateway"
	"github.com/atoll-matrix/atoll/pushgateway/config"
)

func newGatewayForServe(t testing.TB, cfg *config.Config) (*pushgateway.Gateway, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	gw, err := pushgateway.New(cfg, slog.New(slog.DiscardHandler), reg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gw.Close)
	return gw, reg
}

// metricValue returns a counter or gauge value for the label values in
// label-name order (Prometheus sorts labels by name).
func metricValue(families []*dto.MetricFamily, name string, labels []string) float64 {
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	next:
		for _, m := range f.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for i, l := range m.GetLabel() {
				if l.GetValue() != labels[i] {
					continue next
				}
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return -1
}
