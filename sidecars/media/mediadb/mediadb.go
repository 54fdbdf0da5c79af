// Package mediadb stores media metadata in PostgreSQL, in a schema of its own (atoll_media by
// default) with embedded numbered migrations. Rows are keyed by tenant and every query filters
// by tenant_id, so one tenant never reads another's rows.
package mediadb

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

var (
	// ErrNotFound is returned for a missing row.
	ErrNotFound = errors.New("media not found")
	// ErrQuotaExceeded is returned when an upload would take a user past the quota.
	ErrQuotaExceeded = errors.New("upload quota exceeded")
	// ErrTooManyPending is returned when a user has too many outstanding /create'd IDs.
	ErrTooManyPending = errors.New("too many pending uploads")
	// ErrNotOwner is returned when someone else uploads to a /create'd ID.
	ErrNotOwner = errors.New("media id created by another user")
	// ErrAlreadyUploaded is returned for a second upload to the same ID.
	ErrAlreadyUploaded = errors.New("media already uploaded")
	// ErrExists is returned when a media ID is taken.
	ErrExists = errors.New("media id exists")
)

// DB is the metadata store. It is safe for concurrent use.
type DB struct {
	pool *pgxpool.Pool
}

// Open connects with search_path set to schema, creates the schema and applies migrations.
// The pool is closed when ctx's owner calls Close.
func Open(ctx context.Context, url, schema string, maxConns int32) (*DB, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse database url: %w", err)
	}
	cfg.MaxConns = maxConns
	cfg.ConnConfig.RuntimeParams["search_path"] = pgx.Identifier{schema}.Sanitize()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	if err := migrate(ctx, pool, schema); err != nil {
		pool.Close()
		return nil, err
	}
	return &DB{pool: pool}, nil
}

// Close closes the pool.
func (db *DB) Close() { db.pool.Close() }

// Ping checks the database.
func (db *DB) Ping(ctx context.Context) error { return db.pool.Ping(ctx) }

// Media is one media row.
type Media struct {
	TenantID      string
	Origin        string // "" for local media
	MediaID       string
	UserID        string
	ContentType   string
	UploadName    string
	Size          int64
	ObjectKey     string
	CreatedAt     time.Time
	UploadedAt    *time.Time // nil: pending
	PendingUntil  *time.Time
	QuarantinedAt *time.Time
}

// Ref names one media item of a tenant.
type Ref struct {
	TenantID string
	Origin   string
	MediaID  string
}

// Thumbnail is one thumbnail row.
type Thumbnail struct {
	Width, Height int
	Method        string
	ContentType   string
	Size          int64
	ObjectKey     string
}

func isUniqueViolation(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}

func isForeignKeyViolation(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23503"
}
