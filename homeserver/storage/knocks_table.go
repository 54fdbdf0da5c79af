package storage

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/atoll-matrix/atoll/internal/pgdb"
)

// Knocks of local users on rooms of other servers share remote_invites (membership 'knock'):
// like a remote invite, the room is unknown here, /sync lists the knock while no newer
// membership exists in a stored room, an invite received afterwards replaces it, and a
// withdrawal moves it to 'leave'.

// RemoteKnock is a local user's knock on a room of another server, accepted there.
type RemoteKnock struct {
	RoomID      string
	UserID      string
	EventID     string
	Origin      string // the server that accepted the knock: a withdrawal goes through it
	RoomVersion string
	EventJSON   []byte
	KnockState  json.RawMessage // knock_room_state, as clients see it
}

const (
	upsertRemoteKnockSQL = `INSERT INTO remote_invites (room_id, user_id, event_id, sender, origin, room_version, event_json,
		invite_state, membership, stream_pos) VALUES ($1, $2, $3, $2, $4, $5, $6, $7, 'knock', $8)
		ON CONFLICT (room_id, user_id) DO UPDATE SET event_id = $3, sender = $2, origin = $4, room_version = $5,
		event_json = $6, invite_state = $7, membership = 'knock', leave_event_id = NULL, leave_json = NULL, leave_ts = NULL,
		stream_pos = $8`

	selectPendingRemoteKnockSQL = `SELECT ` + remoteInviteColumns + ` FROM remote_invites ri
		WHERE ri.room_id = $1 AND ri.user_id = $2 AND ri.membership = 'knock' AND ` + liveRemoteInviteCond

	withdrawRemoteKnockSQL = `UPDATE remote_invites SET membership = 'leave', leave_event_id = $3, leave_json = $4, leave_ts = $5,
		stream_pos = $6 WHERE room_id = $1 AND user_id = $2 AND membership = 'knock'`
)

// PutRemoteKnock records (or renews) a knock at a new stream position, so that /sync picks
// it up.
func PutRemoteKnock(ctx context.Context, q pgdb.DBTX, k RemoteKnock) (int64, error) {
	pos, err := NextStreamPos(ctx, q)
	if err != nil {
		return 0, err
	}
	if _, err := q.Exec(ctx, upsertRemoteKnockSQL, k.RoomID, k.UserID, k.EventID, k.Origin, k.RoomVersion,
		string(k.EventJSON), []byte(k.KnockState), pos); err != nil {
		return 0, fmt.Errorf("put remote knock %s for %s: %w", k.RoomID, k.UserID, err)
	}
	return pos, nil
}

// PendingRemoteKnock returns the user's live knock on a remote room (as a RemoteInvite row
// with membership "knock"), or ErrNotFound.
func PendingRemoteKnock(ctx context.Context, q pgdb.DBTX, roomID, userID string) (RemoteInvite, error) {
	rows, err := q.Query(ctx, selectPendingRemoteKnockSQL, roomID, userID)
	if err != nil {
		return RemoteInvite{}, fmt.Errorf("remote knock %s for %s: %w", roomID, userID, err)
	}
	k, err := pgx.CollectExactlyOneRow(rows, scanRemoteInvite)
	return k, noRows(err)
}

// WithdrawRemoteKnock marks a pending knock withdrawn at a new stream position; leave is the
// leave event sent to the room, nil if none could be made. It returns ErrNotFound when there
// is no pending knock.
func WithdrawRemoteKnock(ctx context.Context, q pgdb.DBTX, roomID, userID string, leave *RemoteLeave) (int64, error) {
	return endRemoteMembership(ctx, q, withdrawRemoteKnockSQL, "withdraw remote knock", roomID, userID, leave)
}
