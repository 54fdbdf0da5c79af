package federation

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/atoll-matrix/atoll/homeserver/clientapi"
	"github.com/atoll-matrix/atoll/homeserver/rooms"
	"github.com/atoll-matrix/atoll/homeserver/storage"
	"github.com/atoll-matrix/atoll/internal/mxhttp"
	"github.com/atoll-matrix/atoll/internal/pgdb"
)

// matrixErr turns gomatrixserverlib's spec errors into responses.
func matrixErr(err error) error {
	var me spec.MatrixError
	if errors.As(err, &me) {
		status := http.StatusBadRequest
		switch me.ErrCode {
		case spec.ErrorForbidden:
			status = http.StatusForbidden
		case spec.ErrorNotFound:
			status = http.StatusNotFound
		}
		return mxhttp.Errorf(status, me)
	}
	var ire spec.IncompatibleRoomVersionError
	if errors.As(err, &ire) {
		return &mxhttp.Error{Status: http.StatusBadRequest, Body: ire}
	}
	var fe *rooms.ForbiddenError
	if errors.As(err, &fe) {
		return mxhttp.Forbidden("%s", fe.Reason)
	}
	if errors.Is(err, rooms.ErrRoomNotFound) {
		return mxhttp.NotFound("unknown room")
	}
	return err
}

// querier answers gomatrixserverlib's questions about a tenant's rooms.
type querier struct {
	t *clientapi.Tenant
}

func (q querier) CurrentMembership(ctx context.Context, roomID spec.RoomID, sender spec.SenderID) (string, error) {
	var m string
	err := q.t.Store.Tx(ctx, func(tx pgdb.DBTX) error {
		st, err := storage.CurrentState(ctx, tx, roomID.String(), []storage.StateKeyTuple{{Type: spec.MRoomMember, StateKey: string(sender)}})
		if err == nil && len(st) == 1 {
			m = st[0].Membership
		}
		return err
	})
	if m == "" {
		m = spec.Leave
	}
	return m, err
}

func (q querier) CurrentStateEvent(ctx context.Context, roomID spec.RoomID, eventType, stateKey string) (gomatrixserverlib.PDU, error) {
	v, err := rooms.RoomVersion(ctx, q.t.Host, roomID.String())
	if err != nil {
		return nil, err
	}
	var out gomatrixserverlib.PDU
	err = q.t.Store.Tx(ctx, func(tx pgdb.DBTX) error {
		rows, err := storage.CurrentStateEvents(ctx, tx, roomID.String(), []storage.StateKeyTuple{{Type: eventType, StateKey: stateKey}})
		if err != nil || len(rows) == 0 {
			return err
		}
		out, err = v.NewEventFromTrustedJSON(rows[0].JSON, rows[0].RedactedBecause != "")
		return err
	})
	return out, err
}

func (q querier) InvitePending(ctx context.Context, roomID spec.RoomID, sender spec.SenderID) (bool, error) {
	m, err := q.CurrentMembership(ctx, roomID, sender)
	return m == spec.Invite, err
}

func (q querier) RestrictedRoomJoinInfo(ctx context.Context, roomID spec.RoomID, sender spec.SenderID, local spec.ServerName) (*gomatrixserverlib.RestrictedRoomJoinInfo, error) {
	// Restricted rooms are allowed only through room membership this server can vouch for:
	// a local joined user able to invite. Without room hierarchy support, the answer is "none".
	return &gomatrixserverlib.RestrictedRoomJoinInfo{}, nil
}

func (q querier) serverInRoom(ctx context.Context, roomID string) (bool, error) {
	var in bool
	err := q.t.Store.Tx(ctx, func(tx pgdb.DBTX) error {
		return tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM current_state WHERE room_id = $1 AND type = 'm.room.member'
			AND membership = 'join' AND state_key LIKE '%:' || $2)`, roomID, string(q.t.ServerName)).Scan(&in)
	})
	return in, err
}

func supportedVersions(r *http.Request) []gomatrixserverlib.RoomVersion {
	var out []gomatrixserverlib.RoomVersion
	for _, v := range r.URL.Query()["ver"] {
		out = append(out, gomatrixserverlib.RoomVersion(v))
	}
	if len(out) == 0 {
		out = []gomatrixserverlib.RoomVersion{gomatrixserverlib.RoomVersionV1}
	}
	return out
}

func (s *Server) makeJoin(w http.ResponseWriter, r *http.Request, req *request) error {
	roomID, err := spec.NewRoomID(r.PathValue("roomID"))
	if err != nil {
		return mxhttp.InvalidParam("invalid room ID")
	}
	user, err := spec.NewUserID(r.PathValue("userID"), true)
	if err != nil {
		return mxhttp.InvalidParam("invalid user ID")
	}
	v, err := rooms.RoomVersion(r.Context(), req.T.Host, roomID.String())
	if err != nil {
		return matrixErr(err)
	}
	q := querier{t: req.T}
	in, err := q.serverInRoom(r.Context(), roomID.String())
	if err != nil {
		return err
	}
	resp, err := gomatrixserverlib.HandleMakeJoin(gomatrixserverlib.HandleMakeJoinInput{
		Context: r.Context(), UserID: *user, SenderID: spec.SenderID(user.String()), RoomID: *roomID, RoomVersion: v.Version(),
		RemoteVersions: supportedVersions(r), RequestOrigin: req.Origin, LocalServerName: req.T.ServerName, LocalServerInRoom: in,
		RoomQuerier: q, UserIDQuerier: rooms.UserIDForSender,
		BuildEventTemplate: func(proto *gomatrixserverlib.ProtoEvent) (gomatrixserverlib.PDU, []gomatrixserverlib.PDU, error) {
			return s.engine.Template(r.Context(), req.T.Host, proto)
		},
	})
	if err != nil {
		return matrixErr(err)
	}
	return mxhttp.JSON(w, http.StatusOK, map[string]any{"event": resp.JoinTemplateEvent, "room_version": resp.RoomVersion})
}

func (s *Server) sendJoin(w http.ResponseWriter, r *http.Request, req *request) error {
	roomID, err := spec.NewRoomID(r.PathValue("roomID"))
	if err != nil {
		return mxhttp.InvalidParam("invalid room ID")
	}
	v, err := rooms.RoomVersion(r.Context(), req.T.Host, roomID.String())
	if err != nil {
		return matrixErr(err)
	}
	resp, err := gomatrixserverlib.HandleSendJoin(gomatrixserverlib.HandleSendJoinInput{
		Context: r.Context(), RoomID: *roomID, EventID: r.PathValue("eventID"), JoinEvent: req.Body, RoomVersion: v.Version(),
		RequestOrigin: req.Origin, LocalServerName: req.T.ServerName, KeyID: req.T.KeyID, PrivateKey: req.T.Key,
		Verifier: s.keyRing, MembershipQuerier: querier{t: req.T}, UserIDQuerier: rooms.UserIDForSender,
		StoreSenderIDFromPublicID: func(context.Context, spec.SenderID, string, spec.RoomID) error { return nil },
	})
	if err != nil {
		return matrixErr(err)
	}
	join := resp.JoinEvent
	if !resp.AlreadyJoined {
		outcome, err := s.engine.PersistRemote(r.Context(), req.T.Host, join, req.Origin)
		if err != nil {
			return matrixErr(err)
		}
		if outcome == rooms.Rejected || outcome == rooms.SoftFailed {
			return mxhttp.Forbidden("the join is not allowed in this room")
		}
		// The other servers in the room learn of the join from us.
		if err := s.forward(r.Context(), req.T, join, req.Origin); err != nil {
			return err
		}
	}
	state, chain, err := s.stateAt(r.Context(), req.T, v, join.EventID(), true)
	if err != nil {
		return err
	}
	return mxhttp.JSON(w, http.StatusOK, fclient.RespSendJoin{
		StateEvents: state, AuthEvents: chain, Origin: req.T.ServerName, Event: join.JSON(),
	})
}

// forward queues an event received from origin for the room's other servers: joins and
// leaves done through us reach everyone else from us.
func (s *Server) forward(ctx context.Context, t *clientapi.Tenant, ev gomatrixserverlib.PDU, origin spec.ServerName) error {
	err := t.Store.Tx(ctx, func(q pgdb.DBTX) error {
		servers, err := roomServers(ctx, q, ev.RoomID().String())
		if err != nil {
			return err
		}
		n := 0
		for _, dest := range servers {
			if dest == string(origin) || dest == string(t.ServerName) {
				continue
			}
			if _, err := q.Exec(ctx, `INSERT INTO federation_outbox (destination, kind, payload, created_ts) VALUES ($1, 'pdu', $2, $3)`,
				dest, string(ev.JSON()), s.now().UnixMilli()); err != nil {
				return err
			}
			n++
		}
		if n == 0 {
			return nil
		}
		_, err = q.Exec(ctx, `INSERT INTO atoll_control.outbox_tenants (tenant_id) VALUES ($1) ON CONFLICT DO NOTHING`, t.TenantID)
		return err
	})
	if err == nil {
		s.Wake()
	}
	return err
}

// stateAt returns the state before (or with after, after) an event, and its auth chain.
func (s *Server) stateAt(ctx context.Context, t *clientapi.Tenant, v gomatrixserverlib.IRoomVersion, eventID string, before bool) (gomatrixserverlib.EventJSONs, gomatrixserverlib.EventJSONs, error) {
	var state, chain gomatrixserverlib.EventJSONs
	err := t.Store.Tx(ctx, func(q pgdb.DBTX) error {
		ev, err := storage.EventByID(ctx, q, eventID)
		if errors.Is(err, storage.ErrNotFound) {
			return mxhttp.NotFound("unknown event")
		}
		if err != nil {
			return err
		}
		group := ev.StateBefore
		if !before {
			group = ev.StateAfter
		}
		ids := map[string]bool{}
		if group != 0 {
			st, err := storage.StateGroup(ctx, q, group)
			if err != nil {
				return err
			}
			for _, id := range st {
				ids[id] = true
			}
		}
		list := make([]string, 0, len(ids))
		for id := range ids {
			list = append(list, id)
		}
		rows, err := storage.EventsByID(ctx, q, list)
		if err != nil {
			return err
		}
		var frontier []string
		for _, r := range rows {
			state = append(state, r.JSON)
			p, err := v.NewEventFromTrustedJSON(r.JSON, r.RedactedBecause != "")
			if err == nil {
				frontier = append(frontier, p.AuthEventIDs()...)
			}
		}
		chain, err = authChain(ctx, q, v, frontier)
		return err
	})
	return state, chain, err
}

// authChain walks auth events from the given IDs.
func authChain(ctx context.Context, q pgdb.DBTX, v gomatrixserverlib.IRoomVersion, start []string) (gomatrixserverlib.EventJSONs, error) {
	seen := map[string]bool{}
	var out gomatrixserverlib.EventJSONs
	frontier := start
	for len(frontier) > 0 {
		var fetch []string
		for _, id := range frontier {
			if !seen[id] {
				seen[id] = true
				fetch = append(fetch, id)
			}
		}
		rows, err := storage.EventsByID(ctx, q, fetch)
		if err != nil {
			return nil, err
		}
		frontier = nil
		for _, r := range rows {
			out = append(out, r.JSON)
			if p, err := v.NewEventFromTrustedJSON(r.JSON, r.RedactedBecause != ""); err == nil {
				frontier = append(frontier, p.AuthEventIDs()...)
			}
		}
	}
	return out, nil
}

func (s *Server) makeLeave(w http.ResponseWriter, r *http.Request, req *request) error {
	roomID, err := spec.NewRoomID(r.PathValue("roomID"))
	if err != nil {
		return mxhttp.InvalidParam("invalid room ID")
	}
	user, err := spec.NewUserID(r.PathValue("userID"), true)
	if err != nil {
		return mxhttp.InvalidParam("invalid user ID")
	}
	v, err := rooms.RoomVersion(r.Context(), req.T.Host, roomID.String())
	if err != nil {
		return matrixErr(err)
	}
	in, err := querier{t: req.T}.serverInRoom(r.Context(), roomID.String())
	if err != nil {
		return err
	}
	resp, err := gomatrixserverlib.HandleMakeLeave(gomatrixserverlib.HandleMakeLeaveInput{
		UserID: *user, SenderID: spec.SenderID(user.String()), RoomID: *roomID, RoomVersion: v.Version(), RequestOrigin: req.Origin,
		LocalServerName: req.T.ServerName, LocalServerInRoom: in, UserIDQuerier: rooms.UserIDForSender,
		BuildEventTemplate: func(proto *gomatrixserverlib.ProtoEvent) (gomatrixserverlib.PDU, []gomatrixserverlib.PDU, error) {
			return s.engine.Template(r.Context(), req.T.Host, proto)
		},
	})
	if err != nil {
		return matrixErr(err)
	}
	return mxhttp.JSON(w, http.StatusOK, map[string]any{"event": resp.LeaveTemplateEvent, "room_version": resp.RoomVersion})
}

func (s *Server) sendLeave(w http.ResponseWriter, r *http.Request, req *request) error {
	roomID, err := spec.NewRoomID(r.PathValue("roomID"))
	if err != nil {
		return mxhttp.InvalidParam("invalid room ID")
	}
	v, err := rooms.RoomVersion(r.Context(), req.T.Host, roomID.String())
	if err != nil {
		return matrixErr(err)
	}
	ev, err := s.verifyPDU(r.Context(), v, req.Body)
	if err != nil {
		return mxhttp.BadJSON("invalid leave event: %v", err)
	}
	if ev.RoomID().String() != roomID.String() || ev.EventID() != r.PathValue("eventID") || ev.Type() != spec.MRoomMember ||
		ev.StateKey() == nil || *ev.StateKey() != string(ev.SenderID()) {
		return mxhttp.BadJSON("not a leave event of the sender for this room")
	}
	if m, _ := ev.Membership(); m != spec.Leave {
		return mxhttp.BadJSON("membership must be leave")
	}
	if u, err := spec.NewUserID(string(ev.SenderID()), true); err != nil || u.Domain() != req.Origin {
		return mxhttp.Forbidden("the leave must come from the user's server")
	}
	outcome, err := s.engine.PersistRemote(r.Context(), req.T.Host, ev, req.Origin)
	if err != nil {
		return matrixErr(err)
	}
	if outcome == rooms.Rejected {
		return mxhttp.Forbidden("the leave is not allowed")
	}
	if err := s.forward(r.Context(), req.T, ev, req.Origin); err != nil {
		return err
	}
	return mxhttp.JSON(w, http.StatusOK, struct{}{})
}

// Events and state.

func (s *Server) getEvent(w http.ResponseWriter, r *http.Request, req *request) error {
	var row storage.EventRow
	err := req.T.Store.Tx(r.Context(), func(q pgdb.DBTX) error {
		var err error
		row, err = storage.EventByID(r.Context(), q, r.PathValue("eventID"))
		if errors.Is(err, storage.ErrNotFound) {
			return mxhttp.NotFound("unknown event")
		}
		if err != nil {
			return err
		}
		if ok, err := serverMayRead(r.Context(), q, row.RoomID, req.Origin); err != nil || !ok {
			if err != nil {
				return err
			}
			return mxhttp.Forbidden("your server is not in this room")
		}
		return nil
	})
	if err != nil {
		return err
	}
	return mxhttp.JSON(w, http.StatusOK, map[string]any{"origin": req.T.ServerName, "origin_server_ts": spec.AsTimestamp(s.now()),
		"pdus": []json.RawMessage{row.JSON}})
}

// serverMayRead: a server sees a room's events while one of its users is (or was) in it.
func serverMayRead(ctx context.Context, q pgdb.DBTX, roomID string, server spec.ServerName) (bool, error) {
	var ok bool
	err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM memberships WHERE room_id = $1 AND user_id LIKE '%:' || $2
		AND membership IN ('join', 'invite', 'leave', 'ban'))`, roomID, string(server)).Scan(&ok)
	return ok, err
}

func (s *Server) roomState(ids bool) fedHandler {
	return func(w http.ResponseWriter, r *http.Request, req *request) error {
		roomID := r.PathValue("roomID")
		eventID := r.URL.Query().Get("event_id")
		if eventID == "" {
			return mxhttp.MissingParam("event_id is required")
		}
		v, err := rooms.RoomVersion(r.Context(), req.T.Host, roomID)
		if err != nil {
			return matrixErr(err)
		}
		if err := req.T.Store.Tx(r.Context(), func(q pgdb.DBTX) error {
			ok, err := serverMayRead(r.Context(), q, roomID, req.Origin)
			if err == nil && !ok {
				return mxhttp.Forbidden("your server is not in this room")
			}
			return err
		}); err != nil {
			return err
		}
		state, chain, err := s.stateAt(r.Context(), req.T, v, eventID, true)
		if err != nil {
			return err
		}
		if !ids {
			return mxhttp.JSON(w, http.StatusOK, map[string]any{"pdus": state, "auth_chain": chain})
		}
		return mxhttp.JSON(w, http.StatusOK, map[string]any{"pdu_ids": idsOf(v, state), "auth_chain_ids": idsOf(v, chain)})
	}
}

func idsOf(v gomatrixserverlib.IRoomVersion, evs gomatrixserverlib.EventJSONs) []string {
	out := make([]string, 0, len(evs))
	for _, raw := range evs {
		if ev, err := v.NewEventFromTrustedJSON(raw, false); err == nil {
			out = append(out, ev.EventID())
		}
	}
	return out
}

func (s *Server) eventAuth(w http.ResponseWriter, r *http.Request, req *request) error {
	roomID := r.PathValue("roomID")
	v, err := rooms.RoomVersion(r.Context(), req.T.Host, roomID)
	if err != nil {
		return matrixErr(err)
	}
	var chain gomatrixserverlib.EventJSONs
	err = req.T.Store.Tx(r.Context(), func(q pgdb.DBTX) error {
		if ok, err := serverMayRead(r.Context(), q, roomID, req.Origin); err != nil || !ok {
			if err != nil {
				return err
			}
			return mxhttp.Forbidden("your server is not in this room")
		}
		row, err := storage.EventByID(r.Context(), q, r.PathValue("eventID"))
		if errors.Is(err, storage.ErrNotFound) || (err == nil && row.RoomID != roomID) {
			return mxhttp.NotFound("unknown event")
		}
		if err != nil {
			return err
		}
		ev, err := v.NewEventFromTrustedJSON(row.JSON, row.RedactedBecause != "")
		if err != nil {
			return err
		}
		chain, err = authChain(r.Context(), q, v, ev.AuthEventIDs())
		return err
	})
	if err != nil {
		return err
	}
	return mxhttp.JSON(w, http.StatusOK, map[string]any{"auth_chain": chain})
}

func (s *Server) missingEvents(w http.ResponseWriter, r *http.Request, req *request) error {
	roomID := r.PathValue("roomID")
	var body fclient.MissingEvents
	if err := decode(req, &body); err != nil {
		return err
	}
	if body.Limit <= 0 || body.Limit > 50 {
		body.Limit = 10
	}
	v, err := rooms.RoomVersion(r.Context(), req.T.Host, roomID)
	if err != nil {
		return matrixErr(err)
	}
	var out []json.RawMessage
	err = req.T.Store.Tx(r.Context(), func(q pgdb.DBTX) error {
		if ok, err := serverMayRead(r.Context(), q, roomID, req.Origin); err != nil || !ok {
			if err != nil {
				return err
			}
			return mxhttp.Forbidden("your server is not in this room")
		}
		// Walk prev_events back from latest until earliest, breadth first, up to limit.
		stop := map[string]bool{}
		for _, id := range body.EarliestEvents {
			stop[id] = true
		}
		seen := map[string]bool{}
		frontier := body.LatestEvents
		for len(frontier) > 0 && len(out) < body.Limit {
			rows, err := storage.EventsByID(r.Context(), q, frontier)
			if err != nil {
				return err
			}
			frontier = nil
			for _, row := range rows {
				if row.RoomID != roomID {
					continue
				}
				ev, err := v.NewEventFromTrustedJSON(row.JSON, row.RedactedBecause != "")
				if err != nil {
					continue
				}
				for _, p := range ev.PrevEventIDs() {
					if !stop[p] && !seen[p] {
						seen[p] = true
						frontier = append(frontier, p)
					}
				}
			}
			prevs, err := storage.EventsByID(r.Context(), q, frontier)
			if err != nil {
				return err
			}
			for _, p := range prevs {
				if len(out) < body.Limit {
					out = append(out, p.JSON)
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if out == nil {
		out = []json.RawMessage{}
	}
	return mxhttp.JSON(w, http.StatusOK, map[string]any{"events": out})
}
