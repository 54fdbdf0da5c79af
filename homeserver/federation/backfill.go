package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/atoll-matrix/atoll/homeserver/clientapi"
	"github.com/atoll-matrix/atoll/homeserver/rooms"
	"github.com/atoll-matrix/atoll/homeserver/storage"
	"github.com/atoll-matrix/atoll/internal/mxhttp"
	"github.com/atoll-matrix/atoll/internal/pgdb"
)

// Bounds of backfill, both ways.
const (
	maxBackfillLimit = 100
	// backfillRounds caps the remote requests one /messages page may make.
	backfillRounds = 3
)

// backfill answers GET /backfill/{roomID}?v=...&limit=: the given events and those before
// them, walking prev_events breadth first, at most limit, for a server that has (or had) users
// in the room.
func (s *Server) backfill(w http.ResponseWriter, r *http.Request, req *request) error {
	roomID := r.PathValue("roomID")
	qp := r.URL.Query()
	start := qp["v"]
	if len(start) == 0 {
		return mxhttp.MissingParam("v is required")
	}
	limit := 10
	if l := qp.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 0 {
			return mxhttp.InvalidParam("limit must be a non-negative integer")
		}
		limit = min(n, maxBackfillLimit)
	}
	v, err := rooms.RoomVersion(r.Context(), req.T.Host, roomID)
	if err != nil {
		return matrixErr(err)
	}
	var out []json.RawMessage
	err = req.T.Store.Tx(r.Context(), func(q pgdb.DBTX) error {
		ok, err := serverMayRead(r.Context(), q, roomID, req.Origin)
		if err != nil {
			return err
		}
		if !ok {
			return mxhttp.Forbidden("your server is not in this room")
		}
		out, err = walkBack(r.Context(), q, v, roomID, start, limit)
		return err
	})
	if err != nil {
		return err
	}
	if out == nil {
		out = []json.RawMessage{}
	}
	return mxhttp.JSON(w, http.StatusOK, map[string]any{"origin": req.T.ServerName,
		"origin_server_ts": spec.AsTimestamp(s.now()), "pdus": out})
}

// walkBack returns the stored events of start and before them, breadth first along
// prev_events, at most limit.
func walkBack(ctx context.Context, q pgdb.DBTX, v gomatrixserverlib.IRoomVersion, roomID string, start []string, limit int) ([]json.RawMessage, error) {
	var out []json.RawMessage
	seen := map[string]bool{}
	frontier := slices.Clone(start)
	for _, id := range frontier {
		seen[id] = true
	}
	for len(frontier) > 0 && len(out) < limit {
		rows, err := storage.EventsByID(ctx, q, frontier)
		if err != nil {
			return nil, fmt.Errorf("backfill events of %s: %w", roomID, err)
		}
		// Newest first within a generation, so a cut at limit keeps the nearest events.
		slices.SortFunc(rows, func(a, b storage.EventRow) int { return int(b.Depth - a.Depth) })
		frontier = nil
		for _, row := range rows {
			if row.RoomID != roomID || len(out) >= limit {
				continue
			}
			out = append(out, row.JSON)
			ev, err := v.NewEventFromTrustedJSON(row.JSON, row.RedactedBecause != "")
			if err != nil {
				continue
			}
			for _, p := range ev.PrevEventIDs() {
				if !seen[p] {
					seen[p] = true
					frontier = append(frontier, p)
				}
			}
		}
	}
	return out, nil
}

// History continues a /messages page backwards past the first event this tenant stores of a
// room it joined over federation: events from before the join, ordered by depth (newest
// first), fetched with /backfill from servers in the room when the stored DAG has gaps, and
// kept as outliers (never in the stream, never in /sync). from is "" at the join, or a token
// History returned; next is "" when the room's creation was reached. Only rooms whose
// history_visibility is shared or world_readable show events from before a user's join.
// See docs/federation.md.
func (s *Server) History(ctx context.Context, t *clientapi.Tenant, roomID, userID, from string, limit int) ([]storage.EventRow, string, error) {
	if limit <= 0 {
		return nil, from, nil
	}
	v, err := rooms.RoomVersion(ctx, t.Host, roomID)
	if err != nil {
		return nil, "", err
	}
	var pos historyPos
	visible := false
	err = t.Store.Tx(ctx, func(q pgdb.DBTX) error {
		visible, err = historyVisible(ctx, q, roomID)
		if err != nil || !visible {
			return err
		}
		if from != "" {
			pos, err = parseHistoryToken(from)
			return err
		}
		var typ string
		err := q.QueryRow(ctx, `SELECT depth, type FROM events WHERE room_id = $1 AND NOT outlier ORDER BY stream_pos LIMIT 1`,
			roomID).Scan(&pos.depth, &typ)
		if errors.Is(err, pgx.ErrNoRows) || (err == nil && typ == spec.MRoomCreate) {
			visible = false // nothing stored, or the whole room is in the stream
			return nil
		}
		return err
	})
	if err != nil || !visible {
		return nil, "", err
	}
	for round := 0; ; round++ {
		var page []storage.EventRow
		var gaps []string
		err := t.Store.Tx(ctx, func(q pgdb.DBTX) error {
			var err error
			page, err = historyPage(ctx, q, roomID, pos, limit)
			if err != nil {
				return err
			}
			gaps, err = historyGaps(ctx, q, v, roomID, pos, page)
			return err
		})
		if err != nil {
			return nil, "", err
		}
		if len(gaps) == 0 || round == backfillRounds {
			next := ""
			if len(page) == limit {
				last := page[len(page)-1]
				next = historyPos{depth: last.Depth, pos: last.StreamPos}.String()
			}
			return page, next, nil
		}
		n, err := s.backfillFrom(ctx, t, v, roomID, gaps, max(limit, 20))
		if err != nil {
			return nil, "", err
		}
		if n == 0 {
			round = backfillRounds - 1 // nobody could fill the gaps: show what is stored
		}
	}
}

// historyPos is a place in a room's pre-join history: events sort by (depth, stream_pos)
// descending; a page holds the events strictly below the position.
type historyPos struct{ depth, pos int64 }

func (p historyPos) String() string { return fmt.Sprintf("h%d_%d", p.depth, p.pos) }

func parseHistoryToken(s string) (historyPos, error) {
	d, p, ok := strings.Cut(strings.TrimPrefix(s, "h"), "_")
	depth, err1 := strconv.ParseInt(d, 10, 64)
	pos, err2 := strconv.ParseInt(p, 10, 64)
	if !strings.HasPrefix(s, "h") || !ok || err1 != nil || err2 != nil {
		return historyPos{}, mxhttp.InvalidParam("invalid pagination token")
	}
	return historyPos{depth: depth, pos: pos}, nil
}

// historyVisible: events from before a user's join are shown when the room's history is
// shared with members (or world readable).
func historyVisible(ctx context.Context, q pgdb.DBTX, roomID string) (bool, error) {
	evs, err := storage.CurrentStateEvents(ctx, q, roomID, []storage.StateKeyTuple{{Type: spec.MRoomHistoryVisibility, StateKey: ""}})
	if err != nil {
		return false, fmt.Errorf("history visibility of %s: %w", roomID, err)
	}
	if len(evs) == 0 {
		return true, nil // the spec's default is shared
	}
	var ev struct {
		Content struct {
			HistoryVisibility string `json:"history_visibility"`
		} `json:"content"`
	}
	if err := json.Unmarshal(evs[0].JSON, &ev); err != nil {
		return false, nil
	}
	switch ev.Content.HistoryVisibility {
	case "shared", "world_readable":
		return true, nil
	}
	return false, nil
}

// historyPage reads stored pre-join events below pos, newest first.
func historyPage(ctx context.Context, q pgdb.DBTX, roomID string, pos historyPos, limit int) ([]storage.EventRow, error) {
	rows, err := q.Query(ctx, `SELECT event_id FROM events WHERE room_id = $1 AND outlier AND NOT soft_failed
		AND (depth, stream_pos) < ($2, $3) ORDER BY depth DESC, stream_pos DESC LIMIT $4`, roomID, pos.depth, pos.pos, limit)
	if err != nil {
		return nil, fmt.Errorf("history of %s: %w", roomID, err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("history of %s: %w", roomID, err)
	}
	evs, err := storage.EventsByID(ctx, q, ids)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(evs, func(a, b storage.EventRow) int {
		if a.Depth != b.Depth {
			return int(b.Depth - a.Depth)
		}
		return int(b.StreamPos - a.StreamPos)
	})
	return evs, nil
}

// historyGaps returns the events whose prev events are not stored, among the page and the
// event the page continues from (the first one in the stream, or the last of the previous
// page): backfill starts there.
func historyGaps(ctx context.Context, q pgdb.DBTX, v gomatrixserverlib.IRoomVersion, roomID string, pos historyPos, page []storage.EventRow) ([]string, error) {
	rows := slices.Clone(page)
	var above []string
	r, err := q.Query(ctx, `SELECT event_id FROM events WHERE room_id = $1 AND depth = $2 AND stream_pos >= $3`, roomID, pos.depth, pos.pos)
	if err != nil {
		return nil, fmt.Errorf("history boundary of %s: %w", roomID, err)
	}
	if above, err = pgx.CollectRows(r, pgx.RowTo[string]); err != nil {
		return nil, err
	}
	boundary, err := storage.EventsByID(ctx, q, above)
	if err != nil {
		return nil, err
	}
	rows = append(rows, boundary...)
	prevOf := map[string][]string{}
	var prevs []string
	for _, row := range rows {
		ev, err := v.NewEventFromTrustedJSON(row.JSON, row.RedactedBecause != "")
		if err != nil {
			continue
		}
		prevOf[row.EventID] = ev.PrevEventIDs()
		prevs = append(prevs, ev.PrevEventIDs()...)
	}
	have, err := storage.EventsByID(ctx, q, prevs)
	if err != nil {
		return nil, err
	}
	known := map[string]bool{}
	for _, h := range have {
		known[h.EventID] = true
	}
	var gaps []string
	for id, ps := range prevOf {
		for _, p := range ps {
			if !known[p] {
				gaps = append(gaps, id)
				break
			}
		}
	}
	slices.Sort(gaps)
	if len(gaps) > 5 {
		gaps = gaps[:5]
	}
	return gaps, nil
}

// backfillFrom asks the room's servers, in turn, for events before from and stores those
// that are signed and pass the auth rules against their own auth events, as outliers. It
// returns how many new events were stored.
func (s *Server) backfillFrom(ctx context.Context, t *clientapi.Tenant, v gomatrixserverlib.IRoomVersion, roomID string, from []string, limit int) (int, error) {
	var servers []string
	err := t.Store.Tx(ctx, func(q pgdb.DBTX) error {
		var err error
		servers, err = roomServers(ctx, q, roomID)
		return err
	})
	if err != nil {
		return 0, err
	}
	servers = slices.DeleteFunc(servers, func(srv string) bool { return srv == string(t.ServerName) })
	slices.Sort(servers)
	client := s.Client(t.Host)
	var lastErr error
	for _, srv := range servers {
		reqCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		txn, err := client.Backfill(reqCtx, t.ServerName, spec.ServerName(srv), roomID, min(limit, maxBackfillLimit), from)
		cancel()
		if err != nil {
			lastErr = err
			s.log.WarnContext(ctx, "backfill request failed", "tenant", t.TenantID, "server", srv, "err", err)
			continue
		}
		n, err := s.storeBackfilled(ctx, t, v, roomID, spec.ServerName(srv), txn.PDUs)
		if err != nil {
			return n, err
		}
		if n > 0 {
			return n, nil
		}
	}
	if lastErr != nil && len(servers) > 0 {
		s.log.WarnContext(ctx, "no server could backfill", "tenant", t.TenantID, "room_id", roomID, "err", lastErr)
	}
	return 0, nil
}

// storeBackfilled verifies backfilled PDUs (content hash, signatures, auth rules against the
// auth events they cite, fetched from origin when unknown) and stores the new ones as
// outliers, oldest first.
func (s *Server) storeBackfilled(ctx context.Context, t *clientapi.Tenant, v gomatrixserverlib.IRoomVersion, roomID string, origin spec.ServerName, raws []json.RawMessage) (int, error) {
	var events []gomatrixserverlib.PDU
	for _, raw := range raws {
		ev, err := s.verifyPDU(ctx, v, raw)
		if err != nil || ev.RoomID().String() != roomID {
			continue
		}
		events = append(events, ev)
	}
	slices.SortFunc(events, func(a, b gomatrixserverlib.PDU) int { return int(a.Depth() - b.Depth()) })
	stored := 0
	for _, ev := range events {
		var known bool
		var auth []gomatrixserverlib.PDU
		loadAuth := func() error {
			return t.Store.Tx(ctx, func(q pgdb.DBTX) error {
				if _, err := storage.EventByID(ctx, q, ev.EventID()); err == nil {
					known = true
					return nil
				} else if !errors.Is(err, storage.ErrNotFound) {
					return err
				}
				rows, err := storage.EventsByID(ctx, q, ev.AuthEventIDs())
				if err != nil {
					return err
				}
				auth = auth[:0]
				for _, row := range rows {
					if a, err := v.NewEventFromTrustedJSON(row.JSON, row.RedactedBecause != ""); err == nil {
						auth = append(auth, a)
					}
				}
				return nil
			})
		}
		if err := loadAuth(); err != nil {
			return stored, err
		}
		if known {
			continue
		}
		if len(auth) < len(ev.AuthEventIDs()) {
			if err := s.fetchAuthChain(ctx, t, origin, v, ev); err != nil {
				continue
			}
			if err := loadAuth(); err != nil {
				return stored, err
			}
		}
		provider, err := gomatrixserverlib.NewAuthEvents(auth)
		if err != nil {
			continue
		}
		if err := gomatrixserverlib.Allowed(ev, provider, rooms.UserIDForSender); err != nil {
			s.log.DebugContext(ctx, "backfilled event rejected", "tenant", t.TenantID, "event_id", ev.EventID(), "err", err)
			continue
		}
		if err := s.engine.StoreOutliers(ctx, t.Host, []gomatrixserverlib.PDU{ev}, origin); err != nil {
			return stored, err
		}
		stored++
	}
	return stored, nil
}
