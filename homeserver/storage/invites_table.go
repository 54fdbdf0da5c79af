package storage

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/atoll-matrix/atoll/internal/pgdb"
)

// RemoteInvite is an invite of a local user to a room on another server, received through
// the federation invite API (the room itself is not stored here).
type RemoteInvite struct {
	RoomID      string
	UserID      string
	EventID     string
	Sender      string
	Origin      string // the inviting server: joins and rejections go through it
	RoomVersion string
	EventJSON   []byte // the invite, signed by both servers
	InviteState json.RawMessage
	Membership  string       // "invite", or "leave" once rejected
	Leave       *RemoteLeave // the rejection sent to the inviting server, if it could be made
	StreamPos   int64
}

// RemoteLeave is the leave event that rejected a remote invite.
type RemoteLeave struct {
	EventID        string
	JSON           []byte
	OriginServerTS int64
}

const (
	upsertRemoteInviteSQL = `INSERT INTO remote_invites (room_id, user_id, event_id, sender, origin, room_version, event_json,
		invite_state, membership, stream_pos) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'invite', $9)
		ON CONFLICT (room_id, user_id) DO UPDATE SET event_id = $3, sender = $4, origin = $5, room_version = $6,
		event_json = $7, invite_state = $8, membership = 'invite', leave_event_id = NULL, leave_json = NULL, leave_ts = NULL,
		stream_pos = $9`

	remoteInviteColumns = `ri.room_id, ri.user_id, ri.event_id, ri.sender, ri.origin, ri.room_version, ri.event_json,
		ri.invite_state, ri.membership, coalesce(ri.leave_event_id, ''), coalesce(ri.leave_json, ''), coalesce(ri.leave_ts, 0),
		ri.stream_pos`

	// An invite (or its rejection) is live while the room's current state holds no newer
	// membership of the user: joining, or an invite that also arrived as a room event,
	// supersedes it.
	liveRemoteInviteCond = `NOT EXISTS (SELECT 1 FROM current_state cs WHERE cs.room_id = ri.room_id
		AND cs.type = 'm.room.member' AND cs.state_key = ri.user_id AND cs.stream_pos > ri.stream_pos)`

	selectLiveRemoteInvitesSQL = `SELECT ` + remoteInviteColumns + ` FROM remote_invites ri WHERE ri.user_id = $1 AND ` + liveRemoteInviteCond

	selectPendingRemoteInviteSQL = `SELECT ` + remoteInviteColumns + ` FROM remote_invites ri
		WHERE ri.room_id = $1 AND ri.user_id = $2 AND ri.membership = 'invite' AND ` + liveRemoteInviteCond

	rejectRemoteInviteSQL = `UPDATE remote_invites SET membership = 'leave', leave_event_id = $3, leave_json = $4, leave_ts = $5,
		stream_pos = $6 WHERE room_id = $1 AND user_id = $2 AND membership = 'invite'`
)

// PutRemoteInvite records (or renews) an invite at a new stream position, so that /sync
// picks it up.
func PutRemoteInvite(ctx context.Context, q pgdb.DBTX, inv RemoteInvite) (int64, error) {
	pos, err := NextStreamPos(ctx, q)
	if err != nil {
		return 0, err
	}
	if _, err := q.Exec(ctx, upsertRemoteInviteSQL, inv.RoomID, inv.UserID, inv.EventID, inv.Sender, inv.Origin, inv.RoomVersion,
		string(inv.EventJSON), []byte(inv.InviteState), pos); err != nil {
		return 0, fmt.Errorf("put remote invite %s for %s: %w", inv.RoomID, inv.UserID, err)
	}
	return pos, nil
}

// LiveRemoteInvites lists a user's remote invites and rejections that no newer membership in
// a stored room supersedes.
func LiveRemoteInvites(ctx context.Context, q pgdb.DBTX, userID string) ([]RemoteInvite, error) {
	rows, err := q.Query(ctx, selectLiveRemoteInvitesSQL, userID)
	if err != nil {
		return nil, fmt.Errorf("remote invites of %s: %w", userID, err)
	}
	return pgx.CollectRows(rows, scanRemoteInvite)
}

// PendingRemoteInvite returns the user's live, unanswered remote invite to a room, or
// ErrNotFound.
func PendingRemoteInvite(ctx context.Context, q pgdb.DBTX, roomID, userID string) (RemoteInvite, error) {
	rows, err := q.Query(ctx, selectPendingRemoteInviteSQL, roomID, userID)
	if err != nil {
		return RemoteInvite{}, fmt.Errorf("remote invite %s for %s: %w", roomID, userID, err)
	}
	inv, err := pgx.CollectExactlyOneRow(rows, scanRemoteInvite)
	return inv, noRows(err)
}

// RejectRemoteInvite marks a pending invite rejected at a new stream position; leave is the
// leave event sent to the inviting server, nil if none could be made. It returns ErrNotFound
// when there is no pending invite.
func RejectRemoteInvite(ctx context.Context, q pgdb.DBTX, roomID, userID string, leave *RemoteLeave) (int64, error) {
	return endRemoteMembership(ctx, q, rejectRemoteInviteSQL, "reject remote invite", roomID, userID, leave)
}

// endRemoteMembership ends a pending remote invite or knock with sql at a new stream
// position, recording the leave event when there is one.
func endRemoteMembership(ctx context.Context, q pgdb.DBTX, sql, what, roomID, userID string, leave *RemoteLeave) (int64, error) {
	pos, err := NextStreamPos(ctx, q)
	if err != nil {
		return 0, err
	}
	var id, js *string
	var ts *int64
	if leave != nil {
		j := string(leave.JSON)
		id, js, ts = &leave.EventID, &j, &leave.OriginServerTS
	}
	tag, err := q.Exec(ctx, sql, roomID, userID, id, js, ts, pos)
	if err != nil {
		return 0, fmt.Errorf("%s %s for %s: %w", what, roomID, userID, err)
	}
	if tag.RowsAffected() == 0 {
		return 0, ErrNotFound
	}
	return pos, nil
}

func scanRemoteInvite(row pgx.CollectableRow) (RemoteInvite, error) {
	var inv RemoteInvite
	var event, leaveID, leaveJSON string
	var leaveTS int64
	var state []byte
	err := row.Scan(&inv.RoomID, &inv.UserID, &inv.EventID, &inv.Sender, &inv.Origin, &inv.RoomVersion, &event, &state,
		&inv.Membership, &leaveID, &leaveJSON, &leaveTS, &inv.StreamPos)
	inv.EventJSON, inv.InviteState = []byte(event), state
	if leaveID != "" {
		inv.Leave = &RemoteLeave{EventID: leaveID, JSON: []byte(leaveJSON), OriginServerTS: leaveTS}
	}
	return inv, err
}
