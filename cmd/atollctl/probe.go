package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"time"
)

// probeCmd runs "atollctl probe [--timeout 60s] URL...": it GETs every URL until each answers
// 2xx or the timeout passes. The chart's helm test pods run it.
func probeCmd(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("atollctl probe", flag.ContinueOnError)
	timeout := fs.Duration("timeout", 60*time.Second, "give up after this long")
	interval := fs.Duration("interval", 2*time.Second, "wait between attempts")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return errors.New("usage: atollctl probe [--timeout 60s] URL [URL ...]")
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	client := &http.Client{Timeout: 10 * time.Second}
	for _, u := range fs.Args() {
		var last error
		for {
			status, err := probeOnce(ctx, client, u)
			if err == nil {
				fmt.Printf("%s %d\n", u, status)
				break
			}
			last = err
			select {
			case <-ctx.Done():
				return fmt.Errorf("probe %s: %w (last: %v)", u, ctx.Err(), last)
			case <-time.After(*interval):
			}
		}
	}
	return nil
}

func probeOnce(ctx context.Context, client *http.Client, url string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, fmt.Errorf("probe request: %w", err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("probe get: %w", err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, fmt.Errorf("probe: status %d", resp.StatusCode)
	}
	return resp.StatusCode, nil
}
