package mediadb

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

const (
	selectThumbnailSQL = `SELECT width, height, method, content_type, size_bytes, object_key FROM thumbnails
	WHERE tenant_id = $1 AND origin = $2 AND media_id = $3 AND width = $4 AND height = $5 AND method = $6`

	insertThumbnailSQL = `INSERT INTO thumbnails (tenant_id, origin, media_id, width, height, method,
	content_type, size_bytes, object_key, created_at)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING`
)

// GetThumbnail returns the stored thumbnail of ref for a configured size.
func (db *DB) GetThumbnail(ctx context.Context, ref Ref, width, height int, method string) (Thumbnail, error) {
	var t Thumbnail
	err := db.pool.QueryRow(ctx, selectThumbnailSQL, ref.TenantID, ref.Origin, ref.MediaID, width, height, method).
		Scan(&t.Width, &t.Height, &t.Method, &t.ContentType, &t.Size, &t.ObjectKey)
	if errors.Is(err, pgx.ErrNoRows) {
		return Thumbnail{}, ErrNotFound
	}
	if err != nil {
		return Thumbnail{}, fmt.Errorf("select thumbnail: %w", err)
	}
	return t, nil
}

// InsertThumbnail records a generated thumbnail once its object is complete. If the media row
// is gone (deleted meanwhile) it returns ErrNotFound.
func (db *DB) InsertThumbnail(ctx context.Context, ref Ref, t Thumbnail, now time.Time) error {
	_, err := db.pool.Exec(ctx, insertThumbnailSQL, ref.TenantID, ref.Origin, ref.MediaID, t.Width, t.Height, t.Method,
		t.ContentType, t.Size, t.ObjectKey, now)
	if isForeignKeyViolation(err) {
		return ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("insert thumbnail: %w", err)
	}
	return nil
}
