package storage

import (
	"context"
	"fmt"

	"github.com/atoll-matrix/atoll/internal/pgdb"
)

// Room is a room's head: what new local events build on.
type Room struct {
	RoomID      string
	Version     string
	Creator     string
	Published   bool
	Extremities []string
	Depth       int64
	StateGroup  int64
}

// InsertRoom records a new room before its create event is persisted.
func InsertRoom(ctx context.Context, q pgdb.DBTX, r Room, now int64) error {
	_, err := q.Exec(ctx, `INSERT INTO rooms (room_id, room_version, creator, published, created_ts) VALUES ($1, $2, $3, $4, $5)`,
		r.RoomID, r.Version, r.Creator, r.Published, now)
	if pgdb.IsUniqueViolation(err) {
		return fmt.Errorf("room %s: %w", r.RoomID, ErrExists)
	}
	return err
}

// ErrExists is returned when a row with the same key exists.
var ErrExists = fmt.Errorf("already exists")

// RoomForUpdate reads a room's head and locks it until the transaction ends, serialising
// writers of one room across processes.
func RoomForUpdate(ctx context.Context, q pgdb.DBTX, roomID string) (Room, error) {
	return scanRoom(q.QueryRow(ctx, `SELECT room_id, room_version, creator, published, extremities, depth, coalesce(state_group, 0)
		FROM rooms WHERE room_id = $1 FOR UPDATE`, roomID))
}

// GetRoom reads a room's head without locking.
func GetRoom(ctx context.Context, q pgdb.DBTX, roomID string) (Room, error) {
	return scanRoom(q.QueryRow(ctx, `SELECT room_id, room_version, creator, published, extremities, depth, coalesce(state_group, 0)
		FROM rooms WHERE room_id = $1`, roomID))
}

func scanRoom(row interface{ Scan(...any) error }) (Room, error) {
	var r Room
	err := row.Scan(&r.RoomID, &r.Version, &r.Creator, &r.Published, &r.Extremities, &r.Depth, &r.StateGroup)
	return r, noRows(err)
}

// SetRoomHead moves a room's head after an event.
func SetRoomHead(ctx context.Context, q pgdb.DBTX, roomID string, extremities []string, depth, stateGroup int64) error {
	_, err := q.Exec(ctx, `UPDATE rooms SET extremities = $2, depth = $3, state_group = $4 WHERE room_id = $1`,
		roomID, extremities, depth, stateGroup)
	return err
}

// SetPublished lists or unlists a room in the public room directory.
func SetPublished(ctx context.Context, q pgdb.DBTX, roomID string, published bool) error {
	tag, err := q.Exec(ctx, `UPDATE rooms SET published = $2 WHERE room_id = $1`, roomID, published)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return nil
}

// PublishedRoom is a public room directory entry's raw material.
type PublishedRoom struct {
	RoomID  string
	Members int
}

// PublishedRooms lists published rooms by member count, paginated by offset.
func PublishedRooms(ctx context.Context, q pgdb.DBTX, offset, limit int) ([]PublishedRoom, int, error) {
	var total int
	if err := q.QueryRow(ctx, `SELECT count(*) FROM rooms WHERE published`).Scan(&total); err != nil {
		return nil, 0, err
	}
	rows, err := q.Query(ctx, `SELECT r.room_id, (SELECT count(*) FROM current_state m WHERE m.room_id = r.room_id
			AND m.type = 'm.room.member' AND m.membership = 'join') AS n
		FROM rooms r WHERE r.published ORDER BY n DESC, r.room_id OFFSET $1 LIMIT $2`, offset, limit)
	if err != nil {
		return nil, 0, err
	}
	defer rows.Close()
	var out []PublishedRoom
	for rows.Next() {
		var p PublishedRoom
		if err := rows.Scan(&p.RoomID, &p.Members); err != nil {
			return nil, 0, err
		}
		out = append(out, p)
	}
	return out, total, rows.Err()
}

// Aliases.

// InsertAlias maps alias to room.
func InsertAlias(ctx context.Context, q pgdb.DBTX, alias, roomID, creator string) error {
	_, err := q.Exec(ctx, `INSERT INTO room_aliases (alias, room_id, creator) VALUES ($1, $2, $3)`, alias, roomID, creator)
	if pgdb.IsUniqueViolation(err) {
		return ErrExists
	}
	return err
}

// AliasRoom resolves an alias.
func AliasRoom(ctx context.Context, q pgdb.DBTX, alias string) (roomID, creator string, err error) {
	err = q.QueryRow(ctx, `SELECT room_id, creator FROM room_aliases WHERE alias = $1`, alias).Scan(&roomID, &creator)
	return roomID, creator, noRows(err)
}

// DeleteAlias removes an alias.
func DeleteAlias(ctx context.Context, q pgdb.DBTX, alias string) error {
	tag, err := q.Exec(ctx, `DELETE FROM room_aliases WHERE alias = $1`, alias)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return nil
}

// RoomAliases lists the local aliases of a room.
func RoomAliases(ctx context.Context, q pgdb.DBTX, roomID string) ([]string, error) {
	rows, err := q.Query(ctx, `SELECT alias FROM room_aliases WHERE room_id = $1 ORDER BY alias`, roomID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []string{}
	for rows.Next() {
		var a string
		if err := rows.Scan(&a); err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, rows.Err()
}
