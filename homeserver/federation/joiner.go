package federation

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/atoll-matrix/atoll/homeserver/clientapi"
	"github.com/atoll-matrix/atoll/homeserver/rooms"
	"github.com/atoll-matrix/atoll/homeserver/storage"
	"github.com/atoll-matrix/atoll/internal/pgdb"
)

// joinClient adapts the federation client to gomatrixserverlib's join interface.
type joinClient struct{ fc fclient.FederationClient }

func (j joinClient) MakeJoin(ctx context.Context, origin, s spec.ServerName, roomID, userID string) (gomatrixserverlib.MakeJoinResponse, error) {
	r, err := j.fc.MakeJoin(ctx, origin, s, roomID, userID)
	return &r, err
}

func (j joinClient) SendJoin(ctx context.Context, origin, s spec.ServerName, event gomatrixserverlib.PDU) (gomatrixserverlib.SendJoinResponse, error) {
	r, err := j.fc.SendJoin(ctx, origin, s, event)
	return &r, err
}

// ErrNoServer means no server could be asked to join the room.
var ErrNoServer = errors.New("no server to join the room through")

// Join makes a local user join a room this tenant is not (or no longer) in, through one of
// the given servers: make_join, send_join, and the room's state stored from the answer.
// It implements clientapi.RemoteRooms.
func (s *Server) Join(ctx context.Context, t *clientapi.Tenant, userID, roomID string, via []string, content map[string]any) error {
	user, err := spec.NewUserID(userID, true)
	if err != nil {
		return err
	}
	room, err := spec.NewRoomID(roomID)
	if err != nil {
		return err
	}
	servers := append([]string{}, via...)
	if !strings.HasPrefix(roomID, "!") || strings.Contains(roomID, ":") {
		if _, srv, ok := strings.Cut(roomID, ":"); ok {
			servers = append(servers, srv)
		}
	}
	client := s.Client(t.Host)
	var lastErr error = ErrNoServer
	tried := map[string]bool{}
	for _, srv := range servers {
		if srv == "" || srv == string(t.ServerName) || tried[srv] {
			continue
		}
		tried[srv] = true
		joinCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		resp, ferr := gomatrixserverlib.PerformJoin(joinCtx, joinClient{fc: client}, gomatrixserverlib.PerformJoinInput{
			UserID: user, RoomID: room, ServerName: spec.ServerName(srv), Content: content,
			PrivateKey: t.Key, KeyID: t.KeyID, KeyRing: s.keyRing,
			EventProvider: func(v gomatrixserverlib.RoomVersion, ids []string) ([]gomatrixserverlib.PDU, error) {
				return s.fetchEvents(joinCtx, t, spec.ServerName(srv), v, ids)
			},
			UserIDQuerier: rooms.UserIDForSender,
			GetOrCreateSenderID: func(_ context.Context, u spec.UserID, _ spec.RoomID, _ string) (spec.SenderID, ed25519.PrivateKey, error) {
				return spec.SenderID(u.String()), nil, nil
			},
			StoreSenderIDFromPublicID: func(context.Context, spec.SenderID, string, spec.RoomID) error { return nil },
		})
		cancel()
		if ferr != nil {
			lastErr = ferr
			s.log.InfoContext(ctx, "remote join failed", "tenant", t.TenantID, "room", roomID, "via", srv, "err", ferr)
			continue
		}
		v := resp.JoinEvent.Version()
		state := resp.StateSnapshot.GetStateEvents().TrustedEvents(v, false)
		chain := resp.StateSnapshot.GetAuthEvents().TrustedEvents(v, false)
		if err := s.engine.PersistJoin(ctx, t.Host, resp.JoinEvent, state, chain, spec.ServerName(srv)); err != nil {
			return fmt.Errorf("store joined room: %w", err)
		}
		return nil
	}
	return lastErr
}

// fetchEvents gets events by ID: ours first, then from the server.
func (s *Server) fetchEvents(ctx context.Context, t *clientapi.Tenant, from spec.ServerName, v gomatrixserverlib.RoomVersion, ids []string) ([]gomatrixserverlib.PDU, error) {
	verImpl, err := gomatrixserverlib.GetRoomVersion(v)
	if err != nil {
		return nil, err
	}
	var out []gomatrixserverlib.PDU
	have := map[string]bool{}
	_ = t.Store.Tx(ctx, func(q pgdb.DBTX) error {
		rows, err := storage.EventsByID(ctx, q, ids)
		for _, r := range rows {
			if ev, err := verImpl.NewEventFromTrustedJSON(r.JSON, r.RedactedBecause != ""); err == nil {
				out = append(out, ev)
				have[r.EventID] = true
			}
		}
		return err
	})
	client := s.Client(t.Host)
	for _, id := range ids {
		if have[id] {
			continue
		}
		txn, err := client.GetEvent(ctx, t.ServerName, from, id)
		if err != nil || len(txn.PDUs) == 0 {
			continue
		}
		ev, err := verImpl.NewEventFromUntrustedJSON(txn.PDUs[0])
		if err != nil || ev.EventID() != id {
			continue
		}
		if err := gomatrixserverlib.VerifyEventSignatures(ctx, ev, s.keyRing, rooms.UserIDForSender); err != nil {
			continue
		}
		out = append(out, ev)
	}
	return out, nil
}

// ResolveAlias asks the alias's server which room it names. It implements
// clientapi.RemoteRooms.
func (s *Server) ResolveAlias(ctx context.Context, t *clientapi.Tenant, alias string) (string, []string, error) {
	_, server, ok := strings.Cut(alias, ":")
	if !ok {
		return "", nil, fmt.Errorf("alias %q has no server", alias)
	}
	resp, err := s.Client(t.Host).LookupRoomAlias(ctx, t.ServerName, spec.ServerName(server), alias)
	if err != nil {
		return "", nil, err
	}
	servers := make([]string, 0, len(resp.Servers))
	for _, srv := range resp.Servers {
		servers = append(servers, string(srv))
	}
	return resp.RoomID, servers, nil
}

// QueryProfile asks a user's server for their profile. It implements clientapi.RemoteRooms.
func (s *Server) QueryProfile(ctx context.Context, t *clientapi.Tenant, userID, field string) (map[string]string, error) {
	u, err := spec.NewUserID(userID, true)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	p, err := s.Client(t.Host).LookupProfile(ctx, t.ServerName, u.Domain(), userID, field)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	if p.DisplayName != "" && (field == "" || field == "displayname") {
		out["displayname"] = p.DisplayName
	}
	if p.AvatarURL != "" && (field == "" || field == "avatar_url") {
		out["avatar_url"] = p.AvatarURL
	}
	return out, nil
}
