package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/matrix-org/gomatrix"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/atoll-matrix/atoll/homeserver/clientapi"
	"github.com/atoll-matrix/atoll/homeserver/rooms"
	"github.com/atoll-matrix/atoll/homeserver/storage"
	"github.com/atoll-matrix/atoll/internal/mxhttp"
	"github.com/atoll-matrix/atoll/internal/pgdb"
)

// This file holds the federation endpoints around rooms one is not (yet) in: knocking, the
// space hierarchy, the public room directory and timestamp_to_event, each with the client
// side clientapi.RemoteDirectory asks for.

var _ clientapi.RemoteDirectory = (*Server)(nil)

// Knocking, resident side.

func (s *Server) makeKnock(w http.ResponseWriter, r *http.Request, req *request) error {
	roomID, err := spec.NewRoomID(r.PathValue("roomID"))
	if err != nil {
		return mxhttp.InvalidParam("invalid room ID")
	}
	user, err := spec.NewUserID(r.PathValue("userID"), true)
	if err != nil {
		return mxhttp.InvalidParam("invalid user ID")
	}
	if user.Domain() != req.Origin {
		return mxhttp.Forbidden("the user is not on the requesting server")
	}
	v, err := rooms.RoomVersion(r.Context(), req.T.Host, roomID.String())
	if err != nil {
		return matrixErr(err)
	}
	supported := false
	for _, rv := range supportedVersions(r) {
		supported = supported || rv == v.Version()
	}
	if !supported {
		return &mxhttp.Error{Status: http.StatusBadRequest, Body: spec.IncompatibleRoomVersionError{
			MatrixError: spec.MatrixError{ErrCode: spec.ErrorIncompatibleRoomVersion, Err: "your server does not support the room's version"},
			RoomVersion: string(v.Version())}}
	}
	in, err := querier{t: req.T}.serverInRoom(r.Context(), roomID.String())
	if err != nil {
		return err
	}
	if !in {
		return mxhttp.NotFound("this server is not in the room")
	}
	content, err := json.Marshal(map[string]string{"membership": spec.Knock})
	if err != nil {
		return err
	}
	sk := user.String()
	proto := &gomatrixserverlib.ProtoEvent{SenderID: sk, RoomID: roomID.String(), Type: spec.MRoomMember, StateKey: &sk, Content: content}
	ev, authState, err := s.engine.Template(r.Context(), req.T.Host, proto)
	if err != nil {
		return matrixErr(err)
	}
	// The template must pass the auth rules: the join rule allows knocking, the user is
	// neither joined nor banned.
	provider, err := gomatrixserverlib.NewAuthEvents(authState)
	if err != nil {
		return err
	}
	if err := gomatrixserverlib.Allowed(ev, provider, rooms.UserIDForSender); err != nil {
		return mxhttp.Forbidden("you may not knock on this room")
	}
	return mxhttp.JSON(w, http.StatusOK, map[string]any{"event": proto, "room_version": v.Version()})
}

func (s *Server) sendKnock(w http.ResponseWriter, r *http.Request, req *request) error {
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
		return mxhttp.BadJSON("invalid knock event: %v", err)
	}
	if ev.RoomID().String() != roomID.String() || ev.EventID() != r.PathValue("eventID") || ev.Type() != spec.MRoomMember ||
		ev.StateKey() == nil || *ev.StateKey() != string(ev.SenderID()) {
		return mxhttp.BadJSON("not a knock of the sender for this room")
	}
	if m, _ := ev.Membership(); m != spec.Knock {
		return mxhttp.BadJSON("membership must be knock")
	}
	if u, err := spec.NewUserID(string(ev.SenderID()), true); err != nil || u.Domain() != req.Origin {
		return mxhttp.Forbidden("the knock must come from the user's server")
	}
	outcome, err := s.engine.PersistRemote(r.Context(), req.T.Host, ev, req.Origin)
	if err != nil {
		return matrixErr(err)
	}
	if outcome == rooms.Rejected || outcome == rooms.SoftFailed {
		return mxhttp.Forbidden("the knock is not allowed in this room")
	}
	if err := s.forward(r.Context(), req.T, ev, req.Origin); err != nil {
		return err
	}
	state, err := s.inviteState(r.Context(), req.T, v.Version(), roomID.String(), string(ev.SenderID()))
	if err != nil {
		return err
	}
	if state == nil {
		state = []gomatrixserverlib.InviteStrippedState{}
	}
	return mxhttp.JSON(w, http.StatusOK, fclient.RespSendKnock{KnockRoomState: state})
}

// Knocking, knocking side.

// Knock makes a local user knock on a room of another server: make_knock, the template
// checked to be our user's knock, signed and sent back with send_knock. The knock and the
// room's stripped state are kept for the user's /sync. It implements
// clientapi.RemoteDirectory.
func (s *Server) Knock(ctx context.Context, t *clientapi.Tenant, userID, roomID string, via []string, reason string) error {
	versions := make([]gomatrixserverlib.RoomVersion, 0, 8)
	for v, impl := range gomatrixserverlib.RoomVersions() {
		if impl.CheckKnockingAllowed(string(v), userID, userID, spec.Knock, spec.Leave) == nil {
			versions = append(versions, v)
		}
	}
	client := s.Client(t.Host)
	var lastErr error = ErrNoServer
	tried := map[string]bool{}
	for _, srv := range via {
		if srv == "" || srv == string(t.ServerName) || tried[srv] {
			continue
		}
		tried[srv] = true
		err := s.knockThrough(ctx, t, client, spec.ServerName(srv), userID, roomID, versions, reason)
		if err == nil {
			return nil
		}
		lastErr = err
		s.log.InfoContext(ctx, "remote knock failed", "tenant", t.TenantID, "via", srv, "err", err)
	}
	return refusedKnock(lastErr)
}

// refusedKnock keeps the resident server's refusal (its Matrix error, its words) a 403 for
// the client; other failures stay errors.
func refusedKnock(err error) error {
	var he gomatrix.HTTPError
	if !errors.As(err, &he) || he.Code != http.StatusForbidden {
		return err
	}
	msg := "the room's server refused the knock"
	var me spec.MatrixError
	if json.Unmarshal(he.Contents, &me) == nil && me.ErrCode != "" {
		msg = fmt.Sprintf("the room's server refused the knock: %s %s", me.ErrCode, truncateMsg(me.Err, 200))
	}
	return &mxhttp.Error{Status: http.StatusForbidden, Body: spec.Forbidden(msg), Err: err}
}

func (s *Server) knockThrough(ctx context.Context, t *clientapi.Tenant, client fclient.FederationClient, srv spec.ServerName, userID, roomID string,
	versions []gomatrixserverlib.RoomVersion, reason string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*inviteTimeout)
	defer cancel()
	tmpl, err := client.MakeKnock(ctx, t.ServerName, srv, roomID, userID, versions)
	if err != nil {
		return fmt.Errorf("make_knock: %w", err)
	}
	verImpl, err := gomatrixserverlib.GetRoomVersion(tmpl.RoomVersion)
	if err != nil {
		return fmt.Errorf("make_knock room version: %w", err)
	}
	proto := tmpl.KnockEvent
	var content map[string]any
	if err := json.Unmarshal(proto.Content, &content); err != nil || content == nil {
		return errors.New("make_knock returned a template without content")
	}
	if proto.Type != spec.MRoomMember || proto.StateKey == nil || *proto.StateKey != userID || proto.SenderID != userID ||
		proto.RoomID != roomID || content["membership"] != spec.Knock {
		return errors.New("make_knock returned a template that is not our user's knock")
	}
	if reason != "" {
		content["reason"] = reason
		if proto.Content, err = json.Marshal(content); err != nil {
			return err
		}
	}
	ev, err := verImpl.NewEventBuilderFromProtoEvent(&proto).Build(s.now(), t.ServerName, t.KeyID, t.Key)
	if err != nil {
		return fmt.Errorf("build knock: %w", err)
	}
	resp, err := client.SendKnock(ctx, t.ServerName, srv, ev)
	if err != nil {
		return fmt.Errorf("send_knock: %w", err)
	}
	// What the knocker's client sees of the room: the resident's stripped state, sanitized
	// like an invite's, and the knock itself.
	raws := make([]json.RawMessage, 0, len(resp.KnockRoomState))
	for _, st := range resp.KnockRoomState {
		if b, err := json.Marshal(st); err == nil {
			raws = append(raws, b)
		}
	}
	state := sanitizeInviteState(raws)
	state = append(state, strippedEvent{Type: ev.Type(), StateKey: ev.StateKey(), Sender: userID, Content: json.RawMessage(ev.Content())})
	stateJSON, err := json.Marshal(state)
	if err != nil {
		return err
	}
	err = t.Store.Tx(ctx, func(q pgdb.DBTX) error {
		_, err := storage.PutRemoteKnock(ctx, q, storage.RemoteKnock{RoomID: roomID, UserID: userID, EventID: ev.EventID(),
			Origin: string(srv), RoomVersion: string(verImpl.Version()), EventJSON: ev.JSON(), KnockState: stateJSON})
		return err
	})
	if err != nil {
		return err
	}
	if s.notify != nil {
		s.notify(t.TenantID)
	}
	return nil
}

// WithdrawKnock retracts a local user's knock on a room of another server: make_leave and
// send_leave through the server that took the knock (or the room ID's server). The knock is
// dropped here even when no server accepts the leave. It implements
// clientapi.RemoteDirectory.
func (s *Server) WithdrawKnock(ctx context.Context, t *clientapi.Tenant, roomID, userID string) error {
	var k storage.RemoteInvite
	err := t.Store.Tx(ctx, func(q pgdb.DBTX) error {
		var err error
		k, err = storage.PendingRemoteKnock(ctx, q, roomID, userID)
		return err
	})
	if errors.Is(err, storage.ErrNotFound) {
		return mxhttp.Forbidden("you have not knocked on this room")
	}
	if err != nil {
		return err
	}
	servers := []string{k.Origin}
	if _, srv, ok := strings.Cut(roomID, ":"); ok && srv != k.Origin {
		servers = append(servers, srv)
	}
	var leave *storage.RemoteLeave
	for _, srv := range servers {
		ev, err := s.leaveThrough(ctx, t, k, spec.ServerName(srv))
		if err != nil {
			s.log.InfoContext(ctx, "knock withdrawal not delivered", "tenant", t.TenantID, "via", srv, "err", err)
			continue
		}
		leave = &storage.RemoteLeave{EventID: ev.EventID(), JSON: ev.JSON(), OriginServerTS: int64(ev.OriginServerTS())}
		break
	}
	err = t.Store.Tx(ctx, func(q pgdb.DBTX) error {
		_, err := storage.WithdrawRemoteKnock(ctx, q, roomID, userID, leave)
		if errors.Is(err, storage.ErrNotFound) {
			return nil // answered meanwhile
		}
		return err
	})
	if err != nil {
		return err
	}
	if s.notify != nil {
		s.notify(t.TenantID)
	}
	return nil
}

// Space hierarchy.

// hierarchyResponse is the federation hierarchy answer in clientapi's types.
type hierarchyResponse struct {
	Room                 clientapi.SpaceRoom   `json:"room"`
	Children             []clientapi.SpaceRoom `json:"children"`
	InaccessibleChildren []string              `json:"inaccessible_children"`
}

func (s *Server) hierarchy(w http.ResponseWriter, r *http.Request, req *request) error {
	roomID := r.PathValue("roomID")
	if _, err := spec.NewRoomID(roomID); err != nil {
		return mxhttp.InvalidParam("invalid room ID")
	}
	suggestedOnly := r.URL.Query().Get("suggested_only") == "true"
	who := clientapi.SpaceAccess{Server: req.Origin}
	room, ok, accessible, err := clientapi.LocalSpaceRoom(r.Context(), req.T, roomID, suggestedOnly, who)
	if err != nil {
		return err
	}
	if !ok || !accessible {
		return mxhttp.NotFound("unknown room")
	}
	resp := hierarchyResponse{Room: room, Children: []clientapi.SpaceRoom{}, InaccessibleChildren: []string{}}
	for _, c := range room.ChildrenState {
		child, ok, accessible, err := clientapi.LocalSpaceRoom(r.Context(), req.T, c.StateKey, suggestedOnly, who)
		if err != nil {
			return err
		}
		switch {
		case ok && accessible:
			resp.Children = append(resp.Children, child)
		case ok:
			resp.InaccessibleChildren = append(resp.InaccessibleChildren, c.StateKey)
		}
	}
	return mxhttp.JSON(w, http.StatusOK, resp)
}

// Hierarchy asks the servers in turn for a room's summary and children. It implements
// clientapi.RemoteDirectory.
func (s *Server) Hierarchy(ctx context.Context, t *clientapi.Tenant, roomID string, via []string, suggestedOnly bool) (clientapi.RemoteHierarchy, error) {
	path := "/_matrix/federation/v1/hierarchy/" + url.PathEscape(roomID)
	if suggestedOnly {
		path += "?suggested_only=true"
	}
	var lastErr error = ErrNoServer
	for _, srv := range dedupeServers(t, via) {
		callCtx, cancel := context.WithTimeout(ctx, inviteTimeout)
		var resp hierarchyResponse
		err := s.fedRequest(callCtx, t, srv, http.MethodGet, path, nil, &resp)
		cancel()
		if err != nil {
			lastErr = err
			continue
		}
		return clientapi.RemoteHierarchy{Room: resp.Room, Children: resp.Children, Inaccessible: resp.InaccessibleChildren}, nil
	}
	return clientapi.RemoteHierarchy{}, lastErr
}

func dedupeServers(t *clientapi.Tenant, servers []string) []string {
	seen := map[string]bool{string(t.ServerName): true, "": true}
	out := make([]string, 0, len(servers))
	for _, s := range servers {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// Public room directory.

func (s *Server) publicRooms(w http.ResponseWriter, r *http.Request, req *request) error {
	pq := clientapi.PublicRoomsQuery{Limit: 100}
	if r.Method == http.MethodPost {
		var body struct {
			Limit  int    `json:"limit"`
			Since  string `json:"since"`
			Filter struct {
				GenericSearchTerm string `json:"generic_search_term"`
			} `json:"filter"`
		}
		if err := decode(req, &body); err != nil {
			return err
		}
		if body.Limit > 0 {
			pq.Limit = body.Limit
		}
		pq.Since, pq.Filter = body.Since, body.Filter.GenericSearchTerm
	} else {
		if l := r.URL.Query().Get("limit"); l != "" {
			n, err := strconv.Atoi(l)
			if err != nil || n < 1 {
				return mxhttp.InvalidParam("limit must be a positive integer")
			}
			pq.Limit = n
		}
		pq.Since = r.URL.Query().Get("since")
	}
	page, err := clientapi.PublicRooms(r.Context(), req.T, pq)
	if err != nil {
		return err
	}
	return mxhttp.JSON(w, http.StatusOK, page)
}

// PublicRooms asks server for a page of its public room directory. It implements
// clientapi.RemoteDirectory.
func (s *Server) PublicRooms(ctx context.Context, t *clientapi.Tenant, server string, pq clientapi.PublicRoomsQuery) (clientapi.PublicRoomsPage, error) {
	body := map[string]any{}
	if pq.Limit > 0 {
		body["limit"] = pq.Limit
	}
	if pq.Since != "" {
		body["since"] = pq.Since
	}
	if pq.Filter != "" {
		body["filter"] = map[string]string{"generic_search_term": pq.Filter}
	}
	ctx, cancel := context.WithTimeout(ctx, inviteTimeout)
	defer cancel()
	var page clientapi.PublicRoomsPage
	if err := s.fedRequest(ctx, t, server, http.MethodPost, "/_matrix/federation/v1/publicRooms", body, &page); err != nil {
		return clientapi.PublicRoomsPage{}, err
	}
	return page, nil
}

// timestamp_to_event.

func (s *Server) timestampToEvent(w http.ResponseWriter, r *http.Request, req *request) error {
	roomID := r.PathValue("roomID")
	ts, dir, err := clientapi.ParseTimestampQuery(r)
	if err != nil {
		return err
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
	id, evTS, ok, err := clientapi.ClosestEvent(r.Context(), req.T, roomID, ts, dir)
	if err != nil {
		return err
	}
	if !ok {
		return mxhttp.NotFound("no event found in that direction")
	}
	return mxhttp.JSON(w, http.StatusOK, map[string]any{"event_id": id, "origin_server_ts": evTS})
}

// TimestampToEvent asks the servers in turn for the event closest to ts. It implements
// clientapi.RemoteDirectory.
func (s *Server) TimestampToEvent(ctx context.Context, t *clientapi.Tenant, roomID string, servers []string, ts int64, dir string) (string, int64, error) {
	path := "/_matrix/federation/v1/timestamp_to_event/" + url.PathEscape(roomID) + "?ts=" + strconv.FormatInt(ts, 10) + "&dir=" + url.QueryEscape(dir)
	var lastErr error = ErrNoServer
	for _, srv := range dedupeServers(t, servers) {
		callCtx, cancel := context.WithTimeout(ctx, inviteTimeout)
		var resp struct {
			EventID        string `json:"event_id"`
			OriginServerTS int64  `json:"origin_server_ts"`
		}
		err := s.fedRequest(callCtx, t, srv, http.MethodGet, path, nil, &resp)
		cancel()
		if err != nil {
			lastErr = err
			continue
		}
		if resp.EventID == "" {
			lastErr = fmt.Errorf("%s answered without an event", srv)
			continue
		}
		return resp.EventID, resp.OriginServerTS, nil
	}
	return "", 0, lastErr
}
