package storage

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/atoll-matrix/atoll/internal/pgdb"
)

// EventRow is a persisted event.
type EventRow struct {
	StreamPos      int64
	EventID        string
	RoomID         string
	Type           string
	StateKey       *string
	Sender         string
	OriginServerTS int64
	Depth          int64
	JSON           []byte
	StateBefore    int64
	StateAfter     int64
	// Outlier events are known (auth chains, state from a join) but not part of the timeline.
	Outlier bool
	// SoftFailed events passed the auth rules at their place in the DAG but not against the
	// current state: stored, never shown or built upon.
	SoftFailed      bool
	Origin          string
	RedactedBecause string
	RelatesTo       string
	RelType         string
	TxnDevice       string
	TxnID           string
}

func nullableID(id int64) *int64 {
	if id == 0 {
		return nil
	}
	return &id
}

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// InsertEvent stores an event.
func InsertEvent(ctx context.Context, q pgdb.DBTX, e EventRow) error {
	_, err := q.Exec(ctx, `INSERT INTO events (stream_pos, event_id, room_id, type, state_key, sender, origin_server_ts,
			depth, json, state_before, state_after, outlier, soft_failed, origin, relates_to, rel_type, txn_device, txn_id)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)`,
		e.StreamPos, e.EventID, e.RoomID, e.Type, e.StateKey, e.Sender, e.OriginServerTS, e.Depth, string(e.JSON),
		nullableID(e.StateBefore), nullableID(e.StateAfter), e.Outlier, e.SoftFailed, nullable(e.Origin),
		nullable(e.RelatesTo), nullable(e.RelType), nullable(e.TxnDevice), nullable(e.TxnID))
	if pgdb.IsUniqueViolation(err) {
		return fmt.Errorf("event %s: %w", e.EventID, ErrExists)
	}
	if err != nil {
		return fmt.Errorf("insert event %s: %w", e.EventID, err)
	}
	return nil
}

const eventColumns = `stream_pos, event_id, room_id, type, state_key, sender, origin_server_ts, depth, json,
	coalesce(state_before, 0), coalesce(state_after, 0), outlier, soft_failed, coalesce(origin, ''),
	coalesce(redacted_because, ''), coalesce(relates_to, ''), coalesce(rel_type, ''),
	coalesce(txn_device, ''), coalesce(txn_id, '')`

func scanEvent(row pgx.Row) (EventRow, error) {
	var e EventRow
	var js string
	err := row.Scan(&e.StreamPos, &e.EventID, &e.RoomID, &e.Type, &e.StateKey, &e.Sender, &e.OriginServerTS, &e.Depth,
		&js, &e.StateBefore, &e.StateAfter, &e.Outlier, &e.SoftFailed, &e.Origin,
		&e.RedactedBecause, &e.RelatesTo, &e.RelType, &e.TxnDevice, &e.TxnID)
	e.JSON = []byte(js)
	return e, noRows(err)
}

func collectEvents(rows pgx.Rows, err error) ([]EventRow, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []EventRow
	for rows.Next() {
		e, err := scanEvent(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// EventByID reads one event.
func EventByID(ctx context.Context, q pgdb.DBTX, eventID string) (EventRow, error) {
	return scanEvent(q.QueryRow(ctx, `SELECT `+eventColumns+` FROM events WHERE event_id = $1`, eventID))
}

// EventsByID reads events by ID, in stream order; unknown IDs are skipped.
func EventsByID(ctx context.Context, q pgdb.DBTX, ids []string) ([]EventRow, error) {
	return collectEvents(q.Query(ctx, `SELECT `+eventColumns+` FROM events WHERE event_id = ANY($1) ORDER BY stream_pos`, ids))
}

// TxnEventID returns the event a (room, sender, device, txn) already produced, if any.
func TxnEventID(ctx context.Context, q pgdb.DBTX, roomID, sender, device, txnID string) (string, error) {
	var id string
	err := q.QueryRow(ctx, `SELECT event_id FROM events WHERE room_id = $1 AND sender = $2 AND txn_device = $3 AND txn_id = $4`,
		roomID, sender, device, txnID).Scan(&id)
	return id, noRows(err)
}

// RoomEvents returns up to limit events of a room with from < stream_pos <= to, newest first
// when backwards is set, oldest first otherwise.
func RoomEvents(ctx context.Context, q pgdb.DBTX, roomID string, from, to int64, limit int, backwards bool) ([]EventRow, error) {
	order := "ASC"
	if backwards {
		order = "DESC"
	}
	return collectEvents(q.Query(ctx, `SELECT `+eventColumns+` FROM events WHERE room_id = $1 AND stream_pos > $2 AND stream_pos <= $3
		AND NOT outlier AND NOT soft_failed ORDER BY stream_pos `+order+` LIMIT $4`, roomID, from, to, limit))
}

// RoomsWithEvents returns, of the given rooms, those with events in (from, to].
func RoomsWithEvents(ctx context.Context, q pgdb.DBTX, roomIDs []string, from, to int64) ([]string, error) {
	rows, err := q.Query(ctx, `SELECT DISTINCT room_id FROM events WHERE room_id = ANY($1) AND stream_pos > $2 AND stream_pos <= $3
		AND NOT outlier AND NOT soft_failed`, roomIDs, from, to)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// Relations lists events relating to eventID, newest first.
func Relations(ctx context.Context, q pgdb.DBTX, roomID, eventID, relType, evType string, from int64, limit int) ([]EventRow, error) {
	return collectEvents(q.Query(ctx, `SELECT `+eventColumns+` FROM events WHERE room_id = $1 AND relates_to = $2
		AND ($3 = '' OR rel_type = $3) AND ($4 = '' OR type = $4) AND ($5 = 0 OR stream_pos < $5) AND NOT outlier AND NOT soft_failed
		ORDER BY stream_pos DESC LIMIT $6`, roomID, eventID, relType, evType, from, limit))
}

// ThreadRoots lists thread roots of a room (events with m.thread relations), newest activity first.
func ThreadRoots(ctx context.Context, q pgdb.DBTX, roomID string, from int64, limit int) ([]EventRow, error) {
	return collectEvents(q.Query(ctx, `SELECT `+eventColumns+` FROM events WHERE event_id IN (
			SELECT relates_to FROM events WHERE room_id = $1 AND rel_type = 'm.thread')
		AND ($2 = 0 OR stream_pos < $2) ORDER BY stream_pos DESC LIMIT $3`, roomID, from, limit))
}

// Redact replaces an event's JSON with its redacted form and records the redaction.
func Redact(ctx context.Context, q pgdb.DBTX, eventID string, redactedJSON []byte, redactionEventID string) error {
	_, err := q.Exec(ctx, `UPDATE events SET json = $2, redacted_because = $3 WHERE event_id = $1`, eventID, string(redactedJSON), redactionEventID)
	return err
}

// StateKeyTuple names a piece of room state.
type StateKeyTuple struct {
	Type     string
	StateKey string
}

// StateEntry is one piece of current state.
type StateEntry struct {
	StateKeyTuple
	EventID    string
	Membership string
	StreamPos  int64
}

// CurrentState returns a room's current state event IDs, filtered to tuples when given.
func CurrentState(ctx context.Context, q pgdb.DBTX, roomID string, tuples []StateKeyTuple) ([]StateEntry, error) {
	var rows pgx.Rows
	var err error
	if tuples == nil {
		rows, err = q.Query(ctx, `SELECT type, state_key, event_id, coalesce(membership, ''), stream_pos FROM current_state WHERE room_id = $1`, roomID)
	} else {
		types := make([]string, len(tuples))
		keys := make([]string, len(tuples))
		for i, t := range tuples {
			types[i], keys[i] = t.Type, t.StateKey
		}
		rows, err = q.Query(ctx, `SELECT c.type, c.state_key, c.event_id, coalesce(c.membership, ''), c.stream_pos FROM current_state c
			JOIN unnest($2::text[], $3::text[]) AS t(type, state_key) ON c.type = t.type AND c.state_key = t.state_key
			WHERE c.room_id = $1`, roomID, types, keys)
	}
	if err != nil {
		return nil, fmt.Errorf("current state of %s: %w", roomID, err)
	}
	defer rows.Close()
	var out []StateEntry
	for rows.Next() {
		var s StateEntry
		if err := rows.Scan(&s.Type, &s.StateKey, &s.EventID, &s.Membership, &s.StreamPos); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// CurrentStateEvents returns the events of a room's current state, filtered to tuples when given.
func CurrentStateEvents(ctx context.Context, q pgdb.DBTX, roomID string, tuples []StateKeyTuple) ([]EventRow, error) {
	entries, err := CurrentState(ctx, q, roomID, tuples)
	if err != nil {
		return nil, err
	}
	ids := make([]string, len(entries))
	for i, e := range entries {
		ids[i] = e.EventID
	}
	return EventsByID(ctx, q, ids)
}

// SetCurrentState records ev as the current state for its tuple.
func SetCurrentState(ctx context.Context, q pgdb.DBTX, roomID string, t StateKeyTuple, eventID, membership string, pos int64) error {
	_, err := q.Exec(ctx, `INSERT INTO current_state (room_id, type, state_key, event_id, membership, stream_pos)
		VALUES ($1, $2, $3, $4, nullif($5, ''), $6)
		ON CONFLICT (room_id, type, state_key) DO UPDATE SET event_id = $4, membership = nullif($5, ''), stream_pos = $6`,
		roomID, t.Type, t.StateKey, eventID, membership, pos)
	return err
}

// InsertStateGroup stores the state after applying delta to parent. Every 64th link stores the
// whole state, bounding the chain a lookup walks.
func InsertStateGroup(ctx context.Context, q pgdb.DBTX, roomID string, parent int64, delta map[StateKeyTuple]string) (int64, error) {
	chain := 0
	if parent != 0 {
		if err := q.QueryRow(ctx, `SELECT chain_len FROM state_groups WHERE id = $1`, parent).Scan(&chain); err != nil {
			return 0, fmt.Errorf("read state group %d: %w", parent, err)
		}
		chain++
		if chain >= 64 {
			full, err := StateGroup(ctx, q, parent)
			if err != nil {
				return 0, err
			}
			for k, v := range delta {
				full[k] = v
			}
			delta, parent, chain = full, 0, 0
		}
	}
	entries := make([][3]string, 0, len(delta))
	for k, v := range delta {
		entries = append(entries, [3]string{k.Type, k.StateKey, v})
	}
	b, err := json.Marshal(entries)
	if err != nil {
		return 0, err
	}
	var parentArg *int64
	if parent != 0 {
		parentArg = &parent
	}
	var id int64
	err = q.QueryRow(ctx, `INSERT INTO state_groups (room_id, parent_id, chain_len, delta) VALUES ($1, $2, $3, $4) RETURNING id`,
		roomID, parentArg, chain, b).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("insert state group: %w", err)
	}
	return id, nil
}

// StateGroup returns the full state of a group.
func StateGroup(ctx context.Context, q pgdb.DBTX, id int64) (map[StateKeyTuple]string, error) {
	rows, err := q.Query(ctx, `WITH RECURSIVE chain(id, parent_id, delta, n) AS (
			SELECT id, parent_id, delta, 0 FROM state_groups WHERE id = $1
			UNION ALL
			SELECT g.id, g.parent_id, g.delta, c.n + 1 FROM state_groups g JOIN chain c ON g.id = c.parent_id)
		SELECT delta FROM chain ORDER BY n DESC`, id)
	if err != nil {
		return nil, fmt.Errorf("read state group %d: %w", id, err)
	}
	defer rows.Close()
	state := map[StateKeyTuple]string{}
	for rows.Next() {
		var b []byte
		if err := rows.Scan(&b); err != nil {
			return nil, err
		}
		var entries [][3]string
		if err := json.Unmarshal(b, &entries); err != nil {
			return nil, fmt.Errorf("decode state group: %w", err)
		}
		for _, e := range entries {
			state[StateKeyTuple{e[0], e[1]}] = e[2]
		}
	}
	return state, rows.Err()
}

// Memberships.

// InsertMembership records a membership change of a user.
func InsertMembership(ctx context.Context, q pgdb.DBTX, pos int64, roomID, userID, membership, eventID string) error {
	_, err := q.Exec(ctx, `INSERT INTO memberships (stream_pos, room_id, user_id, membership, event_id) VALUES ($1, $2, $3, $4, $5)`,
		pos, roomID, userID, membership, eventID)
	return err
}

// UserRoom is a room a user has a membership in, now.
type UserRoom struct {
	RoomID     string
	Membership string
	EventID    string
	StreamPos  int64
}

// UserRooms returns the user's current membership in every room where they have one.
func UserRooms(ctx context.Context, q pgdb.DBTX, userID string) ([]UserRoom, error) {
	rows, err := q.Query(ctx, `SELECT room_id, membership, event_id, stream_pos FROM current_state
		WHERE type = 'm.room.member' AND state_key = $1`, userID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []UserRoom
	for rows.Next() {
		var r UserRoom
		if err := rows.Scan(&r.RoomID, &r.Membership, &r.EventID, &r.StreamPos); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// MembershipAt returns a user's membership in a room as of stream position pos and the
// position it took effect ("" if none).
func MembershipAt(ctx context.Context, q pgdb.DBTX, roomID, userID string, pos int64) (string, int64, error) {
	var m string
	var at int64
	err := q.QueryRow(ctx, `SELECT membership, stream_pos FROM memberships WHERE room_id = $1 AND user_id = $2 AND stream_pos <= $3
		ORDER BY stream_pos DESC LIMIT 1`, roomID, userID, pos).Scan(&m, &at)
	if err == pgx.ErrNoRows {
		return "", 0, nil
	}
	return m, at, err
}

// RoomMembers returns the user IDs with the given membership in a room ("" for any).
func RoomMembers(ctx context.Context, q pgdb.DBTX, roomID, membership string) ([]string, error) {
	rows, err := q.Query(ctx, `SELECT state_key FROM current_state WHERE room_id = $1 AND type = 'm.room.member'
		AND ($2 = '' OR membership = $2) ORDER BY state_key`, roomID, membership)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// SharedRoomUsers returns every user sharing a joined room with userID (userID included).
func SharedRoomUsers(ctx context.Context, q pgdb.DBTX, userID string) ([]string, error) {
	rows, err := q.Query(ctx, `SELECT DISTINCT o.state_key FROM current_state m JOIN current_state o
		ON o.room_id = m.room_id AND o.type = 'm.room.member' AND o.membership = 'join'
		WHERE m.type = 'm.room.member' AND m.state_key = $1 AND m.membership = 'join'`, userID)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// ForgetRoom hides a left room from the user.
func ForgetRoom(ctx context.Context, q pgdb.DBTX, userID, roomID string) error {
	_, err := q.Exec(ctx, `INSERT INTO forgotten_rooms (user_id, room_id) VALUES ($1, $2) ON CONFLICT DO NOTHING`, userID, roomID)
	return err
}

// UnforgetRoom undoes ForgetRoom when the user joins again.
func UnforgetRoom(ctx context.Context, q pgdb.DBTX, userID, roomID string) error {
	_, err := q.Exec(ctx, `DELETE FROM forgotten_rooms WHERE user_id = $1 AND room_id = $2`, userID, roomID)
	return err
}

// ForgottenRooms lists rooms the user forgot.
func ForgottenRooms(ctx context.Context, q pgdb.DBTX, userID string) (map[string]bool, error) {
	rows, err := q.Query(ctx, `SELECT room_id FROM forgotten_rooms WHERE user_id = $1`, userID)
	if err != nil {
		return nil, err
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	out := make(map[string]bool, len(ids))
	for _, id := range ids {
		out[id] = true
	}
	return out, err
}

// JoinsSince lists users who joined a room in (from, to].
func JoinsSince(ctx context.Context, q pgdb.DBTX, roomID string, from, to int64) ([]string, error) {
	rows, err := q.Query(ctx, `SELECT DISTINCT user_id FROM memberships WHERE room_id = $1 AND membership = 'join'
		AND stream_pos > $2 AND stream_pos <= $3`, roomID, from, to)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// LeftSince lists users who may have stopped sharing a room with userID in (from, to]: those
// who left a room userID has been in, and the members of rooms userID left.
func LeftSince(ctx context.Context, q pgdb.DBTX, userID string, from, to int64) ([]string, error) {
	rows, err := q.Query(ctx, `SELECT user_id FROM memberships WHERE stream_pos > $1 AND stream_pos <= $2
			AND membership IN ('leave', 'ban') AND user_id <> $3
			AND room_id IN (SELECT room_id FROM memberships WHERE user_id = $3)
		UNION
		SELECT c.state_key FROM current_state c WHERE c.type = 'm.room.member' AND c.membership = 'join' AND c.state_key <> $3
			AND c.room_id IN (SELECT room_id FROM memberships WHERE user_id = $3 AND membership IN ('leave', 'ban')
				AND stream_pos > $1 AND stream_pos <= $2)`, from, to, userID)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// SetStateAfter records the state group after an event, once it is known.
func SetStateAfter(ctx context.Context, q pgdb.DBTX, eventID string, group int64) error {
	_, err := q.Exec(ctx, `UPDATE events SET state_after = $2 WHERE event_id = $1`, eventID, nullableID(group))
	return err
}

// DeleteCurrentState removes a tuple from a room's current state (state resolution can drop one).
func DeleteCurrentState(ctx context.Context, q pgdb.DBTX, roomID string, t StateKeyTuple) error {
	_, err := q.Exec(ctx, `DELETE FROM current_state WHERE room_id = $1 AND type = $2 AND state_key = $3`, roomID, t.Type, t.StateKey)
	return err
}
