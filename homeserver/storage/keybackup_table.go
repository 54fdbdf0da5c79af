package storage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/atoll-matrix/atoll/internal/pgdb"
)

// BackupVersion is a server-side room key backup.
type BackupVersion struct {
	Version   int64
	Algorithm string
	AuthData  json.RawMessage
	Etag      int64
	Count     int64
}

// BackupKey is one session's key in a backup; Data is the spec's KeyBackupData.
type BackupKey struct {
	RoomID    string
	SessionID string
	Data      json.RawMessage
}

// CreateBackupVersion starts a new backup, which becomes the user's current one.
func CreateBackupVersion(ctx context.Context, q pgdb.DBTX, userID, algorithm string, authData json.RawMessage) (int64, error) {
	var v int64
	err := q.QueryRow(ctx, `INSERT INTO key_backup_versions (user_id, algorithm, auth_data) VALUES ($1, $2, $3) RETURNING version`,
		userID, algorithm, []byte(authData)).Scan(&v)
	if err != nil {
		return 0, fmt.Errorf("create key backup of %s: %w", userID, err)
	}
	return v, nil
}

const backupVersionCols = `version, algorithm, auth_data, etag,
	(SELECT count(*) FROM key_backup_keys k WHERE k.user_id = v.user_id AND k.version = v.version)`

func scanBackupVersion(row interface{ Scan(...any) error }) (BackupVersion, error) {
	var b BackupVersion
	var auth []byte
	err := row.Scan(&b.Version, &b.Algorithm, &auth, &b.Etag, &b.Count)
	b.AuthData = auth
	return b, noRows(err)
}

// CurrentBackupVersion returns the user's newest backup, ErrNotFound if none. With lock, the
// backup's row stays locked until the transaction ends, serialising uploads.
func CurrentBackupVersion(ctx context.Context, q pgdb.DBTX, userID string, lock bool) (BackupVersion, error) {
	sql := `SELECT ` + backupVersionCols + ` FROM key_backup_versions v WHERE user_id = $1 AND NOT deleted ORDER BY version DESC LIMIT 1`
	if lock {
		sql += ` FOR UPDATE`
	}
	b, err := scanBackupVersion(q.QueryRow(ctx, sql, userID))
	if err != nil && !errors.Is(err, ErrNotFound) {
		return b, fmt.Errorf("current key backup of %s: %w", userID, err)
	}
	return b, err
}

// GetBackupVersion returns one of the user's backups, ErrNotFound if it does not exist or was
// deleted.
func GetBackupVersion(ctx context.Context, q pgdb.DBTX, userID string, version int64) (BackupVersion, error) {
	b, err := scanBackupVersion(q.QueryRow(ctx, `SELECT `+backupVersionCols+` FROM key_backup_versions v
		WHERE user_id = $1 AND version = $2 AND NOT deleted`, userID, version))
	if err != nil && !errors.Is(err, ErrNotFound) {
		return b, fmt.Errorf("key backup %d of %s: %w", version, userID, err)
	}
	return b, err
}

// UpdateBackupAuthData replaces a backup's auth_data.
func UpdateBackupAuthData(ctx context.Context, q pgdb.DBTX, userID string, version int64, authData json.RawMessage) error {
	tag, err := q.Exec(ctx, `UPDATE key_backup_versions SET auth_data = $3 WHERE user_id = $1 AND version = $2 AND NOT deleted`,
		userID, version, []byte(authData))
	if err != nil {
		return fmt.Errorf("update key backup %d of %s: %w", version, userID, err)
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return nil
}

// DeleteBackupVersion deletes a backup with its keys.
func DeleteBackupVersion(ctx context.Context, q pgdb.DBTX, userID string, version int64) error {
	tag, err := q.Exec(ctx, `UPDATE key_backup_versions SET deleted = true WHERE user_id = $1 AND version = $2 AND NOT deleted`, userID, version)
	if err != nil {
		return fmt.Errorf("delete key backup %d of %s: %w", version, userID, err)
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	if _, err := q.Exec(ctx, `DELETE FROM key_backup_keys WHERE user_id = $1 AND version = $2`, userID, version); err != nil {
		return fmt.Errorf("delete keys of backup %d of %s: %w", version, userID, err)
	}
	return nil
}

// BumpBackupEtag gives a backup a new etag after its keys changed.
func BumpBackupEtag(ctx context.Context, q pgdb.DBTX, userID string, version int64) error {
	_, err := q.Exec(ctx, `UPDATE key_backup_versions SET etag = etag + 1 WHERE user_id = $1 AND version = $2`, userID, version)
	if err != nil {
		return fmt.Errorf("bump etag of key backup %d: %w", version, err)
	}
	return nil
}

// BackupKeys returns a backup's keys, narrowed to a room and a session when those are set.
func BackupKeys(ctx context.Context, q pgdb.DBTX, userID string, version int64, roomID, sessionID string) ([]BackupKey, error) {
	rows, err := q.Query(ctx, `SELECT room_id, session_id, data FROM key_backup_keys
		WHERE user_id = $1 AND version = $2 AND ($3 = '' OR room_id = $3) AND ($4 = '' OR session_id = $4)
		ORDER BY room_id, session_id`, userID, version, roomID, sessionID)
	if err != nil {
		return nil, fmt.Errorf("keys of backup %d: %w", version, err)
	}
	defer rows.Close()
	var out []BackupKey
	for rows.Next() {
		var k BackupKey
		var b []byte
		if err := rows.Scan(&k.RoomID, &k.SessionID, &b); err != nil {
			return nil, fmt.Errorf("scan backup key: %w", err)
		}
		k.Data = b
		out = append(out, k)
	}
	return out, rows.Err()
}

// PutBackupKey stores (replacing) one session's key.
func PutBackupKey(ctx context.Context, q pgdb.DBTX, userID string, version int64, k BackupKey) error {
	_, err := q.Exec(ctx, `INSERT INTO key_backup_keys (user_id, version, room_id, session_id, data) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE SET data = EXCLUDED.data`,
		userID, version, k.RoomID, k.SessionID, []byte(k.Data))
	if err != nil {
		return fmt.Errorf("put backup key %s/%s: %w", k.RoomID, k.SessionID, err)
	}
	return nil
}

// DeleteBackupKeys removes a backup's keys, narrowed to a room and a session when those are
// set, and returns how many were removed.
func DeleteBackupKeys(ctx context.Context, q pgdb.DBTX, userID string, version int64, roomID, sessionID string) (int64, error) {
	tag, err := q.Exec(ctx, `DELETE FROM key_backup_keys
		WHERE user_id = $1 AND version = $2 AND ($3 = '' OR room_id = $3) AND ($4 = '' OR session_id = $4)`,
		userID, version, roomID, sessionID)
	if err != nil {
		return 0, fmt.Errorf("delete keys of backup %d: %w", version, err)
	}
	return tag.RowsAffected(), nil
}
