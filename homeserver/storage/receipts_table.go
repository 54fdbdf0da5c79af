package storage

import (
	"context"
	"fmt"

	"github.com/atoll-matrix/atoll/internal/pgdb"
)

// Receipt is a read receipt.
type Receipt struct {
	RoomID    string
	Type      string
	UserID    string
	ThreadID  string
	EventID   string
	TS        int64
	StreamPos int64
}

// PutReceipt records a receipt at a new stream position.
func PutReceipt(ctx context.Context, q pgdb.DBTX, r Receipt) (int64, error) {
	pos, err := NextStreamPos(ctx, q)
	if err != nil {
		return 0, err
	}
	_, err = q.Exec(ctx, `INSERT INTO receipts (room_id, receipt_type, user_id, thread_id, event_id, ts, stream_pos)
		VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (room_id, receipt_type, user_id, thread_id) DO UPDATE SET event_id = $5, ts = $6, stream_pos = $7`,
		r.RoomID, r.Type, r.UserID, r.ThreadID, r.EventID, r.TS, pos)
	if err != nil {
		return 0, fmt.Errorf("put receipt: %w", err)
	}
	return pos, nil
}

// ReceiptsSince lists receipts in the rooms changed in (from, to].
func ReceiptsSince(ctx context.Context, q pgdb.DBTX, roomIDs []string, from, to int64) ([]Receipt, error) {
	rows, err := q.Query(ctx, `SELECT room_id, receipt_type, user_id, thread_id, event_id, ts, stream_pos FROM receipts
		WHERE room_id = ANY($1) AND stream_pos > $2 AND stream_pos <= $3`, roomIDs, from, to)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Receipt
	for rows.Next() {
		var r Receipt
		if err := rows.Scan(&r.RoomID, &r.Type, &r.UserID, &r.ThreadID, &r.EventID, &r.TS, &r.StreamPos); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// ReadPosition is the stream position of the event a user's latest main-timeline read
// receipt (public or private) points at in a room, 0 if none.
func ReadPosition(ctx context.Context, q pgdb.DBTX, roomID, userID string) (int64, error) {
	var pos int64
	err := q.QueryRow(ctx, `SELECT coalesce(max(e.stream_pos), 0) FROM receipts r JOIN events e ON e.event_id = r.event_id
		WHERE r.room_id = $1 AND r.user_id = $2 AND r.receipt_type IN ('m.read', 'm.read.private') AND r.thread_id IN ('', 'main')`,
		roomID, userID).Scan(&pos)
	return pos, err
}
