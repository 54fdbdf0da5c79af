package mediadb

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

const (
	mediaColumns = `tenant_id, origin, media_id, user_id, content_type, upload_name, size_bytes,
	object_key, created_at, uploaded_at, pending_until, quarantined_at`

	selectMediaSQL = `SELECT ` + mediaColumns + ` FROM media
	WHERE tenant_id = $1 AND origin = $2 AND media_id = $3`

	lockUserSQL = `SELECT pg_advisory_xact_lock(hashtextextended('atoll_media.user.' || $1 || '/' || $2, 0))`

	userUsageSQL = `SELECT coalesce(sum(size_bytes), 0) FROM media
	WHERE tenant_id = $1 AND origin = '' AND user_id = $2`

	insertMediaSQL = `INSERT INTO media (tenant_id, origin, media_id, user_id, content_type, upload_name,
	size_bytes, object_key, created_at, uploaded_at, pending_until)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`

	insertRemoteSQL = insertMediaSQL + ` ON CONFLICT DO NOTHING`

	countPendingSQL = `SELECT count(*) FROM media
	WHERE tenant_id = $1 AND origin = '' AND user_id = $2 AND uploaded_at IS NULL AND pending_until > $3`

	completePendingSQL = `UPDATE media SET content_type = $4, upload_name = $5, size_bytes = $6,
	object_key = $7, uploaded_at = $8, pending_until = NULL
	WHERE tenant_id = $1 AND origin = '' AND media_id = $2 AND user_id = $3 AND uploaded_at IS NULL`

	quarantineMediaSQL = `UPDATE media SET quarantined_at = $4
	WHERE tenant_id = $1 AND origin = $2 AND media_id = $3 AND quarantined_at IS NULL`

	quarantineUserSQL = `UPDATE media SET quarantined_at = $3
	WHERE tenant_id = $1 AND origin = '' AND user_id = $2 AND quarantined_at IS NULL`

	selectObjectKeysSQL = `SELECT object_key FROM media
	WHERE tenant_id = $1 AND origin = $2 AND media_id = $3 AND object_key <> ''
	UNION ALL SELECT object_key FROM thumbnails
	WHERE tenant_id = $1 AND origin = $2 AND media_id = $3`

	deleteMediaSQL = `DELETE FROM media WHERE tenant_id = $1 AND origin = $2 AND media_id = $3`

	deleteTenantSQL = `DELETE FROM media WHERE tenant_id = $1`

	// Local media created before $1 ($2 = false) or remote media cached before $1 ($2 = true).
	selectOlderSQL = `SELECT tenant_id, origin, media_id FROM media
	WHERE created_at < $1 AND (origin <> '') = $2
	ORDER BY created_at LIMIT $3`

	selectOlderOfTenantSQL = `SELECT tenant_id, origin, media_id FROM media
	WHERE tenant_id = $1 AND created_at < $2 AND origin <> ''
	ORDER BY created_at LIMIT $3`

	// Pending IDs whose wait is over.
	selectExpiredPendingSQL = `SELECT tenant_id, origin, media_id FROM media
	WHERE uploaded_at IS NULL AND pending_until < $1 LIMIT $2`
)

func scanMedia(row pgx.Row) (Media, error) {
	var m Media
	err := row.Scan(&m.TenantID, &m.Origin, &m.MediaID, &m.UserID, &m.ContentType, &m.UploadName, &m.Size,
		&m.ObjectKey, &m.CreatedAt, &m.UploadedAt, &m.PendingUntil, &m.QuarantinedAt)
	return m, err
}

// Get returns one row.
func (db *DB) Get(ctx context.Context, ref Ref) (Media, error) {
	m, err := scanMedia(db.pool.QueryRow(ctx, selectMediaSQL, ref.TenantID, ref.Origin, ref.MediaID))
	if errors.Is(err, pgx.ErrNoRows) {
		return Media{}, ErrNotFound
	}
	if err != nil {
		return Media{}, fmt.Errorf("select media %s/%s: %w", ref.TenantID, ref.MediaID, err)
	}
	return m, nil
}

// InsertLocal records uploaded local media once its object is complete. With quota > 0 it
// refuses (ErrQuotaExceeded) when the user's media would exceed it.
func (db *DB) InsertLocal(ctx context.Context, m Media, quota int64) error {
	return pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		if err := checkQuota(ctx, tx, m.TenantID, m.UserID, m.Size, quota); err != nil {
			return err
		}
		now := m.CreatedAt
		_, err := tx.Exec(ctx, insertMediaSQL, m.TenantID, "", m.MediaID, m.UserID, m.ContentType, m.UploadName,
			m.Size, m.ObjectKey, m.CreatedAt, &now, nil)
		if isUniqueViolation(err) {
			return ErrExists
		}
		if err != nil {
			return fmt.Errorf("insert media %s/%s: %w", m.TenantID, m.MediaID, err)
		}
		return nil
	})
}

func checkQuota(ctx context.Context, tx pgx.Tx, tenant, user string, size, quota int64) error {
	if quota <= 0 {
		return nil
	}
	if _, err := tx.Exec(ctx, lockUserSQL, tenant, user); err != nil {
		return fmt.Errorf("lock user usage: %w", err)
	}
	var used int64
	if err := tx.QueryRow(ctx, userUsageSQL, tenant, user).Scan(&used); err != nil {
		return fmt.Errorf("read user usage: %w", err)
	}
	if used+size > quota {
		return ErrQuotaExceeded
	}
	return nil
}

// UserUsage returns the bytes of local media user owns.
func (db *DB) UserUsage(ctx context.Context, tenant, user string) (int64, error) {
	var used int64
	if err := db.pool.QueryRow(ctx, userUsageSQL, tenant, user).Scan(&used); err != nil {
		return 0, fmt.Errorf("read user usage: %w", err)
	}
	return used, nil
}

// CreatePending reserves a media ID for a later upload by user (POST /create).
func (db *DB) CreatePending(ctx context.Context, tenant, mediaID, user string, now, until time.Time, maxPending int) error {
	return pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, lockUserSQL, tenant, user); err != nil {
			return fmt.Errorf("lock user: %w", err)
		}
		var n int
		if err := tx.QueryRow(ctx, countPendingSQL, tenant, user, now).Scan(&n); err != nil {
			return fmt.Errorf("count pending: %w", err)
		}
		if n >= maxPending {
			return ErrTooManyPending
		}
		_, err := tx.Exec(ctx, insertMediaSQL, tenant, "", mediaID, user, "", "", 0, "", now, nil, &until)
		if isUniqueViolation(err) {
			return ErrExists
		}
		if err != nil {
			return fmt.Errorf("insert pending media: %w", err)
		}
		return nil
	})
}

// CompletePending fills a reserved ID once its object is complete.
func (db *DB) CompletePending(ctx context.Context, m Media, quota int64) error {
	return pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		cur, err := scanMedia(tx.QueryRow(ctx, selectMediaSQL+" FOR UPDATE", m.TenantID, "", m.MediaID))
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("select pending media: %w", err)
		}
		switch {
		case cur.UserID != m.UserID:
			return ErrNotOwner
		case cur.UploadedAt != nil:
			return ErrAlreadyUploaded
		case cur.PendingUntil != nil && cur.PendingUntil.Before(m.CreatedAt):
			return ErrNotFound
		}
		if err := checkQuota(ctx, tx, m.TenantID, m.UserID, m.Size, quota); err != nil {
			return err
		}
		now := m.CreatedAt
		if _, err := tx.Exec(ctx, completePendingSQL, m.TenantID, m.MediaID, m.UserID, m.ContentType, m.UploadName,
			m.Size, m.ObjectKey, &now); err != nil {
			return fmt.Errorf("complete pending media: %w", err)
		}
		return nil
	})
}

// InsertRemote records a cached copy of remote media; a concurrent fetch that won is kept.
func (db *DB) InsertRemote(ctx context.Context, m Media) error {
	now := m.CreatedAt
	if _, err := db.pool.Exec(ctx, insertRemoteSQL, m.TenantID, m.Origin, m.MediaID, "", m.ContentType, m.UploadName,
		m.Size, m.ObjectKey, m.CreatedAt, &now, nil); err != nil {
		return fmt.Errorf("insert remote media: %w", err)
	}
	return nil
}

// Quarantine marks one item; it reports whether a row changed.
func (db *DB) Quarantine(ctx context.Context, ref Ref, now time.Time) (bool, error) {
	tag, err := db.pool.Exec(ctx, quarantineMediaSQL, ref.TenantID, ref.Origin, ref.MediaID, now)
	if err != nil {
		return false, fmt.Errorf("quarantine media: %w", err)
	}
	return tag.RowsAffected() > 0, nil
}

// QuarantineUser marks every local upload of user and returns how many.
func (db *DB) QuarantineUser(ctx context.Context, tenant, user string, now time.Time) (int64, error) {
	tag, err := db.pool.Exec(ctx, quarantineUserSQL, tenant, user, now)
	if err != nil {
		return 0, fmt.Errorf("quarantine user media: %w", err)
	}
	return tag.RowsAffected(), nil
}

// ObjectKeys returns the keys of the media object and its thumbnails.
func (db *DB) ObjectKeys(ctx context.Context, ref Ref) ([]string, error) {
	rows, err := db.pool.Query(ctx, selectObjectKeysSQL, ref.TenantID, ref.Origin, ref.MediaID)
	if err != nil {
		return nil, fmt.Errorf("select object keys: %w", err)
	}
	keys, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("select object keys: %w", err)
	}
	return keys, nil
}

// Delete removes the row and its thumbnails' rows; it reports whether a row existed.
func (db *DB) Delete(ctx context.Context, ref Ref) (bool, error) {
	tag, err := db.pool.Exec(ctx, deleteMediaSQL, ref.TenantID, ref.Origin, ref.MediaID)
	if err != nil {
		return false, fmt.Errorf("delete media: %w", err)
	}
	return tag.RowsAffected() > 0, nil
}

// DeleteTenant removes every row of tenant.
func (db *DB) DeleteTenant(ctx context.Context, tenant string) (int64, error) {
	tag, err := db.pool.Exec(ctx, deleteTenantSQL, tenant)
	if err != nil {
		return 0, fmt.Errorf("delete tenant media: %w", err)
	}
	return tag.RowsAffected(), nil
}

func collectRefs(rows pgx.Rows, err error) ([]Ref, error) {
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Ref, error) {
		var ref Ref
		err := r.Scan(&ref.TenantID, &ref.Origin, &ref.MediaID)
		return ref, err
	})
}

// Older lists up to limit local (remote=false) or cached remote (remote=true) media of all
// tenants created before t, oldest first.
func (db *DB) Older(ctx context.Context, remote bool, before time.Time, limit int) ([]Ref, error) {
	refs, err := collectRefs(db.pool.Query(ctx, selectOlderSQL, before, remote, limit))
	if err != nil {
		return nil, fmt.Errorf("select old media: %w", err)
	}
	return refs, nil
}

// OlderRemoteOfTenant lists up to limit cached remote media of one tenant created before t.
func (db *DB) OlderRemoteOfTenant(ctx context.Context, tenant string, before time.Time, limit int) ([]Ref, error) {
	refs, err := collectRefs(db.pool.Query(ctx, selectOlderOfTenantSQL, tenant, before, limit))
	if err != nil {
		return nil, fmt.Errorf("select old remote media: %w", err)
	}
	return refs, nil
}

// ExpiredPending lists up to limit reserved IDs whose wait ended before now.
func (db *DB) ExpiredPending(ctx context.Context, now time.Time, limit int) ([]Ref, error) {
	refs, err := collectRefs(db.pool.Query(ctx, selectExpiredPendingSQL, now, limit))
	if err != nil {
		return nil, fmt.Errorf("select expired pending media: %w", err)
	}
	return refs, nil
}
