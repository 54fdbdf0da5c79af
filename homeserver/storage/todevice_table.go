package storage

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/atoll-matrix/atoll/internal/pgdb"
)

// ToDevice is a message queued for one device.
type ToDevice struct {
	StreamPos int64
	Sender    string
	Type      string
	Content   json.RawMessage
}

// QueueToDevice queues a message for a device ("*" is expanded by the caller).
func QueueToDevice(ctx context.Context, q pgdb.DBTX, userID, deviceID, sender, typ string, content json.RawMessage) (int64, error) {
	pos, err := NextStreamPos(ctx, q)
	if err != nil {
		return 0, err
	}
	_, err = q.Exec(ctx, `INSERT INTO to_device (stream_pos, user_id, device_id, sender, type, content) VALUES ($1, $2, $3, $4, $5, $6)`,
		pos, userID, deviceID, sender, typ, []byte(content))
	if err != nil {
		return 0, fmt.Errorf("queue to-device: %w", err)
	}
	return pos, nil
}

// AckToDevice deletes messages the device has received (positions up to upTo).
func AckToDevice(ctx context.Context, q pgdb.DBTX, userID, deviceID string, upTo int64) error {
	_, err := q.Exec(ctx, `DELETE FROM to_device WHERE user_id = $1 AND device_id = $2 AND stream_pos <= $3`, userID, deviceID, upTo)
	return err
}

// ToDeviceSince returns up to limit messages for a device after from, up to to.
func ToDeviceSince(ctx context.Context, q pgdb.DBTX, userID, deviceID string, from, to int64, limit int) ([]ToDevice, error) {
	rows, err := q.Query(ctx, `SELECT stream_pos, sender, type, content FROM to_device
		WHERE user_id = $1 AND device_id = $2 AND stream_pos > $3 AND stream_pos <= $4 ORDER BY stream_pos LIMIT $5`,
		userID, deviceID, from, to, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []ToDevice
	for rows.Next() {
		var m ToDevice
		var b []byte
		if err := rows.Scan(&m.StreamPos, &m.Sender, &m.Type, &b); err != nil {
			return nil, err
		}
		m.Content = b
		out = append(out, m)
	}
	return out, rows.Err()
}
