// Package pgdb opens the shared PostgreSQL pool and runs transactions inside one tenant's
// schema, so SQL elsewhere stays unqualified.
package pgdb

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// DBTX is satisfied by *pgxpool.Pool and pgx.Tx: table methods take it so callers choose
// whether a statement joins a transaction.
type DBTX interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Open connects a pool. Statements are not prepared server-side: the same SQL text names a
// different table in each tenant schema, and thousands of schemas would multiply prepared
// statements per connection. pgx caches only the parameter and result descriptions, which are
// the same in every tenant schema because all run the same migrations.
func Open(ctx context.Context, url string, maxConns int32) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse database url: %w", err)
	}
	if maxConns > 0 {
		cfg.MaxConns = maxConns
	}
	// Every backend keeps catalog entries for each tenant schema it has touched (85 relations
	// per tenant; docs/benchmarks.md measured ~25 MiB per backend at 1,000 tenants). Recycling
	// connections returns that memory after load moves on.
	cfg.MaxConnIdleTime = 2 * time.Minute
	cfg.MaxConnLifetime = 20 * time.Minute
	cfg.MaxConnLifetimeJitter = 2 * time.Minute
	cfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeCacheDescribe
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open database pool: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("ping database: %w", err)
	}
	return pool, nil
}

// SchemaName is the PostgreSQL schema holding one tenant's data.
func SchemaName(tenantID string) string { return "t_" + tenantID }

// InTx runs fn in a transaction whose search_path is the given schema only; the setting
// ends with the transaction, so a pooled connection never leaks one tenant's path to the next.
func InTx(ctx context.Context, pool *pgxpool.Pool, schema string, fn func(tx pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT set_config('search_path', $1, true)", pgx.Identifier{schema}.Sanitize()); err != nil {
			return fmt.Errorf("set search_path: %w", err)
		}
		return fn(tx)
	})
}

// IsUniqueViolation reports whether err is a unique-constraint violation.
func IsUniqueViolation(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}
