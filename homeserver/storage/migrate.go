// Package storage is a tenant's database: the tenant schema's migrations and Store, the only
// type other packages use to read and write a tenant's data.
package storage

import (
	"context"
	"embed"
	"io/fs"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/atoll-matrix/atoll/internal/pgdb"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

func migrationsFS() fs.FS {
	sub, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		panic(err) // the embed pattern above guarantees the directory
	}
	return sub
}

// LatestVersion is the newest tenant schema version this binary knows.
func LatestVersion() int { return pgdb.LatestVersion(migrationsFS()) }

// Migrate brings a tenant schema to LatestVersion; see pgdb.Migrate.
func Migrate(ctx context.Context, pool *pgxpool.Pool, schema string) (int, error) {
	return pgdb.Migrate(ctx, pool, schema, migrationsFS())
}
