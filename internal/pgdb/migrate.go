package pgdb

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

type migration struct {
	version int
	name    string
	sql     string
}

func readMigrations(fsys fs.FS) ([]migration, error) {
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, fmt.Errorf("read embedded migrations: %w", err)
	}
	var ms []migration
	for _, e := range entries {
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil {
			return nil, fmt.Errorf("migration %s: name must start with a number and _", e.Name())
		}
		b, err := fs.ReadFile(fsys, e.Name())
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", e.Name(), err)
		}
		ms = append(ms, migration{version: v, name: e.Name(), sql: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	return ms, nil
}

// LatestVersion is the newest version among the migrations in fsys.
func LatestVersion(fsys fs.FS) int {
	ms, err := readMigrations(fsys)
	if err != nil || len(ms) == 0 {
		return 0
	}
	return ms[len(ms)-1].version
}

// ErrSchemaTooNew means the schema was migrated by a newer binary, which this one must not serve.
var ErrSchemaTooNew = errors.New("tenant schema is newer than this binary")

// Migrate creates schema if needed and applies every migration of fsys (files named
// NNNN_name.sql) it lacks, each in its own transaction recorded in schema.schema_migrations,
// under an advisory lock so two processes never migrate one schema at once. It returns the
// schema's version afterwards.
func Migrate(ctx context.Context, pool *pgxpool.Pool, schema string, fsys fs.FS) (int, error) {
	ms, err := readMigrations(fsys)
	if err != nil {
		return 0, err
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return 0, fmt.Errorf("acquire connection: %w", err)
	}
	defer conn.Release()
	lock := lockKey(schema)
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", lock); err != nil {
		return 0, fmt.Errorf("lock schema %s: %w", schema, err)
	}
	defer func() { _, _ = conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", lock) }()

	id := pgx.Identifier{schema}.Sanitize()
	if _, err := conn.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+id); err != nil {
		return 0, fmt.Errorf("create schema %s: %w", schema, err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE IF NOT EXISTS "+id+`.schema_migrations (
		version INT PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())`); err != nil {
		return 0, fmt.Errorf("create schema_migrations in %s: %w", schema, err)
	}
	var current int
	if err := conn.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM "+id+".schema_migrations").Scan(&current); err != nil {
		return 0, fmt.Errorf("read schema version of %s: %w", schema, err)
	}
	if len(ms) > 0 && current > ms[len(ms)-1].version {
		return current, fmt.Errorf("%s at version %d, binary knows %d: %w", schema, current, ms[len(ms)-1].version, ErrSchemaTooNew)
	}
	for _, m := range ms {
		if m.version <= current {
			continue
		}
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "SELECT set_config('search_path', $1, true)", id); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", m.version, m.name)
			return err
		})
		if err != nil {
			return current, fmt.Errorf("apply migration %s to %s: %w", m.name, schema, err)
		}
		current = m.version
	}
	return current, nil
}

func lockKey(schema string) int64 {
	h := fnv.New64a()
	h.Write([]byte("atoll-migrate:" + schema))
	return int64(h.Sum64())
}
