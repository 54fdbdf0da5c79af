package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// Loopback addresses of the processes the entrypoint starts.
const (
	pgPort          = 5432
	homeserverAddr  = "127.0.0.1:18008"
	adminAddr       = "127.0.0.1:18081"
	tenantID        = "complement"
	startupDeadline = 90 * time.Second
	stopGrace       = 8 * time.Second
)

type options struct {
	serverName     string
	dataDir        string
	pgBin          string
	homeserver     string
	caDir          string
	clientAddr     string
	federationAddr string
	sharedSecret   string
	logLevel       string
	media, minio   string // binaries of the media sidecar and its S3; media is off when either is absent
}

// child is a started process and the result of waiting for it.
type child struct {
	name string
	cmd  *exec.Cmd
	done chan error // receives once, when the process exits
}

func startChild(name string, cmd *exec.Cmd) (*child, error) {
	cmd.Stdout = os.Stderr
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, done: make(chan error, 1)}
	go func() { c.done <- cmd.Wait() }()
	return c, nil
}

// stop sends sig and waits up to grace, then kills the process.
func (c *child) stop(log *slog.Logger, sig syscall.Signal, grace time.Duration) {
	if c == nil {
		return
	}
	_ = c.cmd.Process.Signal(sig)
	select {
	case <-c.done:
	case <-time.After(grace):
		log.Warn("process did not stop in time; killing it", "process", c.name)
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

func run(ctx context.Context, log *slog.Logger, o options) error {
	started := time.Now()
	if err := os.MkdirAll(o.dataDir, 0o700); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	pg := postgres{bin: o.pgBin, dir: filepath.Join(o.dataDir, "pg"), socketDir: o.dataDir, port: pgPort}
	fresh, err := pg.initialise(ctx)
	if err != nil {
		return err
	}
	pgProc, err := pg.start()
	if err != nil {
		return err
	}
	defer pgProc.stop(log, syscall.SIGINT, stopGrace) // fast shutdown: clean data for docker commit

	startCtx, cancel := context.WithTimeout(ctx, startupDeadline)
	defer cancel()
	dbURL, err := pg.ready(startCtx, pgProc.done)
	if err != nil {
		return err
	}
	log.Info("postgres ready", "fresh", fresh, "elapsed", time.Since(started).Round(time.Millisecond).String())

	token := make([]byte, 24)
	if _, err := rand.Read(token); err != nil {
		return err
	}
	caFile := filepath.Join(o.caDir, "ca.crt")
	if _, err := os.Stat(caFile); err != nil {
		caFile = ""
	}
	mediaURL := ""
	if o.mediaEnabled() {
		mediaURL = "http://" + mediaAddr
	}
	cfgPath, err := writeHomeserverConfig(o.dataDir, dbURL, hex.EncodeToString(token), o.logLevel, caFile, mediaURL)
	if err != nil {
		return err
	}
	hsProc, err := startChild("atoll-homeserver", exec.Command(o.homeserver, "--config", cfgPath))
	if err != nil {
		return err
	}
	defer hsProc.stop(log, syscall.SIGTERM, stopGrace)

	mediaUpstream := ""
	var minioProc, mediaProc *child
	defer func() {
		mediaProc.stop(log, syscall.SIGTERM, stopGrace)
		minioProc.stop(log, syscall.SIGTERM, stopGrace)
	}()
	if o.mediaEnabled() {
		if minioProc, err = startMinio(startCtx, o.minio, o.dataDir); err != nil {
			return err
		}
		mediaCfg, err := writeMediaConfig(o.dataDir, dbURL, filepath.Join(o.dataDir, "admin-token"))
		if err != nil {
			return err
		}
		if mediaProc, err = startChild("atoll-media", exec.Command(o.media, "--config", mediaCfg)); err != nil {
			return err
		}
		mediaUpstream = "http://" + mediaAddr
		if err := waitHTTP(startCtx, mediaUpstream+"/_matrix/media/v3/config", mediaProc.done); err != nil {
			return fmt.Errorf("atoll-media: %w", err)
		}
		log.Info("media ready", "elapsed", time.Since(started).Round(time.Millisecond).String())
	}
	admin := adminClient{base: "http://" + adminAddr, token: hex.EncodeToString(token), http: &http.Client{Timeout: 30 * time.Second}}
	if err := admin.ensureTenant(startCtx, hsProc.done, tenantID, o.serverName, o.sharedSecret); err != nil {
		return err
	}
	cert, err := serverCertificate(o.caDir, o.serverName)
	if err != nil {
		return err
	}
	srv, err := newFrontend(log, o.serverName, "http://"+homeserverAddr, mediaUpstream, cert)
	if err != nil {
		return err
	}
	errc, err := srv.listen(ctx, o.clientAddr, o.federationAddr)
	if err != nil {
		return err
	}
	log.Info("homeserver ready", "server_name", o.serverName, "client", o.clientAddr, "federation", o.federationAddr,
		"elapsed", time.Since(started).Round(time.Millisecond).String())

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("stopping")
	case err := <-pgProc.done:
		runErr = fmt.Errorf("postgres exited: %v", err)
		pgProc.done <- err
	case err := <-hsProc.done:
		runErr = fmt.Errorf("atoll-homeserver exited: %v", err)
		hsProc.done <- err
	case err := <-errc:
		runErr = err
	case err := <-doneOf(minioProc):
		runErr = fmt.Errorf("minio exited: %v", err)
		minioProc.done <- err
	case err := <-doneOf(mediaProc):
		runErr = fmt.Errorf("atoll-media exited: %v", err)
		mediaProc.done <- err
	}
	srv.shutdown()
	return runErr
}

// doneOf is c's exit channel, or nil (never ready) when c was not started.
func doneOf(c *child) chan error {
	if c == nil {
		return nil
	}
	return c.done
}

// waitHTTP waits until url answers with any HTTP status.
func waitHTTP(ctx context.Context, url string, exited chan error) error {
	hc := &http.Client{Timeout: 2 * time.Second}
	for {
		req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
		if err != nil {
			return err
		}
		resp, err := hc.Do(req)
		if err == nil {
			resp.Body.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no answer from %s: %w", url, err)
		case e := <-exited:
			exited <- e
			return fmt.Errorf("%w: %v", errExited, e)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// errExited reports a child that ended during start-up.
var errExited = errors.New("exited during start-up")
