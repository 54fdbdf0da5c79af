package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5"
)

// postgres is the container's private PostgreSQL: trust authentication on loopback only,
// durability traded for speed (a test database).
type postgres struct {
	bin       string // directory holding initdb and postgres
	dir       string // data directory
	socketDir string
	port      int
}

const pgUser, pgDatabase = "atoll", "atoll"

// initialise runs initdb unless the data directory already holds a cluster, and reports
// whether it did.
func (p postgres) initialise(ctx context.Context) (bool, error) {
	if os.Geteuid() == 0 {
		return false, errors.New("postgres refuses to run as root: run the container as a non-root user (the image's default)")
	}
	if _, err := os.Stat(filepath.Join(p.dir, "PG_VERSION")); err == nil {
		// A committed container keeps the pid file of the postmaster that wrote it.
		_ = os.Remove(filepath.Join(p.dir, "postmaster.pid"))
		return false, nil
	}
	if err := os.RemoveAll(p.dir); err != nil {
		return false, fmt.Errorf("clear %s: %w", p.dir, err)
	}
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, filepath.Join(p.bin, "initdb"), "-D", p.dir, "-U", pgUser,
		"--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return false, fmt.Errorf("initdb: %w: %s", err, bytes.TrimSpace(out.Bytes()))
	}
	conf := fmt.Sprintf(`
listen_addresses = '127.0.0.1'
port = %d
unix_socket_directories = '%s'
max_connections = 100
shared_buffers = 32MB
fsync = off
synchronous_commit = off
full_page_writes = off
jit = off
log_checkpoints = off
log_min_messages = warning
`, p.port, p.socketDir)
	f, err := os.OpenFile(filepath.Join(p.dir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return false, fmt.Errorf("postgresql.conf: %w", err)
	}
	if _, err := f.WriteString(conf); err != nil {
		f.Close()
		return false, fmt.Errorf("postgresql.conf: %w", err)
	}
	if err := f.Close(); err != nil {
		return false, fmt.Errorf("postgresql.conf: %w", err)
	}
	return true, nil
}

func (p postgres) start() (*child, error) {
	return startChild("postgres", exec.Command(filepath.Join(p.bin, "postgres"), "-D", p.dir))
}

func (p postgres) url(db string) string {
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", pgUser, p.port, db)
}

// ready waits until postgres accepts connections, creates the database when missing and
// returns its URL.
func (p postgres) ready(ctx context.Context, exited chan error) (string, error) {
	var conn *pgx.Conn
	for {
		var err error
		conn, err = pgx.Connect(ctx, p.url("postgres"))
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("postgres did not accept connections: %w", err)
		case e := <-exited:
			exited <- e
			return "", fmt.Errorf("postgres %w: %v", errExited, e)
		case <-time.After(50 * time.Millisecond):
		}
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, pgDatabase).Scan(&exists); err != nil {
		return "", fmt.Errorf("look up database: %w", err)
	}
	if !exists {
		if _, err := conn.Exec(ctx, `CREATE DATABASE `+pgx.Identifier{pgDatabase}.Sanitize()); err != nil {
			return "", fmt.Errorf("create database: %w", err)
		}
	}
	return p.url(pgDatabase), nil
}
