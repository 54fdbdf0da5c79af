package federation

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

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

// Limits on the stripped state an inviting server sends with an invite.
const (
	maxInviteStateEvents  = 50
	maxInviteStateContent = 65536
)

// inviteTimeout bounds one round trip of the invite, make_leave or send_leave APIs.
const inviteTimeout = 30 * time.Second

// strippedStateTypes are the state events an invitee sees of a room before joining it.
var strippedStateTypes = []string{spec.MRoomCreate, spec.MRoomJoinRules, spec.MRoomName, "m.room.avatar",
	spec.MRoomCanonicalAlias, "m.room.encryption"}

// Invite invites another server's user to a room of this tenant: the invite is built on the
// room's head without being stored, signed by the invitee's server through the invite API,
// checked to be the same event with both signatures, then stored and queued for the room's
// other servers. It implements clientapi.RemoteRooms. The invitee's server refusing (or
// being unreachable) is a 403 for the client.
func (s *Server) Invite(ctx context.Context, t *clientapi.Tenant, roomID, sender, target string, content map[string]any) error {
	invitee, err := spec.NewUserID(target, true)
	if err != nil {
		return mxhttp.InvalidParam("invalid user_id")
	}
	body, err := json.Marshal(content)
	if err != nil {
		return fmt.Errorf("encode invite content: %w", err)
	}
	ev, err := s.engine.Build(ctx, t.Host, rooms.Request{RoomID: roomID, Sender: sender, Type: spec.MRoomMember, StateKey: &target, Content: body})
	if err != nil {
		return err
	}
	state, err := s.inviteState(ctx, t, ev.Version(), roomID, sender)
	if err != nil {
		return err
	}
	req, err := fclient.NewInviteV2Request(ev, state)
	if err != nil {
		return fmt.Errorf("invite request: %w", err)
	}
	callCtx, cancel := context.WithTimeout(ctx, inviteTimeout)
	resp, err := s.Client(t.Host).SendInviteV2(callCtx, t.ServerName, invitee.Domain(), req)
	cancel()
	if err != nil {
		return refusedBy(invitee.Domain(), err)
	}
	signed, err := s.checkSignedInvite(ctx, ev, resp.Event)
	if err != nil {
		return &mxhttp.Error{Status: http.StatusForbidden,
			Body: spec.Forbidden(fmt.Sprintf("%s returned an invalid signed invite", invitee.Domain())), Err: err}
	}
	outcome, err := s.engine.PersistSigned(ctx, t.Host, signed)
	if err != nil {
		return fmt.Errorf("store invite %s: %w", signed.EventID(), err)
	}
	if outcome == rooms.Rejected {
		return &rooms.ForbiddenError{Reason: "the invite is no longer allowed in this room"}
	}
	s.Wake()
	return nil
}

// refusedBy turns a failed invite request into the client's 403, keeping the invitee
// server's Matrix error code and message (its words, not ours) when it sent one.
func refusedBy(server spec.ServerName, err error) error {
	msg := fmt.Sprintf("%s could not be reached to sign the invite", server)
	var he gomatrix.HTTPError
	if errors.As(err, &he) {
		var me spec.MatrixError
		if json.Unmarshal(he.Contents, &me) == nil && me.ErrCode != "" {
			msg = fmt.Sprintf("%s refused the invite: %s %s", server, me.ErrCode, truncateMsg(me.Err, 200))
		} else {
			msg = fmt.Sprintf("%s refused the invite (HTTP %d)", server, he.Code)
		}
	}
	return &mxhttp.Error{Status: http.StatusForbidden, Body: spec.Forbidden(msg), Err: err}
}

func truncateMsg(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// checkSignedInvite accepts the invitee server's answer only if it is our event (same ID,
// same fields apart from signatures and unsigned data) signed by both servers.
func (s *Server) checkSignedInvite(ctx context.Context, sent gomatrixserverlib.PDU, raw []byte) (gomatrixserverlib.PDU, error) {
	verImpl, err := gomatrixserverlib.GetRoomVersion(sent.Version())
	if err != nil {
		return nil, err
	}
	signed, err := verImpl.NewEventFromUntrustedJSON(raw)
	if err != nil {
		return nil, fmt.Errorf("parse signed invite: %w", err)
	}
	if signed.EventID() != sent.EventID() {
		return nil, fmt.Errorf("signed invite has event ID %s, sent %s", signed.EventID(), sent.EventID())
	}
	a, err := withoutSignatures(sent.JSON())
	if err != nil {
		return nil, err
	}
	b, err := withoutSignatures(signed.JSON())
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(a, b) {
		return nil, errors.New("signed invite differs from the event sent")
	}
	// Both the sender's server (us) and the invitee's server must have signed it.
	if err := gomatrixserverlib.VerifyEventSignatures(ctx, signed, s.keyRing, rooms.UserIDForSender); err != nil {
		return nil, fmt.Errorf("verify signed invite: %w", err)
	}
	return signed, nil
}

// withoutSignatures is an event's canonical JSON without its signatures and unsigned data.
func withoutSignatures(ev []byte) ([]byte, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(ev, &m); err != nil {
		return nil, fmt.Errorf("decode event: %w", err)
	}
	delete(m, "signatures")
	delete(m, "unsigned")
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	return gomatrixserverlib.CanonicalJSON(b)
}

// inviteState is the stripped state sent with an invite: the room's identifying state and
// the inviter's membership.
func (s *Server) inviteState(ctx context.Context, t *clientapi.Tenant, version gomatrixserverlib.RoomVersion, roomID, inviter string) ([]gomatrixserverlib.InviteStrippedState, error) {
	verImpl, err := gomatrixserverlib.GetRoomVersion(version)
	if err != nil {
		return nil, err
	}
	tuples := make([]storage.StateKeyTuple, 0, len(strippedStateTypes)+1)
	for _, typ := range strippedStateTypes {
		tuples = append(tuples, storage.StateKeyTuple{Type: typ})
	}
	tuples = append(tuples, storage.StateKeyTuple{Type: spec.MRoomMember, StateKey: inviter})
	var out []gomatrixserverlib.InviteStrippedState
	err = t.Store.Tx(ctx, func(q pgdb.DBTX) error {
		rows, err := storage.CurrentStateEvents(ctx, q, roomID, tuples)
		if err != nil {
			return err
		}
		for _, r := range rows {
			ev, err := verImpl.NewEventFromTrustedJSON(r.JSON, r.RedactedBecause != "")
			if err != nil {
				return fmt.Errorf("load state event %s: %w", r.EventID, err)
			}
			out = append(out, gomatrixserverlib.NewInviteStrippedState(ev))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("invite state of %s: %w", roomID, err)
	}
	return out, nil
}

// inviteRequest is the body of PUT /_matrix/federation/v2/invite/{roomID}/{eventID}.
type inviteRequest struct {
	RoomVersion     gomatrixserverlib.RoomVersion `json:"room_version"`
	Event           json.RawMessage               `json:"event"`
	InviteRoomState []json.RawMessage             `json:"invite_room_state"`
}

// strippedEvent is one event of an invite's stripped state, as clients see it.
type strippedEvent struct {
	Type     string          `json:"type"`
	StateKey *string         `json:"state_key"`
	Sender   string          `json:"sender"`
	Content  json.RawMessage `json:"content"`
}

// invite handles the invited side of the invite API: the event must be an invite of one of
// this tenant's users, sent by a user of the requesting server and signed by it, in a room
// version we support. We sign it, keep it (with the stripped state) for the invitee's /sync
// and return it.
func (s *Server) invite(w http.ResponseWriter, r *http.Request, req *request) error {
	var body inviteRequest
	if err := decode(req, &body); err != nil {
		return err
	}
	verImpl, err := gomatrixserverlib.GetRoomVersion(body.RoomVersion)
	if err != nil {
		return &mxhttp.Error{Status: http.StatusBadRequest, Body: spec.IncompatibleRoomVersionError{
			MatrixError: spec.MatrixError{ErrCode: spec.ErrorIncompatibleRoomVersion, Err: "this server does not support the room's version"},
			RoomVersion: string(body.RoomVersion)}}
	}
	if len(body.Event) == 0 {
		return mxhttp.BadJSON("the request has no event")
	}
	if len(body.Event) > 65536 {
		return mxhttp.BadJSON("event exceeds 65536 bytes")
	}
	ev, err := verImpl.NewEventFromUntrustedJSON(body.Event)
	if err != nil {
		return mxhttp.BadJSON("invalid invite event: %v", err)
	}
	if ev.RoomID().String() != r.PathValue("roomID") || ev.EventID() != r.PathValue("eventID") {
		return mxhttp.BadJSON("the room and event IDs of the path and the event differ")
	}
	if ev.Type() != spec.MRoomMember || ev.StateKey() == nil {
		return mxhttp.BadJSON("not a membership event")
	}
	if m, err := ev.Membership(); err != nil || m != spec.Invite {
		return mxhttp.BadJSON("membership must be invite")
	}
	invitee, err := spec.NewUserID(*ev.StateKey(), true)
	if err != nil {
		return mxhttp.BadJSON("invalid state_key")
	}
	if invitee.Domain() != req.T.ServerName {
		return mxhttp.Forbidden("the invited user is not on this server")
	}
	sender, err := spec.NewUserID(string(ev.SenderID()), true)
	if err != nil || sender.Domain() != req.Origin {
		return mxhttp.Forbidden("the invite must come from the inviting user's server")
	}
	redacted, err := verImpl.RedactEventJSON(ev.JSON())
	if err != nil {
		return mxhttp.BadJSON("the event cannot be redacted: %v", err)
	}
	results, err := s.keyRing.VerifyJSONs(r.Context(), []gomatrixserverlib.VerifyJSONRequest{{
		ServerName: req.Origin, Message: redacted, AtTS: ev.OriginServerTS(), ValidityCheckingFunc: verImpl.SignatureValidityCheck,
	}})
	if err != nil {
		return fmt.Errorf("verify invite signature: %w", err)
	}
	if len(results) != 1 || results[0].Error != nil {
		s.fed.pdus.WithLabelValues("invalid").Inc()
		return mxhttp.Forbidden("the invite is not signed by the server it comes from")
	}
	state := sanitizeInviteState(body.InviteRoomState)
	// The invitee's own membership completes what clients show of the invite.
	state = append(state, strippedEvent{Type: ev.Type(), StateKey: ev.StateKey(), Sender: string(ev.SenderID()), Content: json.RawMessage(ev.Content())})
	stateJSON, err := json.Marshal(state)
	if err != nil {
		return fmt.Errorf("encode invite state: %w", err)
	}
	signed := ev.Sign(string(req.T.ServerName), req.T.KeyID, req.T.Key)
	err = req.T.Store.Tx(r.Context(), func(q pgdb.DBTX) error {
		u, err := storage.GetUser(r.Context(), q, invitee.Local())
		if errors.Is(err, storage.ErrNotFound) || (err == nil && u.Deactivated) {
			return mxhttp.Forbidden("the invited user does not exist")
		}
		if err != nil {
			return err
		}
		cur, err := storage.CurrentState(r.Context(), q, ev.RoomID().String(), []storage.StateKeyTuple{{Type: spec.MRoomMember, StateKey: invitee.String()}})
		if err != nil {
			return err
		}
		if len(cur) == 1 && (cur[0].Membership == spec.Join || cur[0].Membership == spec.Ban) {
			return mxhttp.Forbidden("the invited user is already in the room or banned from it")
		}
		_, err = storage.PutRemoteInvite(r.Context(), q, storage.RemoteInvite{
			RoomID: ev.RoomID().String(), UserID: invitee.String(), EventID: ev.EventID(), Sender: sender.String(),
			Origin: string(req.Origin), RoomVersion: string(verImpl.Version()), EventJSON: signed.JSON(), InviteState: stateJSON,
		})
		return err
	})
	if err != nil {
		return err
	}
	if s.notify != nil {
		s.notify(req.T.TenantID)
	}
	return mxhttp.JSON(w, http.StatusOK, fclient.RespInviteV2{Event: signed.JSON()})
}

// sanitizeInviteState keeps the well-formed stripped state events the inviting server sent,
// re-encoded with only the fields clients see.
func sanitizeInviteState(raw []json.RawMessage) []strippedEvent {
	out := make([]strippedEvent, 0, len(raw)+1)
	for _, r := range raw {
		if len(out) == maxInviteStateEvents {
			break
		}
		var e strippedEvent
		if json.Unmarshal(r, &e) != nil || e.Type == "" || e.StateKey == nil || len(e.Content) > maxInviteStateContent {
			continue
		}
		if c := bytes.TrimSpace(e.Content); len(c) == 0 || c[0] != '{' {
			continue
		}
		out = append(out, e)
	}
	return out
}

// RejectInvite rejects a local user's invite to a room on another server: make_leave and
// send_leave through the inviting server (or the room ID's server). The invite is dropped
// here even when no server accepts the leave, as the spec allows. It implements
// clientapi.RemoteRooms.
func (s *Server) RejectInvite(ctx context.Context, t *clientapi.Tenant, roomID, userID string) error {
	var inv storage.RemoteInvite
	err := t.Store.Tx(ctx, func(q pgdb.DBTX) error {
		var err error
		inv, err = storage.PendingRemoteInvite(ctx, q, roomID, userID)
		return err
	})
	if errors.Is(err, storage.ErrNotFound) {
		return mxhttp.Forbidden("you are not invited to this room")
	}
	if err != nil {
		return err
	}
	servers := []string{inv.Origin}
	if _, srv, ok := strings.Cut(roomID, ":"); ok && srv != inv.Origin {
		servers = append(servers, srv)
	}
	var leave *storage.RemoteLeave
	for _, srv := range servers {
		ev, err := s.leaveThrough(ctx, t, inv, spec.ServerName(srv))
		if err != nil {
			s.log.InfoContext(ctx, "invite rejection not delivered", "tenant", t.TenantID, "room", roomID, "via", srv, "err", err)
			continue
		}
		leave = &storage.RemoteLeave{EventID: ev.EventID(), JSON: ev.JSON(), OriginServerTS: int64(ev.OriginServerTS())}
		break
	}
	err = t.Store.Tx(ctx, func(q pgdb.DBTX) error {
		_, err := storage.RejectRemoteInvite(ctx, q, roomID, userID, leave)
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

// leaveThrough asks server for a leave template, signs it and sends it back.
func (s *Server) leaveThrough(ctx context.Context, t *clientapi.Tenant, inv storage.RemoteInvite, server spec.ServerName) (gomatrixserverlib.PDU, error) {
	if server == "" || server == t.ServerName {
		return nil, ErrNoServer
	}
	ctx, cancel := context.WithTimeout(ctx, 2*inviteTimeout)
	defer cancel()
	client := s.Client(t.Host)
	tmpl, err := client.MakeLeave(ctx, t.ServerName, server, inv.RoomID, inv.UserID)
	if err != nil {
		return nil, fmt.Errorf("make_leave: %w", err)
	}
	version := tmpl.RoomVersion
	if version == "" {
		version = gomatrixserverlib.RoomVersion(inv.RoomVersion)
	}
	verImpl, err := gomatrixserverlib.GetRoomVersion(version)
	if err != nil {
		return nil, err
	}
	proto := tmpl.LeaveEvent
	var content struct {
		Membership string `json:"membership"`
	}
	_ = json.Unmarshal(proto.Content, &content)
	if proto.Type != spec.MRoomMember || proto.StateKey == nil || *proto.StateKey != inv.UserID || proto.SenderID != inv.UserID ||
		proto.RoomID != inv.RoomID || content.Membership != spec.Leave {
		return nil, errors.New("make_leave returned a template that is not our user's leave")
	}
	ev, err := verImpl.NewEventBuilderFromProtoEvent(&proto).Build(s.now(), t.ServerName, t.KeyID, t.Key)
	if err != nil {
		return nil, fmt.Errorf("build leave: %w", err)
	}
	if err := client.SendLeave(ctx, t.ServerName, server, ev); err != nil {
		return nil, fmt.Errorf("send_leave: %w", err)
	}
	return ev, nil
}
