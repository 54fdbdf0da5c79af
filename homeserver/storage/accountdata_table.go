package storage

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/atoll-matrix/atoll/internal/pgdb"
)

// AccountData is one account data entry; RoomID is "" for global data.
type AccountData struct {
	RoomID    string
	Type      string
	Content   json.RawMessage
	StreamPos int64
}

// PutAccountData stores an entry at a new stream position.
func PutAccountData(ctx context.Context, q pgdb.DBTX, userID, roomID, typ string, content json.RawMessage) (int64, error) {
	pos, err := NextStreamPos(ctx, q)
	if err != nil {
		return 0, err
	}
	_, err = q.Exec(ctx, `INSERT INTO account_data (user_id, room_id, type, content, stream_pos) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (user_id, room_id, type) DO UPDATE SET content = $4, stream_pos = $5`, userID, roomID, typ, []byte(content), pos)
	if err != nil {
		return 0, fmt.Errorf("put account data %s: %w", typ, err)
	}
	return pos, nil
}

// GetAccountData reads one entry.
func GetAccountData(ctx context.Context, q pgdb.DBTX, userID, roomID, typ string) (json.RawMessage, error) {
	var b []byte
	err := q.QueryRow(ctx, `SELECT content FROM account_data WHERE user_id = $1 AND room_id = $2 AND type = $3`, userID, roomID, typ).Scan(&b)
	return b, noRows(err)
}

// AccountDataSince lists a user's entries changed in (from, to].
func AccountDataSince(ctx context.Context, q pgdb.DBTX, userID string, from, to int64) ([]AccountData, error) {
	rows, err := q.Query(ctx, `SELECT room_id, type, content, stream_pos FROM account_data
		WHERE user_id = $1 AND stream_pos > $2 AND stream_pos <= $3 ORDER BY stream_pos`, userID, from, to)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []AccountData
	for rows.Next() {
		var a AccountData
		var b []byte
		if err := rows.Scan(&a.RoomID, &a.Type, &b, &a.StreamPos); err != nil {
			return nil, err
		}
		a.Content = b
		out = append(out, a)
	}
	return out, rows.Err()
}
