package storage

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/atoll-matrix/atoll/internal/pgdb"
)

// Store is one tenant's data. Its methods take a pgdb.DBTX, which must be a transaction
// opened by Tx: statements are unqualified and only the transaction sets the search_path.
type Store struct {
	pool   *pgxpool.Pool
	schema string
}

// New returns the store of the tenant schema.
func New(pool *pgxpool.Pool, schema string) *Store {
	return &Store{pool: pool, schema: schema}
}

// Schema is the tenant's schema name.
func (s *Store) Schema() string { return s.schema }

// Tx runs fn in one transaction inside the tenant's schema.
func (s *Store) Tx(ctx context.Context, fn func(q pgdb.DBTX) error) error {
	return pgdb.InTx(ctx, s.pool, s.schema, func(tx pgx.Tx) error { return fn(tx) })
}

// ErrNotFound is returned when a row asked for does not exist.
var ErrNotFound = errors.New("not found")

// NextStreamPos allocates the next position of the tenant's stream. The counter row stays
// locked until the transaction ends, so a tenant's writers commit in position order and a
// reader that sees position N sees everything before it.
func NextStreamPos(ctx context.Context, q pgdb.DBTX) (int64, error) {
	var pos int64
	err := q.QueryRow(ctx, `UPDATE stream_head SET pos = pos + 1 RETURNING pos`).Scan(&pos)
	return pos, err
}

// CurrentStreamPos is the newest committed stream position (0 if none).
func CurrentStreamPos(ctx context.Context, q pgdb.DBTX) (int64, error) {
	var pos int64
	err := q.QueryRow(ctx, `SELECT pos FROM stream_head`).Scan(&pos)
	return pos, err
}

func noRows(err error) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrNotFound
	}
	return err
}
