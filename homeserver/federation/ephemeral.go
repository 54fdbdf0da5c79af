package federation

import (
	"context"
	"encoding/json"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/atoll-matrix/atoll/homeserver/clientapi"
	"github.com/atoll-matrix/atoll/internal/pgdb"
)

// otherServers lists the servers with joined members in a room, this tenant excluded.
func (s *Server) otherServers(ctx context.Context, t *clientapi.Tenant, roomID string) ([]string, error) {
	var out []string
	err := t.Store.Tx(ctx, func(q pgdb.DBTX) error {
		servers, err := roomServers(ctx, q, roomID)
		for _, srv := range servers {
			if srv != string(t.ServerName) {
				out = append(out, srv)
			}
		}
		return err
	})
	return out, err
}

func (s *Server) sendEDU(ctx context.Context, t *clientapi.Tenant, roomID, typ string, content any) error {
	dests, err := s.otherServers(ctx, t, roomID)
	if err != nil || len(dests) == 0 {
		return err
	}
	b, err := json.Marshal(content)
	if err != nil {
		return err
	}
	return s.EnqueueEDU(ctx, t.Host, dests, gomatrixserverlib.EDU{Type: typ, Origin: string(t.ServerName), Content: b})
}

// Typing sends an m.typing EDU to the room's other servers. It implements
// clientapi.RemoteEphemeral.
func (s *Server) Typing(ctx context.Context, t *clientapi.Tenant, roomID, userID string, typing bool, _ time.Duration) error {
	return s.sendEDU(ctx, t, roomID, spec.MTyping, map[string]any{"room_id": roomID, "user_id": userID, "typing": typing})
}

// Receipt sends an m.receipt EDU (m.read) to the room's other servers.
func (s *Server) Receipt(ctx context.Context, t *clientapi.Tenant, roomID, userID, eventID, threadID string, ts int64) error {
	data := map[string]any{"ts": ts}
	if threadID != "" {
		data["thread_id"] = threadID
	}
	return s.sendEDU(ctx, t, roomID, spec.MReceipt, map[string]any{
		roomID: map[string]any{"m.read": map[string]any{userID: map[string]any{"data": data, "event_ids": []string{eventID}}}},
	})
}
