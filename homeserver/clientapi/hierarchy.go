package clientapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/atoll-matrix/atoll/homeserver/storage"
	"github.com/atoll-matrix/atoll/internal/mxhttp"
	"github.com/atoll-matrix/atoll/internal/pgdb"
)

// Bounds of GET /rooms/{roomID}/hierarchy.
const (
	hierarchyMaxDepth     = 20
	hierarchyDefaultLimit = 50
	hierarchyMaxLimit     = 100
	hierarchyMaxRooms     = 500 // rooms visited in one request, whatever the page
)

// SpaceRoom is one room of a space hierarchy: its directory entry and its m.space.child
// events.
type SpaceRoom struct {
	publicRoom
	ChildrenState  []SpaceChild `json:"children_state"`
	AllowedRoomIDs []string     `json:"allowed_room_ids,omitempty"`
}

// SpaceChild is a stripped m.space.child state event.
type SpaceChild struct {
	Type           string          `json:"type"`
	StateKey       string          `json:"state_key"`
	Content        json.RawMessage `json:"content"`
	Sender         string          `json:"sender"`
	OriginServerTS int64           `json:"origin_server_ts"`
}

type spaceChildContent struct {
	Via       []string `json:"via"`
	Order     string   `json:"order"`
	Suggested bool     `json:"suggested"`
}

// content decodes the child event's content; a child without via is not part of the space.
func (c SpaceChild) content() spaceChildContent {
	var sc spaceChildContent
	_ = json.Unmarshal(c.Content, &sc)
	return sc
}

// SpaceAccess says who asks for a room of a hierarchy: a local user, or another server.
type SpaceAccess struct {
	UserID string
	Server spec.ServerName
}

// LocalSpaceRoom describes a room of this tenant for a hierarchy: ok is false when the room
// is not stored here with a local member in it (then another server must be asked), and
// accessible is false when the asker may not see it (not a member, not public, not
// world-readable, not restricted to a room it is in).
func LocalSpaceRoom(ctx context.Context, t *Tenant, roomID string, suggestedOnly bool, who SpaceAccess) (room SpaceRoom, ok, accessible bool, err error) {
	err = t.Store.Tx(ctx, func(q pgdb.DBTX) error {
		if err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM current_state WHERE room_id = $1 AND type = 'm.room.member'
			AND membership = 'join' AND state_key LIKE '%:' || $2)`, roomID, string(t.ServerName)).Scan(&ok); err != nil {
			return err
		}
		if !ok {
			return nil
		}
		pr, err := directoryEntry(ctx, q, roomID)
		if err != nil {
			return err
		}
		room.publicRoom = pr
		if room.AllowedRoomIDs, err = allowedRooms(ctx, q, roomID); err != nil {
			return err
		}
		if accessible, err = spaceAccessible(ctx, q, roomID, pr, room.AllowedRoomIDs, who); err != nil {
			return err
		}
		room.ChildrenState, err = spaceChildren(ctx, q, roomID, suggestedOnly)
		return err
	})
	if err != nil {
		return SpaceRoom{}, false, false, fmt.Errorf("space room %s: %w", roomID, err)
	}
	return room, ok, accessible, nil
}

// spaceChildren lists a room's m.space.child events that have a via list, in the order the
// spec gives: by order, then by timestamp, then by room ID.
func spaceChildren(ctx context.Context, q pgdb.DBTX, roomID string, suggestedOnly bool) ([]SpaceChild, error) {
	rows, err := q.Query(ctx, `SELECT e.state_key, e.sender, e.origin_server_ts, e.json FROM current_state cs
		JOIN events e ON e.event_id = cs.event_id WHERE cs.room_id = $1 AND cs.type = 'm.space.child'`, roomID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []SpaceChild{}
	for rows.Next() {
		c := SpaceChild{Type: "m.space.child"}
		var raw string
		if err := rows.Scan(&c.StateKey, &c.Sender, &c.OriginServerTS, &raw); err != nil {
			return nil, err
		}
		var ev struct {
			Content json.RawMessage `json:"content"`
		}
		if json.Unmarshal([]byte(raw), &ev) != nil {
			continue
		}
		c.Content = ev.Content
		sc := c.content()
		if len(sc.Via) == 0 || (suggestedOnly && !sc.Suggested) {
			continue
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	sortChildren(out)
	return out, nil
}

func sortChildren(cs []SpaceChild) {
	sort.SliceStable(cs, func(i, j int) bool {
		a, b := cs[i].content(), cs[j].content()
		ao, bo := validOrder(a.Order), validOrder(b.Order)
		if ao != bo {
			if ao == "" || bo == "" {
				return ao != ""
			}
			return ao < bo
		}
		if cs[i].OriginServerTS != cs[j].OriginServerTS {
			return cs[i].OriginServerTS < cs[j].OriginServerTS
		}
		return cs[i].StateKey < cs[j].StateKey
	})
}

// validOrder is the order field if the spec accepts it (printable ASCII, at most 50).
func validOrder(o string) string {
	if len(o) > 50 {
		return ""
	}
	for _, r := range o {
		if r < 0x20 || r > 0x7e {
			return ""
		}
	}
	return o
}

// allowedRooms is the room list of a restricted join rule.
func allowedRooms(ctx context.Context, q pgdb.DBTX, roomID string) ([]string, error) {
	evs, err := storage.CurrentStateEvents(ctx, q, roomID, []storage.StateKeyTuple{{Type: spec.MRoomJoinRules}})
	if err != nil || len(evs) == 0 {
		return nil, err
	}
	var ev struct {
		Content struct {
			JoinRule string `json:"join_rule"`
			Allow    []struct {
				Type   string `json:"type"`
				RoomID string `json:"room_id"`
			} `json:"allow"`
		} `json:"content"`
	}
	if json.Unmarshal(evs[0].JSON, &ev) != nil {
		return nil, nil
	}
	if ev.Content.JoinRule != spec.Restricted && ev.Content.JoinRule != spec.KnockRestricted {
		return nil, nil
	}
	var out []string
	for _, a := range ev.Content.Allow {
		if a.Type == "m.room_membership" && a.RoomID != "" {
			out = append(out, a.RoomID)
		}
	}
	return out, nil
}

// spaceAccessible applies the hierarchy's visibility rules for a local user or a server.
func spaceAccessible(ctx context.Context, q pgdb.DBTX, roomID string, pr publicRoom, allowed []string, who SpaceAccess) (bool, error) {
	switch pr.JoinRule {
	case spec.Public, spec.Knock, spec.KnockRestricted:
		return true, nil
	}
	if pr.WorldReadable {
		return true, nil
	}
	var in bool
	if who.UserID != "" {
		if err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM current_state WHERE room_id = $1 AND type = 'm.room.member'
			AND state_key = $2 AND membership IN ('join', 'invite'))`, roomID, who.UserID).Scan(&in); err != nil {
			return false, err
		}
		if !in && len(allowed) > 0 {
			err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM current_state WHERE room_id = ANY($1) AND type = 'm.room.member'
				AND state_key = $2 AND membership = 'join')`, allowed, who.UserID).Scan(&in)
			return in, err
		}
		return in, nil
	}
	// Another server: it has members, or the room is restricted (the asker checks allow).
	if len(allowed) > 0 {
		return true, nil
	}
	err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM current_state WHERE room_id = $1 AND type = 'm.room.member'
		AND membership IN ('join', 'invite') AND state_key LIKE '%:' || $2)`, roomID, string(who.Server)).Scan(&in)
	return in, err
}

// hierarchyEntry is a room waiting to be visited.
type hierarchyEntry struct {
	roomID string
	depth  int
	via    []string
}

func (s *Server) roomHierarchy(w http.ResponseWriter, r *http.Request, sess *Session) error {
	root, err := pathRoomID(r)
	if err != nil {
		return err
	}
	maxDepth, err := queryInt(r, "max_depth", hierarchyMaxDepth, 0, hierarchyMaxDepth)
	if err != nil {
		return err
	}
	limit, err := queryInt(r, "limit", hierarchyDefaultLimit, 1, hierarchyMaxLimit)
	if err != nil {
		return err
	}
	suggestedOnly := r.URL.Query().Get("suggested_only") == "true"
	// The token is the number of rooms already returned by the same walk: the walk is
	// deterministic for unchanged state, and the parameters are folded into the token.
	offset := 0
	if from := r.URL.Query().Get("from"); from != "" {
		n, p, ok := strings.Cut(from, "_")
		o, err := strconv.Atoi(n)
		if !ok || err != nil || o < 0 || p != hierarchyTokenParams(root, maxDepth, suggestedOnly) {
			return mxhttp.InvalidParam("invalid from token")
		}
		offset = o
	}
	ctx := r.Context()
	who := SpaceAccess{UserID: sess.UserID}
	remote := map[string]SpaceRoom{} // rooms another server described, by ID
	visited := map[string]bool{}
	queue := []hierarchyEntry{{roomID: root}}
	var out []SpaceRoom
	seen := 0
	more := false
	for len(queue) > 0 && seen < hierarchyMaxRooms {
		e := queue[0]
		queue = queue[1:]
		if visited[e.roomID] {
			continue
		}
		visited[e.roomID] = true
		room, accessible, err := s.spaceRoom(ctx, sess.T, e, suggestedOnly, who, remote)
		if err != nil {
			return err
		}
		if !accessible {
			if e.roomID == root {
				return mxhttp.Forbidden("you may not see this room's hierarchy")
			}
			continue
		}
		seen++
		if seen > offset {
			if len(out) == limit {
				more = true
				break
			}
			out = append(out, room)
		}
		if e.depth >= maxDepth {
			continue
		}
		for _, c := range room.ChildrenState {
			if !visited[c.StateKey] {
				queue = append(queue, hierarchyEntry{roomID: c.StateKey, depth: e.depth + 1, via: c.content().Via})
			}
		}
	}
	if out == nil {
		out = []SpaceRoom{}
	}
	resp := map[string]any{"rooms": out}
	if more {
		resp["next_batch"] = strconv.Itoa(offset+len(out)) + "_" + hierarchyTokenParams(root, maxDepth, suggestedOnly)
	}
	return mxhttp.JSON(w, http.StatusOK, resp)
}

func hierarchyTokenParams(root string, maxDepth int, suggestedOnly bool) string {
	h := uint32(2166136261)
	for _, b := range []byte(fmt.Sprintf("%s|%d|%t", root, maxDepth, suggestedOnly)) {
		h = (h ^ uint32(b)) * 16777619
	}
	return strconv.FormatUint(uint64(h), 36)
}

// spaceRoom describes one room of the walk: from this tenant's store when a local user is in
// it, else from what another server said of it (asking the servers of the child event).
func (s *Server) spaceRoom(ctx context.Context, t *Tenant, e hierarchyEntry, suggestedOnly bool, who SpaceAccess, remote map[string]SpaceRoom) (SpaceRoom, bool, error) {
	room, ok, accessible, err := LocalSpaceRoom(ctx, t, e.roomID, suggestedOnly, who)
	if err != nil || ok {
		return room, accessible, err
	}
	if r, ok := remote[e.roomID]; ok {
		return r, true, nil
	}
	rd := s.remoteDirectory()
	if rd == nil {
		return SpaceRoom{}, false, nil
	}
	via := e.via
	if len(via) == 0 {
		if _, srv, ok := strings.Cut(e.roomID, ":"); ok {
			via = []string{srv}
		}
	}
	h, err := rd.Hierarchy(ctx, t, e.roomID, via, suggestedOnly)
	if err != nil {
		s.log.InfoContext(ctx, "remote hierarchy failed", "tenant", t.TenantID, "err", err)
		return SpaceRoom{}, false, nil
	}
	for _, c := range h.Children {
		if _, have := remote[c.RoomID]; !have {
			remote[c.RoomID] = c
		}
	}
	if h.Room.RoomID != e.roomID {
		return SpaceRoom{}, false, nil
	}
	if h.Room.ChildrenState == nil {
		h.Room.ChildrenState = []SpaceChild{}
	}
	kept := h.Room.ChildrenState[:0]
	for _, c := range h.Room.ChildrenState {
		if c.Type == "m.space.child" && len(c.content().Via) > 0 && (!suggestedOnly || c.content().Suggested) {
			kept = append(kept, c)
		}
	}
	h.Room.ChildrenState = kept
	sortChildren(h.Room.ChildrenState)
	return h.Room, true, nil
}
