package storage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/atoll-matrix/atoll/internal/pgdb"
)

// ErrKeyConflict is returned when a one-time key ID is uploaded again with other content.
var ErrKeyConflict = errors.New("one-time key exists with other content")

// DeviceKeys is a device's uploaded identity keys with the device's display name.
type DeviceKeys struct {
	DeviceID    string
	DisplayName string
	KeyJSON     json.RawMessage
}

// PutDeviceKeys stores a device's identity keys and reports whether they changed.
func PutDeviceKeys(ctx context.Context, q pgdb.DBTX, userID, deviceID string, keyJSON json.RawMessage) (bool, error) {
	tag, err := q.Exec(ctx, `INSERT INTO device_keys (user_id, device_id, key_json) VALUES ($1, $2, $3)
		ON CONFLICT (user_id, device_id) DO UPDATE SET key_json = EXCLUDED.key_json
		WHERE device_keys.key_json IS DISTINCT FROM EXCLUDED.key_json`, userID, deviceID, []byte(keyJSON))
	if err != nil {
		return false, fmt.Errorf("put device keys %s/%s: %w", userID, deviceID, err)
	}
	return tag.RowsAffected() > 0, nil
}

// QueryDeviceKeys returns the identity keys of a user's existing devices, of all of them when
// deviceIDs is empty.
func QueryDeviceKeys(ctx context.Context, q pgdb.DBTX, userID string, deviceIDs []string) ([]DeviceKeys, error) {
	if deviceIDs == nil {
		deviceIDs = []string{}
	}
	rows, err := q.Query(ctx, `SELECT k.device_id, coalesce(d.display_name, ''), k.key_json FROM device_keys k
		JOIN devices d ON d.user_id = k.user_id AND d.device_id = k.device_id
		WHERE k.user_id = $1 AND (cardinality($2::text[]) = 0 OR k.device_id = ANY($2)) ORDER BY k.device_id`, userID, deviceIDs)
	if err != nil {
		return nil, fmt.Errorf("query device keys of %s: %w", userID, err)
	}
	defer rows.Close()
	var out []DeviceKeys
	for rows.Next() {
		var d DeviceKeys
		var b []byte
		if err := rows.Scan(&d.DeviceID, &d.DisplayName, &b); err != nil {
			return nil, fmt.Errorf("scan device keys: %w", err)
		}
		d.KeyJSON = b
		out = append(out, d)
	}
	return out, rows.Err()
}

// OneTimeKey is a one-time or fallback key; KeyID is the full "<algorithm>:<id>".
type OneTimeKey struct {
	KeyID     string
	Algorithm string
	KeyJSON   json.RawMessage
}

// PutOneTimeKeys stores one-time keys in two statements whatever their number. A key ID
// uploaded again with the same content is ignored; with other content the call fails with
// ErrKeyConflict and stores nothing.
func PutOneTimeKeys(ctx context.Context, q pgdb.DBTX, userID, deviceID string, keys []OneTimeKey) error {
	if len(keys) == 0 {
		return nil
	}
	ids := make([]string, len(keys))
	algs := make([]string, len(keys))
	js := make([]string, len(keys))
	for i, k := range keys {
		ids[i], algs[i], js[i] = k.KeyID, k.Algorithm, string(k.KeyJSON)
	}
	var conflict string
	err := q.QueryRow(ctx, `SELECT o.key_id FROM one_time_keys o
		JOIN unnest($3::text[], $4::text[]) AS i(key_id, key_json) ON i.key_id = o.key_id
		WHERE o.user_id = $1 AND o.device_id = $2 AND o.key_json <> i.key_json::jsonb LIMIT 1`,
		userID, deviceID, ids, js).Scan(&conflict)
	if err == nil {
		return fmt.Errorf("one-time key %s: %w", conflict, ErrKeyConflict)
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("check one-time keys: %w", err)
	}
	_, err = q.Exec(ctx, `INSERT INTO one_time_keys (user_id, device_id, key_id, algorithm, key_json)
		SELECT $1, $2, i.key_id, i.algorithm, i.key_json::jsonb FROM unnest($3::text[], $4::text[], $5::text[]) AS i(key_id, algorithm, key_json)
		ON CONFLICT (user_id, device_id, key_id) DO NOTHING`, userID, deviceID, ids, algs, js)
	if err != nil {
		return fmt.Errorf("put one-time keys: %w", err)
	}
	return nil
}

// PutFallbackKey replaces a device's fallback key of the key's algorithm. Uploading the same
// key again keeps its used flag; a new key starts unused.
func PutFallbackKey(ctx context.Context, q pgdb.DBTX, userID, deviceID string, k OneTimeKey) error {
	_, err := q.Exec(ctx, `INSERT INTO fallback_keys (user_id, device_id, algorithm, key_id, key_json) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (user_id, device_id, algorithm) DO UPDATE SET key_id = EXCLUDED.key_id, key_json = EXCLUDED.key_json,
			used = fallback_keys.used AND fallback_keys.key_id = EXCLUDED.key_id AND fallback_keys.key_json = EXCLUDED.key_json`,
		userID, deviceID, k.Algorithm, k.KeyID, []byte(k.KeyJSON))
	if err != nil {
		return fmt.Errorf("put fallback key %s: %w", k.KeyID, err)
	}
	return nil
}

// ClaimOneTimeKey removes and returns one of a device's one-time keys of an algorithm,
// falling back to its fallback key (marked used, not removed). It returns ErrNotFound when
// the device has neither. Concurrent claims never receive the same one-time key.
func ClaimOneTimeKey(ctx context.Context, q pgdb.DBTX, userID, deviceID, algorithm string) (OneTimeKey, error) {
	k := OneTimeKey{Algorithm: algorithm}
	var b []byte
	err := q.QueryRow(ctx, `DELETE FROM one_time_keys WHERE (user_id, device_id, key_id) = (
			SELECT user_id, device_id, key_id FROM one_time_keys
			WHERE user_id = $1 AND device_id = $2 AND algorithm = $3
			ORDER BY key_id LIMIT 1 FOR UPDATE SKIP LOCKED)
		RETURNING key_id, key_json`, userID, deviceID, algorithm).Scan(&k.KeyID, &b)
	if err == nil {
		k.KeyJSON = b
		return k, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return k, fmt.Errorf("claim one-time key of %s/%s: %w", userID, deviceID, err)
	}
	err = q.QueryRow(ctx, `UPDATE fallback_keys SET used = true WHERE user_id = $1 AND device_id = $2 AND algorithm = $3
		RETURNING key_id, key_json`, userID, deviceID, algorithm).Scan(&k.KeyID, &b)
	if errors.Is(err, pgx.ErrNoRows) {
		return k, ErrNotFound
	}
	if err != nil {
		return k, fmt.Errorf("claim fallback key of %s/%s: %w", userID, deviceID, err)
	}
	k.KeyJSON = b
	return k, nil
}

// CrossSigningKeys returns a user's cross-signing keys by type ("master", "self_signing",
// "user_signing").
func CrossSigningKeys(ctx context.Context, q pgdb.DBTX, userID string) (map[string]json.RawMessage, error) {
	rows, err := q.Query(ctx, `SELECT key_type, key_json FROM cross_signing_keys WHERE user_id = $1`, userID)
	if err != nil {
		return nil, fmt.Errorf("cross-signing keys of %s: %w", userID, err)
	}
	defer rows.Close()
	out := map[string]json.RawMessage{}
	for rows.Next() {
		var typ string
		var b []byte
		if err := rows.Scan(&typ, &b); err != nil {
			return nil, fmt.Errorf("scan cross-signing key: %w", err)
		}
		out[typ] = b
	}
	return out, rows.Err()
}

// PutCrossSigningKey stores (replacing) one of a user's cross-signing keys.
func PutCrossSigningKey(ctx context.Context, q pgdb.DBTX, userID, keyType string, keyJSON json.RawMessage) error {
	_, err := q.Exec(ctx, `INSERT INTO cross_signing_keys (user_id, key_type, key_json) VALUES ($1, $2, $3)
		ON CONFLICT (user_id, key_type) DO UPDATE SET key_json = EXCLUDED.key_json`, userID, keyType, []byte(keyJSON))
	if err != nil {
		return fmt.Errorf("put %s key of %s: %w", keyType, userID, err)
	}
	return nil
}

// KeySignature is a signature uploaded separately from the key it signs.
type KeySignature struct {
	TargetUserID string
	TargetKeyID  string // a device ID or a cross-signing public key
	SignerUserID string
	SignerKeyID  string // "ed25519:<device ID or public key>"
	Signature    string
}

// PutKeySignature stores (replacing) a signature.
func PutKeySignature(ctx context.Context, q pgdb.DBTX, s KeySignature) error {
	_, err := q.Exec(ctx, `INSERT INTO key_signatures (target_user_id, target_key_id, signer_user_id, signer_key_id, signature)
		VALUES ($1, $2, $3, $4, $5) ON CONFLICT (target_user_id, target_key_id, signer_user_id, signer_key_id)
		DO UPDATE SET signature = EXCLUDED.signature`, s.TargetUserID, s.TargetKeyID, s.SignerUserID, s.SignerKeyID, s.Signature)
	if err != nil {
		return fmt.Errorf("put signature on %s/%s: %w", s.TargetUserID, s.TargetKeyID, err)
	}
	return nil
}

// DeleteSignaturesBy removes every signature made by one of signer's keys, when that key is
// replaced.
func DeleteSignaturesBy(ctx context.Context, q pgdb.DBTX, signerUserID, signerKeyID string) error {
	_, err := q.Exec(ctx, `DELETE FROM key_signatures WHERE signer_user_id = $1 AND signer_key_id = $2`, signerUserID, signerKeyID)
	if err != nil {
		return fmt.Errorf("delete signatures by %s %s: %w", signerUserID, signerKeyID, err)
	}
	return nil
}

// KeySignatures returns the signatures over a user's keys.
func KeySignatures(ctx context.Context, q pgdb.DBTX, targetUserID string) ([]KeySignature, error) {
	rows, err := q.Query(ctx, `SELECT target_user_id, target_key_id, signer_user_id, signer_key_id, signature
		FROM key_signatures WHERE target_user_id = $1`, targetUserID)
	if err != nil {
		return nil, fmt.Errorf("signatures on keys of %s: %w", targetUserID, err)
	}
	defer rows.Close()
	var out []KeySignature
	for rows.Next() {
		var s KeySignature
		if err := rows.Scan(&s.TargetUserID, &s.TargetKeyID, &s.SignerUserID, &s.SignerKeyID, &s.Signature); err != nil {
			return nil, fmt.Errorf("scan signature: %w", err)
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// DeleteDeviceKeyData removes what DeleteDevices leaves of deleted devices: signatures over
// their keys and their remembered to-device transaction IDs.
func DeleteDeviceKeyData(ctx context.Context, q pgdb.DBTX, userID string, deviceIDs []string) error {
	if len(deviceIDs) == 0 {
		return nil
	}
	if _, err := q.Exec(ctx, `DELETE FROM key_signatures WHERE target_user_id = $1 AND target_key_id = ANY($2)`, userID, deviceIDs); err != nil {
		return fmt.Errorf("delete device signatures of %s: %w", userID, err)
	}
	if _, err := q.Exec(ctx, `DELETE FROM to_device_txns WHERE user_id = $1 AND device_id = ANY($2)`, userID, deviceIDs); err != nil {
		return fmt.Errorf("delete to-device transactions of %s: %w", userID, err)
	}
	return nil
}

// toDeviceTxnTTL is how long (ms) a sendToDevice transaction ID is remembered: clients
// retry within minutes, so a day is plenty.
const toDeviceTxnTTL = 24 * 60 * 60 * 1000

// RecordToDeviceTxn remembers a sendToDevice transaction; it returns false when the
// transaction was already recorded (the request is a retry). It forgets the device's
// transactions older than a day.
func RecordToDeviceTxn(ctx context.Context, q pgdb.DBTX, userID, deviceID, txnID string, now int64) (bool, error) {
	if _, err := q.Exec(ctx, `DELETE FROM to_device_txns WHERE user_id = $1 AND device_id = $2 AND created_ts < $3`,
		userID, deviceID, now-toDeviceTxnTTL); err != nil {
		return false, fmt.Errorf("prune to-device transactions: %w", err)
	}
	tag, err := q.Exec(ctx, `INSERT INTO to_device_txns (user_id, device_id, txn_id, created_ts) VALUES ($1, $2, $3, $4)
		ON CONFLICT DO NOTHING`, userID, deviceID, txnID, now)
	if err != nil {
		return false, fmt.Errorf("record to-device transaction: %w", err)
	}
	return tag.RowsAffected() > 0, nil
}

// DeviceIDs lists the IDs of a user's devices.
func DeviceIDs(ctx context.Context, q pgdb.DBTX, userID string) ([]string, error) {
	rows, err := q.Query(ctx, `SELECT device_id FROM devices WHERE user_id = $1 ORDER BY device_id`, userID)
	if err != nil {
		return nil, fmt.Errorf("device IDs of %s: %w", userID, err)
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// UsersLeftSince lists users who left or were banned from rooms userID has been in, in
// (from, to]. The caller drops those still sharing a room with userID.
func UsersLeftSince(ctx context.Context, q pgdb.DBTX, userID string, from, to int64) ([]string, error) {
	rows, err := q.Query(ctx, `SELECT DISTINCT user_id FROM memberships WHERE stream_pos > $1 AND stream_pos <= $2
		AND membership IN ('leave', 'ban') AND room_id IN (SELECT room_id FROM memberships WHERE user_id = $3)`, from, to, userID)
	if err != nil {
		return nil, fmt.Errorf("users left since %d: %w", from, err)
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// RemoveDevices deletes devices with their tokens, keys, signatures, queued messages and
// pushers, and records a device-list change so the user's contacts refetch their keys. With
// no IDs it removes every device of the user except keep.
func RemoveDevices(ctx context.Context, q pgdb.DBTX, userID string, ids []string, keep string) error {
	if len(ids) == 0 {
		all, err := ListDevices(ctx, q, userID)
		if err != nil {
			return err
		}
		for _, d := range all {
			if d.DeviceID != keep {
				ids = append(ids, d.DeviceID)
			}
		}
		if len(ids) == 0 {
			return nil
		}
	}
	if err := DeleteDevices(ctx, q, userID, ids, keep); err != nil {
		return err
	}
	if err := DeleteDeviceKeyData(ctx, q, userID, ids); err != nil {
		return err
	}
	_, err := MarkDeviceListChanged(ctx, q, userID)
	return err
}
