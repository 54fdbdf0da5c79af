// Package bench is Atoll's load generator: it starts a real atoll-homeserver process against a
// PostgreSQL database of its own, fills it with tenants, users and rooms over HTTP, drives a
// light send and /sync load, and measures the memory of the shard and of PostgreSQL and the
// latency of send and of the /sync wake-up. BenchmarkDensity runs it; cmd/atoll-loadgen may too.
package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// ShardConfig is what the bench controls of the shard it starts.
type ShardConfig struct {
	Binary      string        // path to a built atoll-homeserver
	Dir         string        // working directory for the config file and the log
	DatabaseURL string        // the shard's own database
	AdminToken  string        // at least 16 characters
	IdleEvict   time.Duration // tenants.idle_evict
	MaxConns    int32         // database.max_conns
}

// Shard is a running atoll-homeserver process.
type Shard struct {
	PID        int
	ClientURL  string
	AdminURL   string
	MetricsURL string
	LogPath    string

	cmd  *exec.Cmd
	done chan error
}

// BuildShard compiles cmd/atoll-homeserver into dir and returns the binary's path.
func BuildShard(ctx context.Context, dir string) (string, error) {
	out := filepath.Join(dir, "atoll-homeserver")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "github.com/atoll-matrix/atoll/cmd/atoll-homeserver")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build atoll-homeserver: %w: %s", err, b)
	}
	return out, nil
}

// StartShard writes a config file, starts the binary on loopback ports it picks itself, and
// waits until the client API answers. Stop ends it.
func StartShard(ctx context.Context, c ShardConfig) (*Shard, error) {
	cfg := fmt.Sprintf(`shard:
  name: bench-0
  advertise_url: http://127.0.0.1:1
listen:
  client: 127.0.0.1:0
  admin: 127.0.0.1:0
  metrics: 127.0.0.1:0
database:
  url: %q
  max_conns: %d
admin:
  token: %q
tenants:
  idle_evict: %s
log:
  level: info
  format: json
`, c.DatabaseURL, c.MaxConns, c.AdminToken, c.IdleEvict)
	cfgPath := filepath.Join(c.Dir, "homeserver.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return nil, fmt.Errorf("write shard config: %w", err)
	}
	logPath := filepath.Join(c.Dir, "homeserver.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("create shard log: %w", err)
	}
	cmd := exec.Command(c.Binary, "--config", cfgPath)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		logFile.Close()
		return nil, err
	}
	cmd.Stdout = logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start shard: %w", err)
	}
	s := &Shard{PID: cmd.Process.Pid, LogPath: logPath, cmd: cmd, done: make(chan error, 1)}

	// The log's "homeserver started" line names the addresses the shard bound; every line
	// goes to the log file.
	addrs := make(chan map[string]any, 1)
	var copyDone sync.WaitGroup
	copyDone.Add(1)
	go func() {
		defer copyDone.Done()
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		sent := false
		for sc.Scan() {
			line := sc.Bytes()
			_, _ = logFile.Write(append(line, '\n'))
			if sent {
				continue
			}
			var m map[string]any
			if json.Unmarshal(line, &m) == nil && m["msg"] == "homeserver started" {
				addrs <- m
				sent = true
			}
		}
		_, _ = io.Copy(logFile, stderr)
	}()
	go func() {
		err := cmd.Wait()
		copyDone.Wait()
		logFile.Close()
		s.done <- err
		close(s.done)
	}()

	select {
	case m := <-addrs:
		s.ClientURL = "http://" + fmt.Sprint(m["client"])
		s.AdminURL = "http://" + fmt.Sprint(m["admin"])
		s.MetricsURL = "http://" + fmt.Sprint(m["metrics"]) + "/metrics"
	case err := <-s.done:
		return nil, fmt.Errorf("shard exited before starting: %v (log %s: %s)", err, logPath, tail(logPath))
	case <-time.After(60 * time.Second):
		s.Stop()
		return nil, fmt.Errorf("shard did not start within 60s (log %s: %s)", logPath, tail(logPath))
	case <-ctx.Done():
		s.Stop()
		return nil, ctx.Err()
	}
	for range 100 {
		resp, err := http.Get(s.ClientURL + "/_matrix/client/versions")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s, nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.Stop()
	return nil, errors.New("shard client API did not answer /versions")
}

// Stop sends SIGINT (a graceful stop), then kills the process after 30 s.
func (s *Shard) Stop() error {
	_ = s.cmd.Process.Signal(os.Interrupt)
	select {
	case err := <-s.done:
		return err
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		return <-s.done
	}
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 10 {
		lines = lines[len(lines)-10:]
	}
	return strings.Join(lines, "\n")
}
