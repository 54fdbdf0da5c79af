package storage

import (
	"context"
	"fmt"

	"github.com/atoll-matrix/atoll/internal/pgdb"
)

// Device is a login of a user.
type Device struct {
	UserID      string
	DeviceID    string
	DisplayName string
	LastSeenTS  int64
	LastSeenIP  string
}

// UpsertDevice creates a device, or gives an existing one a new token (logging in again
// with the same device ID).
func UpsertDevice(ctx context.Context, q pgdb.DBTX, d Device, tokenHash []byte, now int64) error {
	_, err := q.Exec(ctx, `INSERT INTO devices (user_id, device_id, display_name, token_hash, created_ts, last_seen_ts, last_seen_ip)
		VALUES ($1, $2, nullif($3, ''), $4, $5, $5, nullif($6, ''))
		ON CONFLICT (user_id, device_id) DO UPDATE SET token_hash = $4,
			display_name = coalesce(nullif($3, ''), devices.display_name), last_seen_ts = $5`,
		d.UserID, d.DeviceID, d.DisplayName, tokenHash, now, d.LastSeenIP)
	if err != nil {
		return fmt.Errorf("upsert device %s/%s: %w", d.UserID, d.DeviceID, err)
	}
	return nil
}

// DeviceByToken finds the device logged in with the token of this hash.
func DeviceByToken(ctx context.Context, q pgdb.DBTX, tokenHash []byte) (Device, error) {
	var d Device
	err := q.QueryRow(ctx, `SELECT user_id, device_id, coalesce(display_name, ''), coalesce(last_seen_ts, 0), coalesce(last_seen_ip, '')
		FROM devices WHERE token_hash = $1`, tokenHash).Scan(&d.UserID, &d.DeviceID, &d.DisplayName, &d.LastSeenTS, &d.LastSeenIP)
	return d, noRows(err)
}

// TouchDevice records when and from where a device was last seen.
func TouchDevice(ctx context.Context, q pgdb.DBTX, userID, deviceID string, ts int64, ip string) error {
	_, err := q.Exec(ctx, `UPDATE devices SET last_seen_ts = $3, last_seen_ip = $4 WHERE user_id = $1 AND device_id = $2`, userID, deviceID, ts, ip)
	return err
}

// ListDevices returns a user's devices.
func ListDevices(ctx context.Context, q pgdb.DBTX, userID string) ([]Device, error) {
	rows, err := q.Query(ctx, `SELECT user_id, device_id, coalesce(display_name, ''), coalesce(last_seen_ts, 0), coalesce(last_seen_ip, '')
		FROM devices WHERE user_id = $1 ORDER BY device_id`, userID)
	if err != nil {
		return nil, fmt.Errorf("list devices: %w", err)
	}
	defer rows.Close()
	var out []Device
	for rows.Next() {
		var d Device
		if err := rows.Scan(&d.UserID, &d.DeviceID, &d.DisplayName, &d.LastSeenTS, &d.LastSeenIP); err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// GetDevice reads one device.
func GetDevice(ctx context.Context, q pgdb.DBTX, userID, deviceID string) (Device, error) {
	d := Device{UserID: userID, DeviceID: deviceID}
	err := q.QueryRow(ctx, `SELECT coalesce(display_name, ''), coalesce(last_seen_ts, 0), coalesce(last_seen_ip, '')
		FROM devices WHERE user_id = $1 AND device_id = $2`, userID, deviceID).Scan(&d.DisplayName, &d.LastSeenTS, &d.LastSeenIP)
	return d, noRows(err)
}

// RenameDevice sets a device's display name.
func RenameDevice(ctx context.Context, q pgdb.DBTX, userID, deviceID, name string) error {
	tag, err := q.Exec(ctx, `UPDATE devices SET display_name = $3 WHERE user_id = $1 AND device_id = $2`, userID, deviceID, name)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return nil
}

// DeleteDevices removes devices with their keys and pushers; with no IDs it removes all of
// the user's devices except keep.
func DeleteDevices(ctx context.Context, q pgdb.DBTX, userID string, deviceIDs []string, keep string) error {
	for _, stmt := range []string{
		`DELETE FROM devices WHERE user_id = $1 AND (cardinality($2::text[]) = 0 OR device_id = ANY($2)) AND device_id <> $3`,
		`DELETE FROM device_keys WHERE user_id = $1 AND (cardinality($2::text[]) = 0 OR device_id = ANY($2)) AND device_id <> $3`,
		`DELETE FROM one_time_keys WHERE user_id = $1 AND (cardinality($2::text[]) = 0 OR device_id = ANY($2)) AND device_id <> $3`,
		`DELETE FROM fallback_keys WHERE user_id = $1 AND (cardinality($2::text[]) = 0 OR device_id = ANY($2)) AND device_id <> $3`,
		`DELETE FROM to_device WHERE user_id = $1 AND (cardinality($2::text[]) = 0 OR device_id = ANY($2)) AND device_id <> $3`,
		`DELETE FROM pushers WHERE user_id = $1 AND (cardinality($2::text[]) = 0 OR device_id = ANY($2)) AND device_id <> $3`,
	} {
		if _, err := q.Exec(ctx, stmt, userID, deviceIDs, keep); err != nil {
			return fmt.Errorf("delete devices of %s: %w", userID, err)
		}
	}
	return nil
}

// LogoutDevice removes a device's token and the device itself.
func LogoutDevice(ctx context.Context, q pgdb.DBTX, userID, deviceID string) error {
	return DeleteDevices(ctx, q, userID, []string{deviceID}, "")
}
