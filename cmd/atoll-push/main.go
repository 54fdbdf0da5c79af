// Command atoll-push runs the Atoll push gateway: it loads the YAML
// configuration named by --config, wires the gateway and serves the Push
// Gateway API and metrics until SIGTERM or SIGINT, then shuts down
// gracefully.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/atoll-matrix/atoll/pushgateway"
	"github.com/atoll-matrix/atoll/pushgateway/config"
)

func main() {
	configPath := flag.String("config", "/etc/atoll/push.yaml", "path to the push gateway YAML configuration")
	flag.Parse()
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	if err := run(*configPath, log); err != nil {
		log.Error("atoll-push exiting", "error", err)
		os.Exit(1)
	}
}

func run(configPath string, log *slog.Logger) error {
	cfg, err := config.Load(configPath)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	gw, err := pushgateway.New(cfg, log, reg)
	if err != nil {
		return fmt.Errorf("build gateway: %w", err)
	}
	defer gw.Close()
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	mln, err := net.Listen("tcp", cfg.MetricsListen)
	if err != nil {
		ln.Close()
		return fmt.Errorf("listen metrics: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	return gw.Serve(ctx, ln, mln, reg)
}
