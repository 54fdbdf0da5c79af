// Command atollctl is the operator's tool: tenant lifecycle through a shard's admin API,
// mirroring the air-gapped bundle into a registry, the chart's secret hook and probes.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

var version = "dev"

const usage = `usage: atollctl COMMAND [ARGS]

commands:
  tenant create|list|show|suspend|resume|delete|settings|token   manage tenants (admin API)
  bundle push      mirror an air-gapped bundle into a registry
  secrets ensure   create missing generated secrets (the chart's hook job)
  probe URL        wait until URL answers 200 (helm test)
  version          print the version
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	commands := map[string]func(context.Context, []string) error{
		"tenant":  tenantCmd,
		"bundle":  bundleCmd,
		"secrets": secretsCmd,
		"probe":   probeCmd,
		"version": func(context.Context, []string) error { fmt.Println(version); return nil },
	}
	cmd, ok := commands[os.Args[1]]
	if !ok {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	if err := cmd(ctx, os.Args[2:]); err != nil {
		fmt.Fprintln(os.Stderr, "atollctl:", err)
		os.Exit(1)
	}
}
