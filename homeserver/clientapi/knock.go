package clientapi

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/atoll-matrix/atoll/homeserver/storage"
	"github.com/atoll-matrix/atoll/internal/mxhttp"
	"github.com/atoll-matrix/atoll/internal/pgdb"
)

// knockRoom serves POST /knock/{roomIDOrAlias}: through the room engine when a local user is
// in the room, else through another server (make_knock, send_knock).
func (s *Server) knockRoom(w http.ResponseWriter, r *http.Request, sess *Session) error {
	target := r.PathValue("roomIDOrAlias")
	var req struct {
		Reason string `json:"reason"`
	}
	if err := mxhttp.DecodeJSON(r, &req); err != nil {
		return err
	}
	via := append(r.URL.Query()["server_name"], r.URL.Query()["via"]...)
	rd := s.remoteDirectory()
	var roomID string
	var err error
	if strings.HasPrefix(target, "#") && !strings.HasSuffix(target, ":"+string(sess.T.ServerName)) && s.opts.Remote != nil {
		var servers []string
		roomID, servers, err = s.opts.Remote.ResolveAlias(r.Context(), sess.T, target)
		if err != nil {
			return mxhttp.NotFound("room alias %s not found", truncate(target, 80))
		}
		via = append(via, servers...)
	} else if roomID, err = s.resolveRoom(r.Context(), sess.T, target); err != nil {
		return err
	}
	local, _, err := s.localJoinPossible(r.Context(), sess, roomID)
	if err != nil {
		return err
	}
	if local || rd == nil {
		if _, err := s.sendMembership(r.Context(), sess.T, roomID, sess.UserID, sess.UserID, spec.Knock, req.Reason, nil); err != nil {
			return err
		}
		return mxhttp.JSON(w, http.StatusOK, map[string]string{"room_id": roomID})
	}
	if _, srv, ok := strings.Cut(roomID, ":"); ok {
		via = append(via, srv)
	}
	if err := rd.Knock(r.Context(), sess.T, sess.UserID, roomID, via, req.Reason); err != nil {
		var me *mxhttp.Error
		if errors.As(err, &me) {
			return err
		}
		s.log.InfoContext(r.Context(), "remote knock failed", "tenant", sess.T.TenantID, "err", err)
		return mxhttp.NotFound("could not knock on the room through any server: %s", truncate(err.Error(), 200))
	}
	return mxhttp.JSON(w, http.StatusOK, map[string]string{"room_id": roomID})
}

// withdrawRemoteKnock handles a leave of a room the user knocked on through another server;
// it reports whether there was such a knock.
func (s *Server) withdrawRemoteKnock(ctx context.Context, sess *Session, roomID string) (bool, error) {
	rd := s.remoteDirectory()
	if rd == nil {
		return false, nil
	}
	err := sess.T.Store.Tx(ctx, func(q pgdb.DBTX) error {
		_, err := storage.PendingRemoteKnock(ctx, q, roomID, sess.UserID)
		return err
	})
	if errors.Is(err, storage.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return true, err
	}
	return true, rd.WithdrawKnock(ctx, sess.T, roomID, sess.UserID)
}

// remotePublicRooms serves publicRooms?server= for another server's directory.
func (s *Server) remotePublicRooms(w http.ResponseWriter, r *http.Request, t *Tenant, server string, pq PublicRoomsQuery) error {
	rd := s.remoteDirectory()
	if rd == nil {
		return mxhttp.NotFound("the directory of %s cannot be reached", truncate(server, 80))
	}
	page, err := rd.PublicRooms(r.Context(), t, server, pq)
	if err != nil {
		s.log.InfoContext(r.Context(), "remote public rooms failed", "tenant", t.TenantID, "err", err)
		return &mxhttp.Error{Status: http.StatusBadGateway, Body: spec.Unknown("the server's directory could not be reached"), Err: err}
	}
	if page.Chunk == nil {
		page.Chunk = []PublicRoom{}
	}
	return mxhttp.JSON(w, http.StatusOK, page)
}

// ClosestEvent finds the room's event nearest to ts: the first at or after it (dir "f") or
// the last at or before it (dir "b"), among the events this tenant placed in the room's
// timeline. ok is false when there is none.
func ClosestEvent(ctx context.Context, t *Tenant, roomID string, ts int64, dir string) (eventID string, eventTS int64, ok bool, err error) {
	query := `SELECT event_id, origin_server_ts FROM events WHERE room_id = $1 AND NOT outlier AND origin_server_ts >= $2
		ORDER BY origin_server_ts, stream_pos LIMIT 1`
	if dir == "b" {
		query = `SELECT event_id, origin_server_ts FROM events WHERE room_id = $1 AND NOT outlier AND origin_server_ts <= $2
		ORDER BY origin_server_ts DESC, stream_pos DESC LIMIT 1`
	}
	err = t.Store.Tx(ctx, func(q pgdb.DBTX) error {
		rows, err := q.Query(ctx, query, roomID, ts)
		if err != nil {
			return err
		}
		defer rows.Close()
		if rows.Next() {
			ok = true
			if err := rows.Scan(&eventID, &eventTS); err != nil {
				return err
			}
		}
		return rows.Err()
	})
	return eventID, eventTS, ok, err
}

// ParseTimestampQuery reads the ts and dir parameters of timestamp_to_event.
func ParseTimestampQuery(r *http.Request) (int64, string, error) {
	tsStr, dir := r.URL.Query().Get("ts"), r.URL.Query().Get("dir")
	if tsStr == "" || dir == "" {
		return 0, "", mxhttp.MissingParam("ts and dir are required")
	}
	ts, err := strconv.ParseInt(tsStr, 10, 64)
	if err != nil || ts < 0 {
		return 0, "", mxhttp.InvalidParam("ts must be a timestamp in milliseconds")
	}
	if dir != "f" && dir != "b" {
		return 0, "", mxhttp.InvalidParam("dir must be f or b")
	}
	return ts, dir, nil
}

// timestampToEvent serves GET /rooms/{roomID}/timestamp_to_event. When this tenant knows no
// event in that direction (the answer lies outside the history it holds), the other servers
// in the room are asked.
func (s *Server) timestampToEvent(w http.ResponseWriter, r *http.Request, sess *Session) error {
	roomID, err := pathRoomID(r)
	if err != nil {
		return err
	}
	ts, dir, err := ParseTimestampQuery(r)
	if err != nil {
		return err
	}
	ctx := r.Context()
	var servers []string
	err = sess.T.Store.Tx(ctx, func(q pgdb.DBTX) error {
		if _, err := roomAccess(ctx, q, roomID, sess.UserID); err != nil {
			return err
		}
		rows, err := q.Query(ctx, `SELECT DISTINCT substr(state_key, strpos(state_key, ':') + 1) FROM current_state
			WHERE room_id = $1 AND type = 'm.room.member' AND membership = 'join'`, roomID)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var srv string
			if err := rows.Scan(&srv); err != nil {
				return err
			}
			if srv != string(sess.T.ServerName) {
				servers = append(servers, srv)
			}
		}
		return rows.Err()
	})
	if err != nil {
		return err
	}
	id, evTS, ok, err := ClosestEvent(ctx, sess.T, roomID, ts, dir)
	if err != nil {
		return err
	}
	if !ok && len(servers) > 0 {
		if rd := s.remoteDirectory(); rd != nil {
			if rid, rts, rerr := rd.TimestampToEvent(ctx, sess.T, roomID, servers, ts, dir); rerr == nil {
				id, evTS, ok = rid, rts, true
			} else {
				s.log.InfoContext(ctx, "remote timestamp_to_event failed", "tenant", sess.T.TenantID, "err", rerr)
			}
		}
	}
	if !ok {
		return mxhttp.NotFound("no event found in that direction")
	}
	return mxhttp.JSON(w, http.StatusOK, map[string]any{"event_id": id, "origin_server_ts": evTS})
}

// knockedRoom is a room of /sync's rooms.knock section.
type knockedRoom struct {
	KnockState eventsBlock `json:"knock_state"`
}
