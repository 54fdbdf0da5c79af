// Package storage is a tenant's database: the tenant schema's migrations and Store, the only
// type other packages use to read and write a tenant's data.
package storage

import (
	"context"
	"embed"
	"fmt"
	"io/fs"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/atoll-matrix/atoll/internal/pgdb"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

func migrationsFS() (fs.FS, error) {
	sub, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		return nil, fmt.Errorf("embedded tenant migrations: %w", err)
	}
	return sub, nil
}

// LatestVersion is the newest tenant schema version this binary knows.
func LatestVersion() int {
	sub, err := migrationsFS()
	if err != nil {
		return 0
	}
	return pgdb.LatestVersion(sub)
}

// Migrate brings a tenant schema to LatestVersion; see pgdb.Migrate.
func Migrate(ctx context.Context, pool *pgxpool.Pool, schema string) (int, error) {
	sub, err := migrationsFS()
	if err != nil {
		return 0, err
	}
	return pgdb.Migrate(ctx, pool, schema, sub)
}
