package federation

import (
	"context"
	"encoding/json"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/atoll-matrix/atoll/homeserver/clientapi"
	"github.com/atoll-matrix/atoll/homeserver/presence"
	"github.com/atoll-matrix/atoll/internal/pgdb"
)

// maxPresencePush bounds the entries applied from one m.presence EDU.
const maxPresencePush = 500

// userServers lists the other servers with joined members in the rooms a user has joined.
func userServers(ctx context.Context, q pgdb.DBTX, userID, self string) ([]string, error) {
	rows, err := q.Query(ctx, `SELECT DISTINCT substr(o.state_key, strpos(o.state_key, ':') + 1) FROM current_state m
		JOIN current_state o ON o.room_id = m.room_id AND o.type = 'm.room.member' AND o.membership = 'join'
		WHERE m.type = 'm.room.member' AND m.state_key = $1 AND m.membership = 'join'`, userID)
	if err != nil {
		return nil, err
	}
	all, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	out := all[:0]
	for _, s := range all {
		if s != self {
			out = append(out, s)
		}
	}
	return out, nil
}

// SendPresence sends local users' presence changes of tenant t as m.presence EDUs to the
// servers sharing a room with each user: one EDU per destination carrying every user it
// shares a room with.
func (s *Server) SendPresence(ctx context.Context, t *clientapi.Tenant, updates []presence.Update) error {
	byDest := map[string][]any{}
	now := time.Now()
	err := t.Store.Tx(ctx, func(q pgdb.DBTX) error {
		for _, u := range updates {
			dests, err := userServers(ctx, q, u.Status.UserID, string(t.ServerName))
			if err != nil {
				return err
			}
			for _, d := range dests {
				byDest[d] = append(byDest[d], u.Status.Content(now, true))
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for dest, push := range byDest {
		b, err := json.Marshal(map[string]any{"push": push})
		if err != nil {
			return err
		}
		if err := s.EnqueueEDU(ctx, t.Host, []string{dest}, gomatrixserverlib.EDU{Type: spec.MPresence, Origin: string(t.ServerName), Content: b}); err != nil {
			return err
		}
	}
	return nil
}

// receivePresence applies an m.presence EDU: entries about the origin's own users who share a
// room with a user of this tenant (others would only cost memory).
func (s *Server) receivePresence(ctx context.Context, t *clientapi.Tenant, origin spec.ServerName, content json.RawMessage) bool {
	if s.presence == nil {
		return false
	}
	var c struct {
		Push []struct {
			UserID          string  `json:"user_id"`
			Presence        string  `json:"presence"`
			StatusMsg       *string `json:"status_msg"`
			LastActiveAgo   int64   `json:"last_active_ago"`
			CurrentlyActive bool    `json:"currently_active"`
		} `json:"push"`
	}
	if json.Unmarshal(content, &c) != nil {
		return false
	}
	if len(c.Push) > maxPresencePush {
		c.Push = c.Push[:maxPresencePush]
	}
	var known map[string]bool
	err := t.Store.Tx(ctx, func(q pgdb.DBTX) error {
		users := make([]string, 0, len(c.Push))
		for _, p := range c.Push {
			users = append(users, p.UserID)
		}
		rows, err := q.Query(ctx, `SELECT DISTINCT state_key FROM current_state
			WHERE type = 'm.room.member' AND membership = 'join' AND state_key = ANY($1)`, users)
		if err != nil {
			return err
		}
		list, err := pgx.CollectRows(rows, pgx.RowTo[string])
		known = make(map[string]bool, len(list))
		for _, u := range list {
			known[u] = true
		}
		return err
	})
	if err != nil {
		s.log.WarnContext(ctx, "presence EDU not applied", "tenant", t.TenantID, "origin", origin, "err", err)
		return false
	}
	s.presence.Load(ctx, t.TenantID)
	now := time.Now()
	applied := false
	for _, p := range c.Push {
		u, err := spec.NewUserID(p.UserID, true)
		if err != nil || u.Domain() != origin || !known[p.UserID] || !presence.Valid(p.Presence) {
			continue
		}
		st := presence.Status{UserID: p.UserID, Presence: p.Presence, CurrentlyActive: p.CurrentlyActive}
		if p.StatusMsg != nil {
			st.StatusMsg = truncate(*p.StatusMsg, 1024)
		}
		if p.LastActiveAgo > 0 || p.Presence != presence.Offline {
			if p.LastActiveAgo < 0 {
				p.LastActiveAgo = 0
			}
			// Rounded to the second so that repeated EDUs with the same state are no change.
			st.LastActive = now.Add(-time.Duration(p.LastActiveAgo) * time.Millisecond).Truncate(time.Second)
		}
		s.presence.SetRemote(t.TenantID, st)
		applied = true
	}
	return applied
}
