package storage

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/atoll-matrix/atoll/internal/pgdb"
)

// MarkDeviceListChanged records that a user's devices or cross-signing keys changed.
func MarkDeviceListChanged(ctx context.Context, q pgdb.DBTX, userID string) (int64, error) {
	pos, err := NextStreamPos(ctx, q)
	if err != nil {
		return 0, err
	}
	_, err = q.Exec(ctx, `INSERT INTO device_list_changes (stream_pos, user_id) VALUES ($1, $2)`, pos, userID)
	return pos, err
}

// DeviceListChangesSince returns users among candidates whose device lists changed in (from, to].
func DeviceListChangesSince(ctx context.Context, q pgdb.DBTX, candidates []string, from, to int64) ([]string, error) {
	rows, err := q.Query(ctx, `SELECT DISTINCT user_id FROM device_list_changes WHERE user_id = ANY($1) AND stream_pos > $2 AND stream_pos <= $3`,
		candidates, from, to)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// OneTimeKeyCounts counts a device's unclaimed one-time keys by algorithm.
func OneTimeKeyCounts(ctx context.Context, q pgdb.DBTX, userID, deviceID string) (map[string]int, error) {
	rows, err := q.Query(ctx, `SELECT algorithm, count(*) FROM one_time_keys WHERE user_id = $1 AND device_id = $2 GROUP BY algorithm`, userID, deviceID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var alg string
		var n int
		if err := rows.Scan(&alg, &n); err != nil {
			return nil, err
		}
		out[alg] = n
	}
	return out, rows.Err()
}

// UnusedFallbackKeyTypes lists the algorithms of a device's unused fallback keys.
func UnusedFallbackKeyTypes(ctx context.Context, q pgdb.DBTX, userID, deviceID string) ([]string, error) {
	rows, err := q.Query(ctx, `SELECT algorithm FROM fallback_keys WHERE user_id = $1 AND device_id = $2 AND NOT used ORDER BY algorithm`, userID, deviceID)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}
