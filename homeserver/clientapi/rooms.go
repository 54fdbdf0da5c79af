package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/atoll-matrix/atoll/homeserver/rooms"
	"github.com/atoll-matrix/atoll/homeserver/storage"
	"github.com/atoll-matrix/atoll/internal/mxhttp"
	"github.com/atoll-matrix/atoll/internal/pgdb"
)

// roomErr maps the room engine's errors to Matrix errors.
func roomErr(err error) error {
	var fe *rooms.ForbiddenError
	var be *rooms.BadEventError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &fe):
		return mxhttp.Forbidden("%s", fe.Reason)
	case errors.As(err, &be):
		return mxhttp.BadJSON("%s", be.Reason)
	case errors.Is(err, rooms.ErrRoomNotFound):
		return mxhttp.NotFound("unknown room")
	case errors.Is(err, rooms.ErrEventNotFound):
		return mxhttp.NotFound("unknown event")
	case errors.Is(err, rooms.ErrUnsupportedVersion):
		return mxhttp.Errorf(http.StatusBadRequest, spec.UnsupportedRoomVersion("unsupported room version"))
	case errors.Is(err, rooms.ErrAliasInUse):
		return mxhttp.Errorf(http.StatusBadRequest, spec.RoomInUse("room alias already taken"))
	}
	return err
}

// pathRoomID parses the {roomID} path value.
func pathRoomID(r *http.Request) (string, error) {
	id := r.PathValue("roomID")
	if _, err := spec.NewRoomID(id); err != nil || len(id) > 255 {
		return "", mxhttp.InvalidParam("invalid room ID %q", truncate(id, 80))
	}
	return id, nil
}

func pathUserID(r *http.Request, name string) (*spec.UserID, error) {
	u, err := spec.NewUserID(r.PathValue(name), true)
	if err != nil {
		return nil, mxhttp.InvalidParam("invalid user ID %q", truncate(r.PathValue(name), 80))
	}
	return u, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func (s *Server) send(ctx context.Context, t *Tenant, req rooms.Request) (string, error) {
	id, err := s.engine.Send(ctx, t.Host, req)
	return id, roomErr(err)
}

// sendMembership changes target's membership, adding the target's profile to joins.
func (s *Server) sendMembership(ctx context.Context, t *Tenant, roomID, sender, target, membership, reason string, extra map[string]any) (string, error) {
	content := map[string]any{"membership": membership}
	for k, v := range extra {
		content[k] = v
	}
	if reason != "" {
		content["reason"] = reason
	}
	if membership == spec.Join || membership == spec.Invite {
		if lp, ok := localpartOf(target, t.ServerName); ok {
			_ = t.Store.Tx(ctx, func(q pgdb.DBTX) error {
				u, err := storage.GetUser(ctx, q, lp)
				if err == nil {
					if u.DisplayName != "" {
						content["displayname"] = u.DisplayName
					}
					if u.AvatarURL != "" {
						content["avatar_url"] = u.AvatarURL
					}
				}
				return nil
			})
		}
	}
	b, _ := json.Marshal(content)
	return s.send(ctx, t, rooms.Request{RoomID: roomID, Sender: sender, Type: spec.MRoomMember, StateKey: &target, Content: b})
}

type createRoomRequest struct {
	Visibility                string                    `json:"visibility"`
	RoomAliasName             string                    `json:"room_alias_name"`
	Name                      string                    `json:"name"`
	Topic                     string                    `json:"topic"`
	Invite                    []string                  `json:"invite"`
	RoomVersion               string                    `json:"room_version"`
	CreationContent           json.RawMessage           `json:"creation_content"`
	InitialState              []rooms.InitialStateEvent `json:"initial_state"`
	Preset                    string                    `json:"preset"`
	IsDirect                  bool                      `json:"is_direct"`
	PowerLevelContentOverride json.RawMessage           `json:"power_level_content_override"`
}

// DefaultRoomVersion is used when neither the request nor the tenant names one.
const DefaultRoomVersion = gomatrixserverlib.RoomVersionV10

func (s *Server) createRoom(w http.ResponseWriter, r *http.Request, sess *Session) error {
	var req createRoomRequest
	if err := mxhttp.DecodeJSON(r, &req); err != nil {
		return err
	}
	version := gomatrixserverlib.RoomVersion(req.RoomVersion)
	if version == "" {
		version = gomatrixserverlib.RoomVersion(sess.T.Settings.DefaultRoomVersion)
	}
	if version == "" {
		version = DefaultRoomVersion
	}
	if _, err := gomatrixserverlib.GetRoomVersion(version); err != nil {
		return mxhttp.Errorf(http.StatusBadRequest, spec.UnsupportedRoomVersion(fmt.Sprintf("room version %q is not supported", truncate(req.RoomVersion, 40))))
	}
	switch req.Visibility {
	case "", "private", "public":
	default:
		return mxhttp.InvalidParam("visibility must be public or private")
	}
	for _, inv := range req.Invite {
		if _, err := spec.NewUserID(inv, true); err != nil {
			return mxhttp.InvalidParam("invalid user ID in invite: %q", truncate(inv, 80))
		}
	}
	for _, st := range req.InitialState {
		if st.Type == "" {
			return mxhttp.BadJSON("initial_state events need a type")
		}
	}
	alias := ""
	if req.RoomAliasName != "" {
		if strings.ContainsAny(req.RoomAliasName, ":# \t\n") {
			return mxhttp.Errorf(http.StatusBadRequest, spec.InvalidParam("room_alias_name must be the local part only"))
		}
		alias = "#" + req.RoomAliasName + ":" + string(sess.T.ServerName)
	}
	// Users of other servers are invited through their servers once the room exists.
	var localInvites, remoteInvites []string
	for _, inv := range req.Invite {
		if strings.HasSuffix(inv, ":"+string(sess.T.ServerName)) || s.opts.Remote == nil {
			localInvites = append(localInvites, inv)
		} else {
			remoteInvites = append(remoteInvites, inv)
		}
	}
	roomID, err := s.engine.CreateRoom(r.Context(), sess.T.Host, rooms.CreateOptions{
		Creator: sess.UserID, Version: version, Preset: req.Preset, Visibility: req.Visibility,
		Name: req.Name, Topic: req.Topic, Alias: alias, Invite: localInvites, RemoteInvite: remoteInvites, IsDirect: req.IsDirect,
		InitialState: req.InitialState, CreationContent: req.CreationContent, PowerLevelContentOverride: req.PowerLevelContentOverride,
	})
	if err != nil {
		return roomErr(err)
	}
	for _, inv := range remoteInvites {
		content := map[string]any{"membership": spec.Invite}
		if req.IsDirect {
			content["is_direct"] = true
		}
		if err := s.opts.Remote.Invite(r.Context(), sess.T, roomID, sess.UserID, inv, content); err != nil {
			// The room exists; one unreachable invitee does not undo it (as other servers do).
			s.log.InfoContext(r.Context(), "invite at room creation failed", "tenant", sess.T.TenantID, "err", err)
		}
	}
	return mxhttp.JSON(w, http.StatusOK, map[string]string{"room_id": roomID})
}

// resolveRoom accepts a room ID or a local alias.
func (s *Server) resolveRoom(ctx context.Context, t *Tenant, idOrAlias string) (string, error) {
	if strings.HasPrefix(idOrAlias, "!") {
		if _, err := spec.NewRoomID(idOrAlias); err != nil {
			return "", mxhttp.InvalidParam("invalid room ID")
		}
		return idOrAlias, nil
	}
	if !strings.HasPrefix(idOrAlias, "#") || !strings.Contains(idOrAlias, ":") {
		return "", mxhttp.InvalidParam("expected a room ID or alias")
	}
	var roomID string
	err := t.Store.Tx(ctx, func(q pgdb.DBTX) error {
		var err error
		roomID, _, err = storage.AliasRoom(ctx, q, idOrAlias)
		return err
	})
	if errors.Is(err, storage.ErrNotFound) {
		return "", mxhttp.NotFound("room alias %s not found", truncate(idOrAlias, 80))
	}
	return roomID, err
}

func (s *Server) joinRoom(w http.ResponseWriter, r *http.Request, sess *Session) error {
	target := r.PathValue("roomIDOrAlias")
	if target == "" {
		target = r.PathValue("roomID")
	}
	var req struct {
		Reason string `json:"reason"`
	}
	if err := mxhttp.DecodeJSON(r, &req); err != nil {
		return err
	}
	via := append(r.URL.Query()["server_name"], r.URL.Query()["via"]...)
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
	local, inviters, err := s.localJoinPossible(r.Context(), sess, roomID)
	if err != nil {
		return err
	}
	if local || s.opts.Remote == nil {
		if _, err := s.sendMembership(r.Context(), sess.T, roomID, sess.UserID, sess.UserID, spec.Join, req.Reason, nil); err != nil {
			return err
		}
		return mxhttp.JSON(w, http.StatusOK, map[string]string{"room_id": roomID})
	}
	content := map[string]any{"membership": spec.Join}
	if req.Reason != "" {
		content["reason"] = req.Reason
	}
	_ = sess.T.Store.Tx(r.Context(), func(q pgdb.DBTX) error {
		if u, err := storage.GetUser(r.Context(), q, sess.Local); err == nil {
			if u.DisplayName != "" {
				content["displayname"] = u.DisplayName
			}
			if u.AvatarURL != "" {
				content["avatar_url"] = u.AvatarURL
			}
		}
		return nil
	})
	if err := s.opts.Remote.Join(r.Context(), sess.T, sess.UserID, roomID, append(via, inviters...), content); err != nil {
		s.log.InfoContext(r.Context(), "remote join failed", "tenant", sess.T.TenantID, "err", err)
		return mxhttp.NotFound("could not join the room through any server: %s", truncate(err.Error(), 200))
	}
	return mxhttp.JSON(w, http.StatusOK, map[string]string{"room_id": roomID})
}

// localJoinPossible reports whether this tenant can build the join itself (a local user is
// joined to the room); otherwise it returns servers to join through (who invited us).
func (s *Server) localJoinPossible(ctx context.Context, sess *Session, roomID string) (bool, []string, error) {
	var local bool
	var servers []string
	err := sess.T.Store.Tx(ctx, func(q pgdb.DBTX) error {
		if err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM current_state WHERE room_id = $1 AND type = 'm.room.member'
			AND membership = 'join' AND state_key LIKE '%:' || $2)`, roomID, string(sess.T.ServerName)).Scan(&local); err != nil {
			return err
		}
		if local {
			return nil
		}
		// Invited over the invite API (the room unknown here): the inviting server.
		if inv, err := storage.PendingRemoteInvite(ctx, q, roomID, sess.UserID); err == nil {
			servers = append(servers, inv.Origin)
		} else if !errors.Is(err, storage.ErrNotFound) {
			return err
		}
		rows, err := q.Query(ctx, `SELECT DISTINCT substr(sender, strpos(sender, ':') + 1) FROM events
			WHERE room_id = $1 AND type = 'm.room.member' AND state_key = $2`, roomID, sess.UserID)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var srv string
			if err := rows.Scan(&srv); err != nil {
				return err
			}
			servers = append(servers, srv)
		}
		// A room created here with nobody left in it still joins locally (the auth rules decide).
		if len(servers) == 0 {
			var exists bool
			if err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM rooms WHERE room_id = $1 AND creator LIKE '%:' || $2)`,
				roomID, string(sess.T.ServerName)).Scan(&exists); err != nil {
				return err
			}
			local = exists
		}
		return rows.Err()
	})
	return local, servers, err
}

type membershipRequest struct {
	UserID string `json:"user_id"`
	Reason string `json:"reason"`
}

func (s *Server) membershipChange(membership string) authedHandler {
	return func(w http.ResponseWriter, r *http.Request, sess *Session) error {
		roomID, err := pathRoomID(r)
		if err != nil {
			return err
		}
		var req membershipRequest
		if err := mxhttp.DecodeJSON(r, &req); err != nil {
			return err
		}
		target := sess.UserID
		if membership != spec.Leave || strings.HasSuffix(r.URL.Path, "/kick") || strings.HasSuffix(r.URL.Path, "/unban") {
			if req.UserID == "" {
				return mxhttp.MissingParam("user_id is required")
			}
			if _, err := spec.NewUserID(req.UserID, true); err != nil {
				return mxhttp.InvalidParam("invalid user_id")
			}
			target = req.UserID
		}
		if membership == spec.Leave && target != sess.UserID {
			// Kick and unban: only act on users who are in the expected state.
			var cur string
			_ = sess.T.Store.Tx(r.Context(), func(q pgdb.DBTX) error {
				st, err := storage.CurrentState(r.Context(), q, roomID, []storage.StateKeyTuple{{Type: spec.MRoomMember, StateKey: target}})
				if err == nil && len(st) == 1 {
					cur = st[0].Membership
				}
				return nil
			})
			unban := strings.HasSuffix(r.URL.Path, "/unban")
			if unban && cur != spec.Ban {
				return mxhttp.Forbidden("user is not banned")
			}
			if !unban && cur != spec.Join && cur != spec.Invite && cur != spec.Knock {
				return mxhttp.Forbidden("user is not in the room")
			}
		}
		if handled, err := s.remoteMembership(r, sess, roomID, target, membership, req.Reason); handled || err != nil {
			if err != nil {
				return roomErr(err)
			}
			return mxhttp.JSON(w, http.StatusOK, struct{}{})
		}
		if _, err := s.sendMembership(r.Context(), sess.T, roomID, sess.UserID, target, membership, req.Reason, nil); err != nil {
			return err
		}
		return mxhttp.JSON(w, http.StatusOK, struct{}{})
	}
}

// remoteMembership handles the membership changes another server takes part in: inviting
// another server's user (the invitee's server signs the invite) and rejecting an invite to a
// room on another server. It reports whether it handled the change.
func (s *Server) remoteMembership(r *http.Request, sess *Session, roomID, target, membership, reason string) (bool, error) {
	if s.opts.Remote == nil {
		return false, nil
	}
	ctx := r.Context()
	switch {
	case membership == spec.Invite && !strings.HasSuffix(target, ":"+string(sess.T.ServerName)):
		content := map[string]any{"membership": spec.Invite}
		if reason != "" {
			content["reason"] = reason
		}
		return true, s.opts.Remote.Invite(ctx, sess.T, roomID, sess.UserID, target, content)
	case membership == spec.Leave && target == sess.UserID:
		if handled, err := s.withdrawRemoteKnock(ctx, sess, roomID); handled || err != nil {
			return true, err
		}
		err := sess.T.Store.Tx(ctx, func(q pgdb.DBTX) error {
			_, err := storage.PendingRemoteInvite(ctx, q, roomID, sess.UserID)
			return err
		})
		if errors.Is(err, storage.ErrNotFound) {
			return false, nil
		}
		if err != nil {
			return true, err
		}
		return true, s.opts.Remote.RejectInvite(ctx, sess.T, roomID, sess.UserID)
	}
	return false, nil
}

func (s *Server) forgetRoom(w http.ResponseWriter, r *http.Request, sess *Session) error {
	roomID, err := pathRoomID(r)
	if err != nil {
		return err
	}
	err = sess.T.Store.Tx(r.Context(), func(q pgdb.DBTX) error {
		st, err := storage.CurrentState(r.Context(), q, roomID, []storage.StateKeyTuple{{Type: spec.MRoomMember, StateKey: sess.UserID}})
		if err != nil {
			return err
		}
		if len(st) == 0 {
			return mxhttp.NotFound("you have never been in this room")
		}
		if st[0].Membership == spec.Join || st[0].Membership == spec.Invite {
			return mxhttp.Code(http.StatusBadRequest, spec.ErrorUnknown, "leave the room before forgetting it")
		}
		return storage.ForgetRoom(r.Context(), q, sess.UserID, roomID)
	})
	if err != nil {
		return err
	}
	return mxhttp.JSON(w, http.StatusOK, struct{}{})
}

// access is what a user may read of a room: events up to MaxPos, and the state as of that point.
type access struct {
	MaxPos  int64
	Joined  bool
	LeaveEv string // the event that ended the user's membership, when not joined
}

// roomAccess decides what sess may read of roomID: members read everything, former members
// everything up to their departure, others nothing unless the room is world readable.
func roomAccess(ctx context.Context, q pgdb.DBTX, roomID, userID string) (access, error) {
	st, err := storage.CurrentState(ctx, q, roomID, []storage.StateKeyTuple{{Type: spec.MRoomMember, StateKey: userID}, {Type: spec.MRoomHistoryVisibility}})
	if err != nil {
		return access{}, err
	}
	var member *storage.StateEntry
	worldReadable := false
	for i := range st {
		switch st[i].Type {
		case spec.MRoomMember:
			member = &st[i]
		case spec.MRoomHistoryVisibility:
			ev, err := storage.EventByID(ctx, q, st[i].EventID)
			if err == nil && strings.Contains(string(ev.JSON), `"world_readable"`) {
				worldReadable = true
			}
		}
	}
	if member != nil && member.Membership == spec.Join {
		return access{MaxPos: math.MaxInt64, Joined: true}, nil
	}
	if worldReadable {
		return access{MaxPos: math.MaxInt64}, nil
	}
	if member != nil && (member.Membership == spec.Leave || member.Membership == spec.Ban) {
		// Only if they had been joined before.
		m, _, err := storage.MembershipAt(ctx, q, roomID, userID, member.StreamPos-1)
		if err != nil {
			return access{}, err
		}
		if m == spec.Join {
			return access{MaxPos: member.StreamPos, LeaveEv: member.EventID}, nil
		}
	}
	if _, err := storage.GetRoom(ctx, q, roomID); errors.Is(err, storage.ErrNotFound) {
		return access{}, mxhttp.Forbidden("you are not in this room")
	}
	return access{}, mxhttp.Forbidden("you are not allowed to see this room")
}

// stateFor returns the room state a user may see: current state for members, the state at
// their departure for former members.
func stateFor(ctx context.Context, q pgdb.DBTX, roomID string, a access) ([]storage.EventRow, error) {
	if a.LeaveEv == "" {
		return storage.CurrentStateEvents(ctx, q, roomID, nil)
	}
	leave, err := storage.EventByID(ctx, q, a.LeaveEv)
	if err != nil {
		return nil, err
	}
	return stateAfter(ctx, q, leave)
}

// stateAfter returns the state events right after ev.
func stateAfter(ctx context.Context, q pgdb.DBTX, ev storage.EventRow) ([]storage.EventRow, error) {
	state := map[storage.StateKeyTuple]string{}
	if ev.StateBefore != 0 {
		var err error
		state, err = storage.StateGroup(ctx, q, ev.StateBefore)
		if err != nil {
			return nil, err
		}
	}
	if ev.StateKey != nil {
		state[storage.StateKeyTuple{Type: ev.Type, StateKey: *ev.StateKey}] = ev.EventID
	}
	ids := make([]string, 0, len(state))
	for _, id := range state {
		ids = append(ids, id)
	}
	return storage.EventsByID(ctx, q, ids)
}

func (s *Server) roomState(w http.ResponseWriter, r *http.Request, sess *Session) error {
	roomID, err := pathRoomID(r)
	if err != nil {
		return err
	}
	var events []storage.EventRow
	err = sess.T.Store.Tx(r.Context(), func(q pgdb.DBTX) error {
		a, err := roomAccess(r.Context(), q, roomID, sess.UserID)
		if err != nil {
			return err
		}
		events, err = stateFor(r.Context(), q, roomID, a)
		return err
	})
	if err != nil {
		return err
	}
	return mxhttp.JSON(w, http.StatusOK, clientEvents(events, sess.UserID, sess.DeviceID, true))
}

func (s *Server) roomStateEvent(w http.ResponseWriter, r *http.Request, sess *Session) error {
	roomID, err := pathRoomID(r)
	if err != nil {
		return err
	}
	typ, key := r.PathValue("eventType"), r.PathValue("stateKey")
	var found *storage.EventRow
	err = sess.T.Store.Tx(r.Context(), func(q pgdb.DBTX) error {
		a, err := roomAccess(r.Context(), q, roomID, sess.UserID)
		if err != nil {
			return err
		}
		events, err := stateFor(r.Context(), q, roomID, a)
		if err != nil {
			return err
		}
		for i := range events {
			if events[i].Type == typ && events[i].StateKey != nil && *events[i].StateKey == key {
				found = &events[i]
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if found == nil {
		return mxhttp.NotFound("no state event %s with that key", truncate(typ, 80))
	}
	ce := clientEvent(*found, sess.UserID, sess.DeviceID, true)
	if r.URL.Query().Get("format") == "event" {
		return mxhttp.JSON(w, http.StatusOK, ce)
	}
	return mxhttp.JSON(w, http.StatusOK, ce.Content)
}

// readContent reads a JSON object event body.
func readContent(r *http.Request) (json.RawMessage, error) {
	var raw json.RawMessage
	if err := mxhttp.DecodeJSON(r, &raw); err != nil {
		return nil, err
	}
	if len(raw) > 65536 {
		return nil, mxhttp.TooLarge("event content too large")
	}
	return raw, nil
}

func (s *Server) putState(w http.ResponseWriter, r *http.Request, sess *Session) error {
	roomID, err := pathRoomID(r)
	if err != nil {
		return err
	}
	typ, key := r.PathValue("eventType"), r.PathValue("stateKey")
	if typ == "" || len(typ) > 255 || len(key) > 255 {
		return mxhttp.InvalidParam("invalid event type or state key")
	}
	content, err := readContent(r)
	if err != nil {
		return err
	}
	if typ == spec.MRoomMember {
		// Membership changes go through their own endpoints, which apply the membership rules.
		var c struct {
			Membership string `json:"membership"`
		}
		if json.Unmarshal(content, &c) != nil || c.Membership == "" {
			return mxhttp.BadJSON("m.room.member content needs a membership")
		}
	}
	id, err := s.send(r.Context(), sess.T, rooms.Request{RoomID: roomID, Sender: sess.UserID, Type: typ, StateKey: &key, Content: content})
	if err != nil {
		return err
	}
	if typ == spec.MRoomCanonicalAlias {
		s.log.DebugContext(r.Context(), "canonical alias changed", "tenant", sess.T.TenantID)
	}
	return mxhttp.JSON(w, http.StatusOK, map[string]string{"event_id": id})
}

func (s *Server) sendMessage(w http.ResponseWriter, r *http.Request, sess *Session) error {
	roomID, err := pathRoomID(r)
	if err != nil {
		return err
	}
	typ, txn := r.PathValue("eventType"), r.PathValue("txnID")
	if typ == "" || len(typ) > 255 || txn == "" || len(txn) > 255 {
		return mxhttp.InvalidParam("invalid event type or transaction ID")
	}
	perSecond := int(sess.T.Settings.MessagesPerSecond + 0.999)
	if perSecond == 0 {
		perSecond = defaultMessagesPerSec
	}
	if err := s.limit(r.Context(), "send", sess.T.TenantID+"|"+sess.UserID, perSecond, time.Second); err != nil {
		return err
	}
	content, err := readContent(r)
	if err != nil {
		return err
	}
	id, err := s.send(r.Context(), sess.T, rooms.Request{RoomID: roomID, Sender: sess.UserID, Type: typ, Content: content, TxnDevice: sess.DeviceID, TxnID: txn})
	if err != nil {
		return err
	}
	return mxhttp.JSON(w, http.StatusOK, map[string]string{"event_id": id})
}

func (s *Server) redact(w http.ResponseWriter, r *http.Request, sess *Session) error {
	roomID, err := pathRoomID(r)
	if err != nil {
		return err
	}
	target, txn := r.PathValue("eventID"), r.PathValue("txnID")
	if !strings.HasPrefix(target, "$") || len(target) > 255 {
		return mxhttp.InvalidParam("invalid event ID")
	}
	var req struct {
		Reason string `json:"reason"`
	}
	if err := mxhttp.DecodeJSON(r, &req); err != nil {
		return err
	}
	content := map[string]any{"redacts": target}
	if req.Reason != "" {
		content["reason"] = req.Reason
	}
	b, _ := json.Marshal(content)
	id, err := s.send(r.Context(), sess.T, rooms.Request{RoomID: roomID, Sender: sess.UserID, Type: spec.MRoomRedaction, Content: b, Redacts: target, TxnDevice: sess.DeviceID, TxnID: txn})
	if err != nil {
		return err
	}
	return mxhttp.JSON(w, http.StatusOK, map[string]string{"event_id": id})
}

func (s *Server) joinedRooms(w http.ResponseWriter, r *http.Request, sess *Session) error {
	var joined []string
	err := sess.T.Store.Tx(r.Context(), func(q pgdb.DBTX) error {
		rs, err := storage.UserRooms(r.Context(), q, sess.UserID)
		for _, jr := range rs {
			if jr.Membership == spec.Join {
				joined = append(joined, jr.RoomID)
			}
		}
		return err
	})
	if err != nil {
		return err
	}
	if joined == nil {
		joined = []string{}
	}
	return mxhttp.JSON(w, http.StatusOK, map[string][]string{"joined_rooms": joined})
}

func (s *Server) members(w http.ResponseWriter, r *http.Request, sess *Session) error {
	roomID, err := pathRoomID(r)
	if err != nil {
		return err
	}
	qp := r.URL.Query()
	want, notWant := qp.Get("membership"), qp.Get("not_membership")
	var out []ClientEvent
	err = sess.T.Store.Tx(r.Context(), func(q pgdb.DBTX) error {
		a, err := roomAccess(r.Context(), q, roomID, sess.UserID)
		if err != nil {
			return err
		}
		events, err := stateFor(r.Context(), q, roomID, a)
		if err != nil {
			return err
		}
		for _, e := range events {
			if e.Type != spec.MRoomMember {
				continue
			}
			ce := clientEvent(e, sess.UserID, sess.DeviceID, true)
			var c struct {
				Membership string `json:"membership"`
			}
			_ = json.Unmarshal(ce.Content, &c)
			if (want != "" && c.Membership != want) || (notWant != "" && c.Membership == notWant) {
				continue
			}
			out = append(out, ce)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if out == nil {
		out = []ClientEvent{}
	}
	return mxhttp.JSON(w, http.StatusOK, map[string]any{"chunk": out})
}

func (s *Server) joinedMembers(w http.ResponseWriter, r *http.Request, sess *Session) error {
	roomID, err := pathRoomID(r)
	if err != nil {
		return err
	}
	type member struct {
		DisplayName *string `json:"display_name,omitempty"`
		AvatarURL   *string `json:"avatar_url,omitempty"`
	}
	joined := map[string]member{}
	err = sess.T.Store.Tx(r.Context(), func(q pgdb.DBTX) error {
		a, err := roomAccess(r.Context(), q, roomID, sess.UserID)
		if err != nil {
			return err
		}
		if !a.Joined {
			return mxhttp.Forbidden("you are not in this room")
		}
		events, err := storage.CurrentStateEvents(r.Context(), q, roomID, nil)
		if err != nil {
			return err
		}
		for _, e := range events {
			if e.Type != spec.MRoomMember || e.StateKey == nil {
				continue
			}
			var c struct {
				Membership  string  `json:"membership"`
				DisplayName *string `json:"displayname"`
				AvatarURL   *string `json:"avatar_url"`
			}
			ce := clientEvent(e, "", "", false)
			_ = json.Unmarshal(ce.Content, &c)
			if c.Membership == spec.Join {
				joined[*e.StateKey] = member{DisplayName: c.DisplayName, AvatarURL: c.AvatarURL}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return mxhttp.JSON(w, http.StatusOK, map[string]any{"joined": joined})
}

func (s *Server) getEvent(w http.ResponseWriter, r *http.Request, sess *Session) error {
	roomID, err := pathRoomID(r)
	if err != nil {
		return err
	}
	eventID := r.PathValue("eventID")
	var ev storage.EventRow
	err = sess.T.Store.Tx(r.Context(), func(q pgdb.DBTX) error {
		a, err := roomAccess(r.Context(), q, roomID, sess.UserID)
		if err != nil {
			return err
		}
		ev, err = storage.EventByID(r.Context(), q, eventID)
		if errors.Is(err, storage.ErrNotFound) || (err == nil && (ev.RoomID != roomID || ev.StreamPos > a.MaxPos)) {
			return mxhttp.NotFound("event not found")
		}
		return err
	})
	if err != nil {
		return err
	}
	return mxhttp.JSON(w, http.StatusOK, clientEvent(ev, sess.UserID, sess.DeviceID, true))
}

func (s *Server) eventContext(w http.ResponseWriter, r *http.Request, sess *Session) error {
	roomID, err := pathRoomID(r)
	if err != nil {
		return err
	}
	limit, err := queryInt(r, "limit", 10, 0, 100)
	if err != nil {
		return err
	}
	eventID := r.PathValue("eventID")
	resp := map[string]any{}
	err = sess.T.Store.Tx(r.Context(), func(q pgdb.DBTX) error {
		a, err := roomAccess(r.Context(), q, roomID, sess.UserID)
		if err != nil {
			return err
		}
		ev, err := storage.EventByID(r.Context(), q, eventID)
		if errors.Is(err, storage.ErrNotFound) || (err == nil && (ev.RoomID != roomID || ev.StreamPos > a.MaxPos)) {
			return mxhttp.NotFound("event not found")
		}
		if err != nil {
			return err
		}
		before, err := storage.RoomEvents(r.Context(), q, roomID, 0, ev.StreamPos-1, limit/2, true)
		if err != nil {
			return err
		}
		after, err := storage.RoomEvents(r.Context(), q, roomID, ev.StreamPos, a.MaxPos, limit-limit/2, false)
		if err != nil {
			return err
		}
		state, err := stateAfter(r.Context(), q, ev)
		if err != nil {
			return err
		}
		start, end := ev.StreamPos-1, ev.StreamPos
		if len(before) > 0 {
			start = before[len(before)-1].StreamPos - 1
		}
		if len(after) > 0 {
			end = after[len(after)-1].StreamPos
		}
		resp["event"] = clientEvent(ev, sess.UserID, sess.DeviceID, true)
		resp["events_before"] = clientEvents(before, sess.UserID, sess.DeviceID, true)
		resp["events_after"] = clientEvents(after, sess.UserID, sess.DeviceID, true)
		resp["state"] = clientEvents(state, sess.UserID, sess.DeviceID, true)
		resp["start"] = topoToken(start)
		resp["end"] = topoToken(end)
		return nil
	})
	if err != nil {
		return err
	}
	return mxhttp.JSON(w, http.StatusOK, resp)
}

func queryInt(r *http.Request, name string, def, min, max int) (int, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < min {
		return 0, mxhttp.InvalidParam("%s must be an integer of at least %d", name, min)
	}
	if n > max {
		n = max
	}
	return n, nil
}

// Aliases and the room directory.

func (s *Server) putAlias(w http.ResponseWriter, r *http.Request, sess *Session) error {
	alias := r.PathValue("alias")
	if err := s.checkLocalAlias(sess.T, alias); err != nil {
		return err
	}
	var req struct {
		RoomID string `json:"room_id"`
	}
	if err := mxhttp.DecodeJSON(r, &req); err != nil {
		return err
	}
	if _, err := spec.NewRoomID(req.RoomID); err != nil {
		return mxhttp.InvalidParam("invalid room_id")
	}
	err := sess.T.Store.Tx(r.Context(), func(q pgdb.DBTX) error {
		a, err := roomAccess(r.Context(), q, req.RoomID, sess.UserID)
		if err != nil {
			return err
		}
		if !a.Joined {
			return mxhttp.Forbidden("you are not in this room")
		}
		return storage.InsertAlias(r.Context(), q, alias, req.RoomID, sess.UserID)
	})
	if errors.Is(err, storage.ErrExists) {
		return mxhttp.Code(http.StatusConflict, "M_UNKNOWN", "room alias already exists")
	}
	if err != nil {
		return err
	}
	return mxhttp.JSON(w, http.StatusOK, struct{}{})
}

func (s *Server) checkLocalAlias(t *Tenant, alias string) error {
	if !strings.HasPrefix(alias, "#") || len(alias) > 255 {
		return mxhttp.Errorf(http.StatusBadRequest, spec.BadAlias("invalid room alias"))
	}
	_, server, ok := strings.Cut(alias[1:], ":")
	if !ok || spec.ServerName(server) != t.ServerName {
		return mxhttp.Errorf(http.StatusBadRequest, spec.InvalidParam("room alias must be on this server"))
	}
	return nil
}

func (s *Server) getAlias(w http.ResponseWriter, r *http.Request, t *Tenant) error {
	alias := r.PathValue("alias")
	if !strings.HasPrefix(alias, "#") {
		return mxhttp.Errorf(http.StatusBadRequest, spec.BadAlias("invalid room alias"))
	}
	if !strings.HasSuffix(alias, ":"+string(t.ServerName)) && s.opts.Remote != nil {
		roomID, servers, err := s.opts.Remote.ResolveAlias(r.Context(), t, alias)
		if err != nil {
			s.log.InfoContext(r.Context(), "remote alias query failed", "tenant", t.TenantID, "err", err)
			return mxhttp.NotFound("room alias not found")
		}
		return mxhttp.JSON(w, http.StatusOK, map[string]any{"room_id": roomID, "servers": servers})
	}
	var roomID string
	err := t.Store.Tx(r.Context(), func(q pgdb.DBTX) error {
		var err error
		roomID, _, err = storage.AliasRoom(r.Context(), q, alias)
		return err
	})
	if errors.Is(err, storage.ErrNotFound) {
		return mxhttp.NotFound("room alias not found")
	}
	if err != nil {
		return err
	}
	return mxhttp.JSON(w, http.StatusOK, map[string]any{"room_id": roomID, "servers": []string{string(t.ServerName)}})
}

func (s *Server) deleteAlias(w http.ResponseWriter, r *http.Request, sess *Session) error {
	alias := r.PathValue("alias")
	if err := s.checkLocalAlias(sess.T, alias); err != nil {
		return err
	}
	err := sess.T.Store.Tx(r.Context(), func(q pgdb.DBTX) error {
		roomID, creator, err := storage.AliasRoom(r.Context(), q, alias)
		if errors.Is(err, storage.ErrNotFound) {
			return mxhttp.NotFound("room alias not found")
		}
		if err != nil {
			return err
		}
		if creator != sess.UserID {
			// Room admins may remove aliases too.
			if !canSendState(r.Context(), q, roomID, sess.UserID, spec.MRoomCanonicalAlias) {
				return mxhttp.Forbidden("you may not delete this alias")
			}
		}
		return storage.DeleteAlias(r.Context(), q, alias)
	})
	if err != nil {
		return err
	}
	return mxhttp.JSON(w, http.StatusOK, struct{}{})
}

// canSendState reports whether user's power level allows sending evType state in the room.
func canSendState(ctx context.Context, q pgdb.DBTX, roomID, user, evType string) bool {
	events, err := storage.CurrentStateEvents(ctx, q, roomID, []storage.StateKeyTuple{{Type: spec.MRoomPowerLevels}, {Type: spec.MRoomCreate}})
	if err != nil {
		return false
	}
	var pl gomatrixserverlib.PowerLevelContent
	pl.Defaults()
	for _, e := range events {
		if e.Type == spec.MRoomCreate && e.Sender == user {
			return true
		}
		if e.Type == spec.MRoomPowerLevels {
			var c struct {
				Content json.RawMessage `json:"content"`
			}
			_ = json.Unmarshal(e.JSON, &c)
			_ = json.Unmarshal(c.Content, &pl)
		}
	}
	return pl.UserLevel(spec.SenderID(user)) >= pl.EventLevel(evType, true)
}

func (s *Server) roomAliases(w http.ResponseWriter, r *http.Request, sess *Session) error {
	roomID, err := pathRoomID(r)
	if err != nil {
		return err
	}
	var aliases []string
	err = sess.T.Store.Tx(r.Context(), func(q pgdb.DBTX) error {
		if _, err := roomAccess(r.Context(), q, roomID, sess.UserID); err != nil {
			return err
		}
		aliases, err = storage.RoomAliases(r.Context(), q, roomID)
		return err
	})
	if err != nil {
		return err
	}
	return mxhttp.JSON(w, http.StatusOK, map[string][]string{"aliases": aliases})
}

func (s *Server) getVisibility(w http.ResponseWriter, r *http.Request, t *Tenant) error {
	roomID, err := pathRoomID(r)
	if err != nil {
		return err
	}
	var room storage.Room
	err = t.Store.Tx(r.Context(), func(q pgdb.DBTX) error {
		room, err = storage.GetRoom(r.Context(), q, roomID)
		return err
	})
	if errors.Is(err, storage.ErrNotFound) {
		return mxhttp.NotFound("unknown room")
	}
	if err != nil {
		return err
	}
	vis := "private"
	if room.Published {
		vis = "public"
	}
	return mxhttp.JSON(w, http.StatusOK, map[string]string{"visibility": vis})
}

func (s *Server) putVisibility(w http.ResponseWriter, r *http.Request, sess *Session) error {
	roomID, err := pathRoomID(r)
	if err != nil {
		return err
	}
	var req struct {
		Visibility string `json:"visibility"`
	}
	if err := mxhttp.DecodeJSON(r, &req); err != nil {
		return err
	}
	if req.Visibility != "public" && req.Visibility != "private" {
		return mxhttp.InvalidParam("visibility must be public or private")
	}
	err = sess.T.Store.Tx(r.Context(), func(q pgdb.DBTX) error {
		if !canSendState(r.Context(), q, roomID, sess.UserID, spec.MRoomCanonicalAlias) {
			return mxhttp.Forbidden("you may not change this room's visibility")
		}
		return storage.SetPublished(r.Context(), q, roomID, req.Visibility == "public")
	})
	if errors.Is(err, storage.ErrNotFound) {
		return mxhttp.NotFound("unknown room")
	}
	if err != nil {
		return err
	}
	return mxhttp.JSON(w, http.StatusOK, struct{}{})
}

type publicRoom struct {
	RoomID           string `json:"room_id"`
	NumJoinedMembers int    `json:"num_joined_members"`
	WorldReadable    bool   `json:"world_readable"`
	GuestCanJoin     bool   `json:"guest_can_join"`
	Name             string `json:"name,omitempty"`
	Topic            string `json:"topic,omitempty"`
	CanonicalAlias   string `json:"canonical_alias,omitempty"`
	AvatarURL        string `json:"avatar_url,omitempty"`
	JoinRule         string `json:"join_rule,omitempty"`
	RoomType         string `json:"room_type,omitempty"`
}

func (s *Server) publicRooms(w http.ResponseWriter, r *http.Request, t *Tenant) error {
	pq := PublicRoomsQuery{Limit: 100}
	server := r.URL.Query().Get("server")
	if r.Method == http.MethodPost {
		var req struct {
			Limit  int    `json:"limit"`
			Since  string `json:"since"`
			Filter struct {
				GenericSearchTerm string `json:"generic_search_term"`
			} `json:"filter"`
		}
		if err := mxhttp.DecodeJSON(r, &req); err != nil {
			return err
		}
		if req.Limit > 0 {
			pq.Limit = req.Limit
		}
		pq.Since, pq.Filter = req.Since, req.Filter.GenericSearchTerm
	} else {
		var err error
		if pq.Limit, err = queryInt(r, "limit", 100, 1, 500); err != nil {
			return err
		}
		pq.Since = r.URL.Query().Get("since")
	}
	if server != "" && server != string(t.ServerName) {
		return s.remotePublicRooms(w, r, t, server, pq)
	}
	page, err := PublicRooms(r.Context(), t, pq)
	if err != nil {
		return err
	}
	return mxhttp.JSON(w, http.StatusOK, page)
}

func (s *Server) upgradeRoom(w http.ResponseWriter, r *http.Request, sess *Session) error {
	roomID, err := pathRoomID(r)
	if err != nil {
		return err
	}
	var req struct {
		NewVersion string `json:"new_version"`
	}
	if err := mxhttp.DecodeJSON(r, &req); err != nil {
		return err
	}
	version := gomatrixserverlib.RoomVersion(req.NewVersion)
	if _, err := gomatrixserverlib.GetRoomVersion(version); err != nil {
		return mxhttp.Errorf(http.StatusBadRequest, spec.UnsupportedRoomVersion("unsupported room version"))
	}
	// Copy the state a room's identity is made of into the new room.
	var state []storage.EventRow
	err = sess.T.Store.Tx(r.Context(), func(q pgdb.DBTX) error {
		a, err := roomAccess(r.Context(), q, roomID, sess.UserID)
		if err != nil {
			return err
		}
		if !a.Joined {
			return mxhttp.Forbidden("you are not in this room")
		}
		if !canSendState(r.Context(), q, roomID, sess.UserID, "m.room.tombstone") {
			return mxhttp.Forbidden("you may not upgrade this room")
		}
		state, err = storage.CurrentStateEvents(r.Context(), q, roomID, nil)
		return err
	})
	if err != nil {
		return err
	}
	var initial []rooms.InitialStateEvent
	var plOverride json.RawMessage
	preset := rooms.PresetPrivateChat
	for _, e := range state {
		ce := clientEvent(e, "", "", false)
		switch e.Type {
		case spec.MRoomName, spec.MRoomTopic, "m.room.avatar", spec.MRoomJoinRules, spec.MRoomHistoryVisibility,
			"m.room.guest_access", "m.room.encryption", "m.room.server_acl", "m.room.related_groups":
			initial = append(initial, rooms.InitialStateEvent{Type: e.Type, StateKey: *e.StateKey, Content: ce.Content})
		case spec.MRoomPowerLevels:
			var pl map[string]any
			_ = json.Unmarshal(ce.Content, &pl)
			if v, err := gomatrixserverlib.GetRoomVersion(version); err == nil && v.PrivilegedCreators() {
				if users, ok := pl["users"].(map[string]any); ok {
					delete(users, sess.UserID)
				}
			}
			plOverride, _ = json.Marshal(pl)
		}
	}
	newRoom, err := s.engine.CreateRoom(r.Context(), sess.T.Host, rooms.CreateOptions{
		Creator: sess.UserID, Version: version, Preset: preset, InitialState: initial,
		PowerLevelContentOverride: plOverride, Predecessor: &rooms.Predecessor{RoomID: roomID},
	})
	if err != nil {
		return roomErr(err)
	}
	tomb, _ := json.Marshal(map[string]string{"body": "This room has been replaced", "replacement_room": newRoom})
	empty := ""
	if _, err := s.send(r.Context(), sess.T, rooms.Request{RoomID: roomID, Sender: sess.UserID, Type: "m.room.tombstone", StateKey: &empty, Content: tomb}); err != nil {
		return err
	}
	return mxhttp.JSON(w, http.StatusOK, map[string]string{"replacement_room": newRoom})
}
