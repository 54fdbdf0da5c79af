package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/atoll-matrix/atoll/homeserver/storage"
	"github.com/atoll-matrix/atoll/internal/mxhttp"
	"github.com/atoll-matrix/atoll/internal/pgdb"
)

// syncToken is a position in every stream: the tenant's stream position and the shard's
// typing and presence serials (s<pos>_<typing>_<presence>; older tokens without the
// presence part still parse, as presence serial 0).
type syncToken struct {
	Pos      int64
	Typing   int64
	Presence int64
}

func (t syncToken) String() string { return fmt.Sprintf("s%d_%d_%d", t.Pos, t.Typing, t.Presence) }

func parseSyncToken(s string) (syncToken, error) {
	rest, ok := strings.CutPrefix(s, "s")
	if !ok {
		return syncToken{}, mxhttp.InvalidParam("invalid since token")
	}
	a, b, _ := strings.Cut(rest, "_")
	b, c, _ := strings.Cut(b, "_")
	pos, err := strconv.ParseInt(a, 10, 64)
	if err != nil || pos < 0 {
		return syncToken{}, mxhttp.InvalidParam("invalid since token")
	}
	var typ int64
	if b != "" {
		if typ, err = strconv.ParseInt(b, 10, 64); err != nil || typ < 0 {
			return syncToken{}, mxhttp.InvalidParam("invalid since token")
		}
	}
	var pres int64
	if c != "" {
		if pres, err = strconv.ParseInt(c, 10, 64); err != nil || pres < 0 {
			return syncToken{}, mxhttp.InvalidParam("invalid since token")
		}
	}
	return syncToken{Pos: pos, Typing: typ, Presence: pres}, nil
}

// topoToken is a pagination token: a boundary between stream positions.
func topoToken(pos int64) string { return "p" + strconv.FormatInt(pos, 10) }

func parsePageToken(s string) (int64, error) {
	if strings.HasPrefix(s, "s") {
		t, err := parseSyncToken(s)
		return t.Pos, err
	}
	rest, ok := strings.CutPrefix(s, "p")
	n, err := strconv.ParseInt(rest, 10, 64)
	if !ok || err != nil || n < 0 {
		return 0, mxhttp.InvalidParam("invalid pagination token")
	}
	return n, nil
}

// Filter is the subset of the spec's filter that /sync and /messages apply.
type Filter struct {
	AccountData *EventFilter `json:"account_data,omitempty"`
	Presence    *EventFilter `json:"presence,omitempty"`
	EventFields []string     `json:"event_fields,omitempty"`
	EventFormat string       `json:"event_format,omitempty"`
	Room        *RoomFilter  `json:"room,omitempty"`
}

// EventFilter selects events by type and sender.
type EventFilter struct {
	Limit      *int     `json:"limit,omitempty"`
	Types      []string `json:"types,omitempty"`
	NotTypes   []string `json:"not_types,omitempty"`
	Senders    []string `json:"senders,omitempty"`
	NotSenders []string `json:"not_senders,omitempty"`
}

// RoomEventFilter adds room selection and lazy loading.
type RoomEventFilter struct {
	EventFilter
	Rooms                   []string `json:"rooms,omitempty"`
	NotRooms                []string `json:"not_rooms,omitempty"`
	LazyLoadMembers         bool     `json:"lazy_load_members,omitempty"`
	IncludeRedundantMembers bool     `json:"include_redundant_members,omitempty"`
	ContainsURL             *bool    `json:"contains_url,omitempty"`
	UnreadThreadNotifs      bool     `json:"unread_thread_notifications,omitempty"`
}

// RoomFilter is the "room" part of a filter.
type RoomFilter struct {
	Rooms        []string         `json:"rooms,omitempty"`
	NotRooms     []string         `json:"not_rooms,omitempty"`
	IncludeLeave bool             `json:"include_leave,omitempty"`
	Timeline     *RoomEventFilter `json:"timeline,omitempty"`
	State        *RoomEventFilter `json:"state,omitempty"`
	Ephemeral    *RoomEventFilter `json:"ephemeral,omitempty"`
	AccountData  *RoomEventFilter `json:"account_data,omitempty"`
}

func matchType(pattern, t string) bool {
	if p, ok := strings.CutSuffix(pattern, "*"); ok {
		return strings.HasPrefix(t, p)
	}
	return pattern == t
}

func (f *EventFilter) allows(typ, sender string) bool {
	if f == nil {
		return true
	}
	for _, p := range f.NotTypes {
		if matchType(p, typ) {
			return false
		}
	}
	if f.Types != nil {
		ok := false
		for _, p := range f.Types {
			if matchType(p, typ) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	for _, s := range f.NotSenders {
		if s == sender {
			return false
		}
	}
	if f.Senders != nil {
		for _, s := range f.Senders {
			if s == sender {
				return true
			}
		}
		return false
	}
	return true
}

func (f *RoomFilter) allowsRoom(id string) bool {
	if f == nil {
		return true
	}
	for _, r := range f.NotRooms {
		if r == id {
			return false
		}
	}
	if f.Rooms != nil {
		for _, r := range f.Rooms {
			if r == id {
				return true
			}
		}
		return false
	}
	return true
}

func (f *Filter) timeline() *RoomEventFilter {
	if f == nil || f.Room == nil {
		return nil
	}
	return f.Room.Timeline
}

func (f *Filter) state() *RoomEventFilter {
	if f == nil || f.Room == nil {
		return nil
	}
	return f.Room.State
}

func (f *Filter) timelineLimit() int {
	if tl := f.timeline(); tl != nil && tl.Limit != nil {
		if *tl.Limit < 1 {
			return 1
		}
		if *tl.Limit > 500 {
			return 500
		}
		return *tl.Limit
	}
	return 10
}

// loadFilter reads the filter parameter: inline JSON or a stored filter ID.
func loadFilter(ctx context.Context, sess *Session, param string) (*Filter, error) {
	if param == "" {
		return nil, nil
	}
	var f Filter
	if strings.HasPrefix(param, "{") {
		if err := json.Unmarshal([]byte(param), &f); err != nil {
			return nil, mxhttp.BadJSON("invalid filter: %v", safe(err))
		}
		return &f, nil
	}
	id, err := strconv.ParseInt(param, 10, 64)
	if err != nil {
		return nil, mxhttp.InvalidParam("filter must be a filter ID or JSON")
	}
	var b []byte
	err = sess.T.Store.Tx(ctx, func(q pgdb.DBTX) error {
		return q.QueryRow(ctx, `SELECT filter FROM filters WHERE user_id = $1 AND filter_id = $2`, sess.UserID, id).Scan(&b)
	})
	if err != nil {
		if strings.Contains(err.Error(), "no rows") {
			return nil, mxhttp.NotFound("unknown filter")
		}
		return nil, err
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("decode stored filter: %w", err)
	}
	return &f, nil
}

func safe(err error) string { return truncate(err.Error(), 200) }

type eventsBlock struct {
	Events []any `json:"events"`
}

type timelineBlock struct {
	Events    []ClientEvent `json:"events"`
	Limited   bool          `json:"limited"`
	PrevBatch string        `json:"prev_batch,omitempty"`
}

type stateBlock struct {
	Events []ClientEvent `json:"events"`
}

type unreadCounts struct {
	NotificationCount int `json:"notification_count"`
	HighlightCount    int `json:"highlight_count"`
}

type roomSummary struct {
	Heroes             []string `json:"m.heroes,omitempty"`
	JoinedMemberCount  *int     `json:"m.joined_member_count,omitempty"`
	InvitedMemberCount *int     `json:"m.invited_member_count,omitempty"`
}

type joinedRoom struct {
	Timeline            timelineBlock `json:"timeline"`
	State               stateBlock    `json:"state"`
	Ephemeral           eventsBlock   `json:"ephemeral"`
	AccountData         eventsBlock   `json:"account_data"`
	UnreadNotifications unreadCounts  `json:"unread_notifications"`
	Summary             roomSummary   `json:"summary"`
}

type invitedRoom struct {
	InviteState eventsBlock `json:"invite_state"`
}

type leftRoom struct {
	Timeline    timelineBlock `json:"timeline"`
	State       stateBlock    `json:"state"`
	AccountData eventsBlock   `json:"account_data"`
}

type syncRooms struct {
	Join   map[string]*joinedRoom  `json:"join"`
	Invite map[string]*invitedRoom `json:"invite"`
	Leave  map[string]*leftRoom    `json:"leave"`
	Knock  map[string]*knockedRoom `json:"knock"`
}

type deviceLists struct {
	Changed []string `json:"changed"`
	Left    []string `json:"left"`
}

type syncResponse struct {
	NextBatch              string         `json:"next_batch"`
	Rooms                  syncRooms      `json:"rooms"`
	AccountData            eventsBlock    `json:"account_data"`
	Presence               eventsBlock    `json:"presence"`
	ToDevice               eventsBlock    `json:"to_device"`
	DeviceLists            deviceLists    `json:"device_lists"`
	OneTimeKeysCount       map[string]int `json:"device_one_time_keys_count"`
	UnusedFallbackKeyTypes []string       `json:"device_unused_fallback_key_types"`
	hasNews                bool
}

func (s *Server) sync(w http.ResponseWriter, r *http.Request, sess *Session) error {
	qp := r.URL.Query()
	var since *syncToken
	if v := qp.Get("since"); v != "" {
		t, err := parseSyncToken(v)
		if err != nil {
			return err
		}
		since = &t
	}
	timeout, err := queryInt(r, "timeout", 0, 0, math.MaxInt32)
	if err != nil {
		return err
	}
	if timeout > 300_000 {
		timeout = 300_000
	}
	if sp := qp.Get("set_presence"); sp != "" && sp != "online" && sp != "offline" && sp != "unavailable" {
		return mxhttp.InvalidParam("set_presence must be online, offline or unavailable")
	}
	filter, err := loadFilter(r.Context(), sess, qp.Get("filter"))
	if err != nil {
		return err
	}
	s.presence.Load(r.Context(), sess.T.TenantID)
	defer s.presence.Syncing(sess.T.TenantID, sess.UserID, qp.Get("set_presence"))()
	fullState := qp.Get("full_state") == "true"
	deadline := time.Now().Add(time.Duration(timeout) * time.Millisecond)
	for {
		version := s.notifier.Version(sess.T.TenantID)
		resp, err := s.buildSync(r.Context(), sess, since, filter, fullState)
		if err != nil {
			return err
		}
		if since == nil || resp.hasNews || fullState || !time.Now().Before(deadline) {
			return mxhttp.JSON(w, http.StatusOK, resp)
		}
		if !s.notifier.Wait(r.Context(), sess.T.TenantID, sess.UserID, version, time.Until(deadline)) {
			if r.Context().Err() != nil {
				return nil // the client went away
			}
			// Timed out: answer with the latest token (nothing for this user moved).
			return mxhttp.JSON(w, http.StatusOK, resp)
		}
	}
}

// buildSync assembles one /sync response from the tenant's streams.
func (s *Server) buildSync(ctx context.Context, sess *Session, since *syncToken, filter *Filter, fullState bool) (*syncResponse, error) {
	resp := &syncResponse{
		Rooms:                  syncRooms{Join: map[string]*joinedRoom{}, Invite: map[string]*invitedRoom{}, Leave: map[string]*leftRoom{}, Knock: map[string]*knockedRoom{}},
		AccountData:            eventsBlock{Events: []any{}},
		Presence:               eventsBlock{Events: []any{}},
		ToDevice:               eventsBlock{Events: []any{}},
		DeviceLists:            deviceLists{Changed: []string{}, Left: []string{}},
		UnusedFallbackKeyTypes: []string{},
	}
	typingSerial := s.typing.Serial()
	presenceSerial := s.presence.Serial()
	var from int64
	var fromTyping, fromPresence int64
	if since != nil {
		from, fromTyping, fromPresence = since.Pos, since.Typing, since.Presence
	}
	err := sess.T.Store.Tx(ctx, func(q pgdb.DBTX) error {
		if since == nil {
			// Every user has push rules, stored or not: the spec's defaults until they change
			// one. Written before the stream position is read, so the token covers it.
			if _, err := storage.GetAccountData(ctx, q, sess.UserID, "", "m.push_rules"); errors.Is(err, storage.ErrNotFound) {
				if err := s.savePushRules(ctx, q, sess.UserID); err != nil {
					return err
				}
			} else if err != nil {
				return err
			}
		}
		to, err := storage.CurrentStreamPos(ctx, q)
		if err != nil {
			return err
		}
		if from > to {
			// A token from the future (e.g. a restored backup): start over from now.
			from = to
		}
		resp.NextBatch = syncToken{Pos: to, Typing: typingSerial, Presence: presenceSerial}.String()
		presenceChanged := presenceSerial != fromPresence && s.presence.Changed(sess.T.TenantID, fromPresence)
		if since != nil && to == from && typingSerial == fromTyping && !presenceChanged {
			// Nothing moved in the tenant: skip the work, still report key counts.
			return s.syncKeys(ctx, q, sess, resp)
		}
		forgotten, err := storage.ForgottenRooms(ctx, q, sess.UserID)
		if err != nil {
			return err
		}
		userRooms, err := storage.UserRooms(ctx, q, sess.UserID)
		if err != nil {
			return err
		}
		// Invites over the federation invite API newer than what a stored room says of the user.
		remoteInvites, err := storage.LiveRemoteInvites(ctx, q, sess.UserID)
		if err != nil {
			return err
		}
		supersededRooms := make(map[string]bool, len(remoteInvites))
		for _, inv := range remoteInvites {
			supersededRooms[inv.RoomID] = true
		}
		syncRemoteInvites(resp, remoteInvites, since != nil, from, filter)
		var joinedIDs []string
		for _, ur := range userRooms {
			if !filter.roomFilter().allowsRoom(ur.RoomID) || supersededRooms[ur.RoomID] {
				continue
			}
			changed := ur.StreamPos > from
			switch ur.Membership {
			case spec.Join:
				joinedIDs = append(joinedIDs, ur.RoomID)
				jr, news, err := s.syncJoinedRoom(ctx, q, sess, ur, since == nil || changed || fullState, from, to, filter)
				if err != nil {
					return err
				}
				if news || since == nil || changed {
					resp.Rooms.Join[ur.RoomID] = jr
					resp.hasNews = true
				}
			case spec.Invite, spec.Knock:
				if since != nil && !changed {
					continue
				}
				st, err := strippedState(ctx, q, ur)
				if err != nil {
					return err
				}
				if ur.Membership == spec.Invite {
					resp.Rooms.Invite[ur.RoomID] = &invitedRoom{InviteState: eventsBlock{Events: st}}
				} else {
					resp.Rooms.Knock[ur.RoomID] = &knockedRoom{KnockState: eventsBlock{Events: st}}
				}
				resp.hasNews = true
			case spec.Leave, spec.Ban:
				if forgotten[ur.RoomID] {
					continue
				}
				include := (since != nil && changed) || (since == nil && filter.includeLeave())
				if !include {
					continue
				}
				lr, err := s.syncLeftRoom(ctx, q, sess, ur, from, filter)
				if err != nil {
					return err
				}
				resp.Rooms.Leave[ur.RoomID] = lr
				resp.hasNews = true
			}
		}
		if err := s.syncEphemeral(ctx, q, sess, resp, joinedIDs, from, to, fromTyping, since == nil); err != nil {
			return err
		}
		if since == nil || presenceChanged {
			if err := s.syncPresence(ctx, q, sess, resp, filter, fromPresence, presenceSerial, since == nil); err != nil {
				return err
			}
		}
		ad, err := storage.AccountDataSince(ctx, q, sess.UserID, from, to)
		if err != nil {
			return err
		}
		for _, a := range ad {
			ev := map[string]any{"type": a.Type, "content": a.Content}
			if a.RoomID == "" {
				resp.AccountData.Events = append(resp.AccountData.Events, ev)
				resp.hasNews = true
			} else if jr := resp.Rooms.Join[a.RoomID]; jr != nil {
				jr.AccountData.Events = append(jr.AccountData.Events, ev)
			} else if jr, news := s.roomOnlyAccountData(ctx, q, sess, a.RoomID, joinedIDs); news {
				_ = jr
				resp.Rooms.Join[a.RoomID] = &joinedRoom{Timeline: timelineBlock{Events: []ClientEvent{}}, State: stateBlock{Events: []ClientEvent{}},
					Ephemeral: eventsBlock{Events: []any{}}, AccountData: eventsBlock{Events: []any{ev}}}
				resp.hasNews = true
			}
		}
		if err := s.syncToDevice(ctx, q, sess, resp, from, to); err != nil {
			return err
		}
		if since != nil {
			if err := s.syncDeviceLists(ctx, q, sess, resp, userRooms, from, to); err != nil {
				return err
			}
		}
		return s.syncKeys(ctx, q, sess, resp)
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

func (f *Filter) roomFilter() *RoomFilter {
	if f == nil {
		return nil
	}
	return f.Room
}

func (f *Filter) includeLeave() bool { return f != nil && f.Room != nil && f.Room.IncludeLeave }

func (s *Server) roomOnlyAccountData(ctx context.Context, q pgdb.DBTX, sess *Session, roomID string, joined []string) (*joinedRoom, bool) {
	for _, id := range joined {
		if id == roomID {
			return nil, true
		}
	}
	return nil, false
}

// syncJoinedRoom builds a joined room's section. full asks for the complete state (initial
// sync, a join since the token, or full_state).
func (s *Server) syncJoinedRoom(ctx context.Context, q pgdb.DBTX, sess *Session, ur storage.UserRoom, full bool, from, to int64, filter *Filter) (*joinedRoom, bool, error) {
	limit := filter.timelineLimit()
	lo := from
	if full {
		lo = 0
	}
	rows, err := storage.RoomEvents(ctx, q, ur.RoomID, lo, to, limit+1, true)
	if err != nil {
		return nil, false, err
	}
	limited := len(rows) > limit
	if limited {
		rows = rows[:limit]
	}
	// Newest first from the query; the timeline is oldest first.
	for i, j := 0, len(rows)-1; i < j; i, j = i+1, j-1 {
		rows[i], rows[j] = rows[j], rows[i]
	}
	jr := &joinedRoom{
		Timeline:    timelineBlock{Events: []ClientEvent{}, Limited: limited && !full || (full && limited)},
		State:       stateBlock{Events: []ClientEvent{}},
		Ephemeral:   eventsBlock{Events: []any{}},
		AccountData: eventsBlock{Events: []any{}},
	}
	tf := filter.timeline()
	senders := map[string]bool{sess.UserID: true}
	for _, e := range rows {
		if tf != nil && !tf.allows(e.Type, e.Sender) {
			continue
		}
		jr.Timeline.Events = append(jr.Timeline.Events, clientEvent(e, sess.UserID, sess.DeviceID, false))
		senders[e.Sender] = true
	}
	first := to
	if len(rows) > 0 {
		first = rows[0].StreamPos
	}
	jr.Timeline.PrevBatch = topoToken(first - 1)
	if full || limited {
		// State at the start of the timeline.
		var state []storage.EventRow
		if len(rows) > 0 && rows[0].StateBefore != 0 {
			ids, err := storage.StateGroup(ctx, q, rows[0].StateBefore)
			if err != nil {
				return nil, false, err
			}
			list := make([]string, 0, len(ids))
			for _, id := range ids {
				list = append(list, id)
			}
			if state, err = storage.EventsByID(ctx, q, list); err != nil {
				return nil, false, err
			}
		} else if len(rows) == 0 {
			if state, err = storage.CurrentStateEvents(ctx, q, ur.RoomID, nil); err != nil {
				return nil, false, err
			}
		}
		sf := filter.state()
		lazy := sf != nil && sf.LazyLoadMembers
		inTimeline := map[string]bool{}
		if !full {
			for _, e := range jr.Timeline.Events {
				inTimeline[e.EventID] = true
			}
		}
		for _, e := range state {
			if inTimeline[e.EventID] {
				continue
			}
			if sf != nil && !sf.allows(e.Type, e.Sender) {
				continue
			}
			if lazy && e.Type == spec.MRoomMember && e.StateKey != nil && !senders[*e.StateKey] {
				continue
			}
			jr.State.Events = append(jr.State.Events, clientEvent(e, sess.UserID, sess.DeviceID, false))
		}
	}
	if err := roomSummaryAndCounts(ctx, q, sess, ur.RoomID, jr); err != nil {
		return nil, false, err
	}
	return jr, len(jr.Timeline.Events) > 0 || len(jr.State.Events) > 0, nil
}

func roomSummaryAndCounts(ctx context.Context, q pgdb.DBTX, sess *Session, roomID string, jr *joinedRoom) error {
	joined, err := storage.RoomMembers(ctx, q, roomID, spec.Join)
	if err != nil {
		return err
	}
	invited, err := storage.RoomMembers(ctx, q, roomID, spec.Invite)
	if err != nil {
		return err
	}
	nj, ni := len(joined), len(invited)
	jr.Summary.JoinedMemberCount, jr.Summary.InvitedMemberCount = &nj, &ni
	for _, m := range append(joined, invited...) {
		if m != sess.UserID && len(jr.Summary.Heroes) < 5 {
			jr.Summary.Heroes = append(jr.Summary.Heroes, m)
		}
	}
	readPos, err := storage.ReadPosition(ctx, q, roomID, sess.UserID)
	if err != nil {
		return err
	}
	// Counts come from the push rules' verdicts when the push evaluator stored any; a
	// message from someone else after the read receipt otherwise counts as a notification.
	return q.QueryRow(ctx, `SELECT count(*) FILTER (WHERE notify), count(*) FILTER (WHERE highlight)
		FROM event_push_actions WHERE user_id = $1 AND room_id = $2 AND stream_pos > $3`, sess.UserID, roomID, readPos).
		Scan(&jr.UnreadNotifications.NotificationCount, &jr.UnreadNotifications.HighlightCount)
}

func (s *Server) syncLeftRoom(ctx context.Context, q pgdb.DBTX, sess *Session, ur storage.UserRoom, from int64, filter *Filter) (*leftRoom, error) {
	limit := filter.timelineLimit()
	rows, err := storage.RoomEvents(ctx, q, ur.RoomID, from, ur.StreamPos, limit+1, true)
	if err != nil {
		return nil, err
	}
	limited := len(rows) > limit
	if limited {
		rows = rows[:limit]
	}
	for i, j := 0, len(rows)-1; i < j; i, j = i+1, j-1 {
		rows[i], rows[j] = rows[j], rows[i]
	}
	lr := &leftRoom{Timeline: timelineBlock{Events: clientEvents(rows, sess.UserID, sess.DeviceID, false), Limited: limited},
		State: stateBlock{Events: []ClientEvent{}}, AccountData: eventsBlock{Events: []any{}}}
	if len(rows) > 0 {
		lr.Timeline.PrevBatch = topoToken(rows[0].StreamPos - 1)
	}
	return lr, nil
}

// syncRemoteInvites adds invites to rooms on other servers (the stripped state their server
// sent) and their rejections, when new since the token (or on an initial sync).
func syncRemoteInvites(resp *syncResponse, invites []storage.RemoteInvite, incremental bool, from int64, filter *Filter) {
	for _, inv := range invites {
		if !filter.roomFilter().allowsRoom(inv.RoomID) {
			continue
		}
		changed := inv.StreamPos > from
		switch inv.Membership {
		case spec.Invite:
			if incremental && !changed {
				continue
			}
			st := []any{}
			_ = json.Unmarshal(inv.InviteState, &st)
			resp.Rooms.Invite[inv.RoomID] = &invitedRoom{InviteState: eventsBlock{Events: st}}
			resp.hasNews = true
		case spec.Knock: // knocks through another server share the table (storage/knocks_table.go)
			if incremental && !changed {
				continue
			}
			st := []any{}
			_ = json.Unmarshal(inv.InviteState, &st)
			resp.Rooms.Knock[inv.RoomID] = &knockedRoom{KnockState: eventsBlock{Events: st}}
			resp.hasNews = true
		case spec.Leave:
			if !(incremental && changed) && !(!incremental && filter.includeLeave()) {
				continue
			}
			lr := &leftRoom{Timeline: timelineBlock{Events: []ClientEvent{}}, State: stateBlock{Events: []ClientEvent{}},
				AccountData: eventsBlock{Events: []any{}}}
			if inv.Leave != nil {
				sk := inv.UserID
				lr.Timeline.Events = append(lr.Timeline.Events, clientEvent(storage.EventRow{EventID: inv.Leave.EventID, RoomID: inv.RoomID,
					Type: spec.MRoomMember, StateKey: &sk, Sender: inv.UserID, OriginServerTS: inv.Leave.OriginServerTS, JSON: inv.Leave.JSON}, "", "", false))
			}
			resp.Rooms.Leave[inv.RoomID] = lr
			resp.hasNews = true
		}
	}
}

// strippedState is the state an invitee sees of a room.
func strippedState(ctx context.Context, q pgdb.DBTX, ur storage.UserRoom) ([]any, error) {
	events, err := storage.CurrentStateEvents(ctx, q, ur.RoomID, []storage.StateKeyTuple{
		{Type: spec.MRoomCreate}, {Type: spec.MRoomJoinRules}, {Type: spec.MRoomName}, {Type: "m.room.avatar"},
		{Type: spec.MRoomCanonicalAlias}, {Type: "m.room.encryption"}, {Type: spec.MRoomTopic}})
	if err != nil {
		return nil, err
	}
	inv, err := storage.EventByID(ctx, q, ur.EventID)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	if err == nil {
		events = append(events, inv)
		// The inviter's membership, so clients can show who invited.
		if sender := inv.Sender; sender != "" {
			m, err := storage.CurrentStateEvents(ctx, q, ur.RoomID, []storage.StateKeyTuple{{Type: spec.MRoomMember, StateKey: sender}})
			if err == nil {
				events = append(events, m...)
			}
		}
	}
	out := make([]any, 0, len(events))
	for _, e := range events {
		ce := clientEvent(e, "", "", false)
		out = append(out, map[string]any{"type": ce.Type, "state_key": ce.StateKey, "sender": ce.Sender, "content": ce.Content})
	}
	return out, nil
}

func (s *Server) syncEphemeral(ctx context.Context, q pgdb.DBTX, sess *Session, resp *syncResponse, joined []string, from, to, fromTyping int64, initial bool) error {
	if len(joined) == 0 {
		return nil
	}
	ensure := func(roomID string) *joinedRoom {
		jr := resp.Rooms.Join[roomID]
		if jr == nil {
			jr = &joinedRoom{Timeline: timelineBlock{Events: []ClientEvent{}}, State: stateBlock{Events: []ClientEvent{}},
				Ephemeral: eventsBlock{Events: []any{}}, AccountData: eventsBlock{Events: []any{}}}
			_ = roomSummaryAndCounts(ctx, q, sess, roomID, jr)
			resp.Rooms.Join[roomID] = jr
		}
		resp.hasNews = true
		return jr
	}
	for _, roomID := range joined {
		users, changed := s.typing.Typing(sess.T.TenantID, roomID, fromTyping)
		if changed && !(initial && len(users) == 0) {
			ensure(roomID).Ephemeral.Events = append(ensure(roomID).Ephemeral.Events,
				map[string]any{"type": "m.typing", "content": map[string]any{"user_ids": users}})
		}
	}
	receipts, err := storage.ReceiptsSince(ctx, q, joined, from, to)
	if err != nil {
		return err
	}
	byRoom := map[string]map[string]map[string]map[string]any{} // room -> event -> type -> user -> data
	for _, rc := range receipts {
		if rc.Type == "m.read.private" && rc.UserID != sess.UserID {
			continue
		}
		room := byRoom[rc.RoomID]
		if room == nil {
			room = map[string]map[string]map[string]any{}
			byRoom[rc.RoomID] = room
		}
		if room[rc.EventID] == nil {
			room[rc.EventID] = map[string]map[string]any{}
		}
		if room[rc.EventID][rc.Type] == nil {
			room[rc.EventID][rc.Type] = map[string]any{}
		}
		data := map[string]any{"ts": rc.TS}
		if rc.ThreadID != "" {
			data["thread_id"] = rc.ThreadID
		}
		room[rc.EventID][rc.Type][rc.UserID] = data
	}
	for roomID, content := range byRoom {
		jr := ensure(roomID)
		jr.Ephemeral.Events = append(jr.Ephemeral.Events, map[string]any{"type": "m.receipt", "content": content})
	}
	return nil
}

func (s *Server) syncToDevice(ctx context.Context, q pgdb.DBTX, sess *Session, resp *syncResponse, from, to int64) error {
	if from > 0 {
		// The client acknowledged everything up to its token.
		if err := storage.AckToDevice(ctx, q, sess.UserID, sess.DeviceID, from); err != nil {
			return err
		}
	}
	msgs, err := storage.ToDeviceSince(ctx, q, sess.UserID, sess.DeviceID, from, to, 100)
	if err != nil {
		return err
	}
	for _, m := range msgs {
		resp.ToDevice.Events = append(resp.ToDevice.Events, map[string]any{"sender": m.Sender, "type": m.Type, "content": m.Content})
		resp.hasNews = true
	}
	if len(msgs) == 100 {
		// More are waiting: hand out a token that stops after the last one delivered.
		tok, _ := parseSyncToken(resp.NextBatch)
		tok.Pos = msgs[len(msgs)-1].StreamPos
		resp.NextBatch = tok.String()
	}
	return nil
}

func (s *Server) syncDeviceLists(ctx context.Context, q pgdb.DBTX, sess *Session, resp *syncResponse, userRooms []storage.UserRoom, from, to int64) error {
	shared, err := storage.SharedRoomUsers(ctx, q, sess.UserID)
	if err != nil {
		return err
	}
	sharedSet := map[string]bool{sess.UserID: true}
	for _, u := range shared {
		sharedSet[u] = true
	}
	candidates := make([]string, 0, len(sharedSet))
	for u := range sharedSet {
		candidates = append(candidates, u)
	}
	// Users whose devices changed, ourselves included even outside any room.
	changed, err := storage.DeviceListChangesSince(ctx, q, candidates, from, to)
	if err != nil {
		return err
	}
	set := map[string]bool{}
	for _, u := range changed {
		set[u] = true
	}
	// Users who started sharing a room with us: everyone in a room we joined since the
	// token, and whoever joined one of our rooms.
	for _, ur := range userRooms {
		if ur.Membership != spec.Join {
			continue
		}
		joins, err := storage.JoinsSince(ctx, q, ur.RoomID, from, to)
		if err != nil {
			return err
		}
		weJoined := false
		for _, u := range joins {
			if u == sess.UserID {
				weJoined = true
			} else {
				set[u] = true
			}
		}
		if weJoined {
			members, err := storage.RoomMembers(ctx, q, ur.RoomID, spec.Join)
			if err != nil {
				return err
			}
			for _, m := range members {
				if m != sess.UserID {
					set[m] = true
				}
			}
		}
	}
	for u := range set {
		if sharedSet[u] {
			resp.DeviceLists.Changed = append(resp.DeviceLists.Changed, u)
		}
	}
	// Users with whom we no longer share any room, after a leave since the token.
	left, err := storage.LeftSince(ctx, q, sess.UserID, from, to)
	if err != nil {
		return err
	}
	for _, u := range left {
		if !sharedSet[u] {
			resp.DeviceLists.Left = append(resp.DeviceLists.Left, u)
		}
	}
	sort.Strings(resp.DeviceLists.Changed)
	sort.Strings(resp.DeviceLists.Left)
	if len(resp.DeviceLists.Changed) > 0 || len(resp.DeviceLists.Left) > 0 {
		resp.hasNews = true
	}
	return nil
}

func (s *Server) syncKeys(ctx context.Context, q pgdb.DBTX, sess *Session, resp *syncResponse) error {
	counts, err := storage.OneTimeKeyCounts(ctx, q, sess.UserID, sess.DeviceID)
	if err != nil {
		return err
	}
	if _, ok := counts["signed_curve25519"]; !ok {
		counts["signed_curve25519"] = 0
	}
	resp.OneTimeKeysCount = counts
	types, err := storage.UnusedFallbackKeyTypes(ctx, q, sess.UserID, sess.DeviceID)
	if err != nil {
		return err
	}
	if types != nil {
		resp.UnusedFallbackKeyTypes = types
	}
	return nil
}

// messages serves /rooms/{roomID}/messages.
func (s *Server) messages(w http.ResponseWriter, r *http.Request, sess *Session) error {
	roomID, err := pathRoomID(r)
	if err != nil {
		return err
	}
	qp := r.URL.Query()
	dir := qp.Get("dir")
	if dir != "b" && dir != "f" {
		return mxhttp.InvalidParam("dir must be b or f")
	}
	limit, err := queryInt(r, "limit", 10, 0, 1000)
	if err != nil {
		return err
	}
	filter, err := loadFilterForMessages(qp.Get("filter"))
	if err != nil {
		return err
	}
	var from, to int64 = -1, -1
	historyFrom := "" // an "h" token: only the history before the room's first stored event remains
	if v := qp.Get("from"); dir == "b" && strings.HasPrefix(v, "h") {
		historyFrom, from = v, 0
	} else if v != "" {
		if from, err = parsePageToken(v); err != nil {
			return err
		}
	}
	if v := qp.Get("to"); v != "" {
		if to, err = parsePageToken(v); err != nil {
			return err
		}
	}
	resp := map[string]any{}
	err = sess.T.Store.Tx(r.Context(), func(q pgdb.DBTX) error {
		a, err := roomAccess(r.Context(), q, roomID, sess.UserID)
		if err != nil {
			return err
		}
		cur, err := storage.CurrentStreamPos(r.Context(), q)
		if err != nil {
			return err
		}
		max := cur
		if a.MaxPos < max {
			max = a.MaxPos
		}
		var rows []storage.EventRow
		var end int64
		if dir == "b" {
			if from < 0 || from > max {
				from = max
			}
			lower := int64(0)
			if to >= 0 {
				lower = to
			}
			rows, err = storage.RoomEvents(r.Context(), q, roomID, lower, from, limit, true)
			if err != nil {
				return err
			}
			end = from
			if len(rows) > 0 {
				end = rows[len(rows)-1].StreamPos - 1
			}
		} else {
			if from < 0 {
				from = 0
			}
			upper := max
			if to >= 0 && to < upper {
				upper = to
			}
			rows, err = storage.RoomEvents(r.Context(), q, roomID, from, upper, limit, false)
			if err != nil {
				return err
			}
			end = from
			if len(rows) > 0 {
				end = rows[len(rows)-1].StreamPos
			}
		}
		chunk := []ClientEvent{}
		senders := map[string]bool{}
		for _, e := range rows {
			if filter != nil && !filter.allows(e.Type, e.Sender) {
				continue
			}
			chunk = append(chunk, clientEvent(e, sess.UserID, sess.DeviceID, true))
			senders[e.Sender] = true
		}
		resp["chunk"] = chunk
		resp["start"] = topoToken(from)
		if len(rows) == limit && limit > 0 {
			resp["end"] = topoToken(end)
		}
		if filter != nil && filter.LazyLoadMembers && len(senders) > 0 {
			tuples := make([]storage.StateKeyTuple, 0, len(senders))
			for u := range senders {
				tuples = append(tuples, storage.StateKeyTuple{Type: spec.MRoomMember, StateKey: u})
			}
			members, err := storage.CurrentStateEvents(r.Context(), q, roomID, tuples)
			if err != nil {
				return err
			}
			resp["state"] = clientEvents(members, sess.UserID, sess.DeviceID, true)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := s.pageHistory(r, sess, roomID, historyFrom, dir == "b" && to < 0 && resp["end"] == nil, limit, filter, resp); err != nil {
		return err
	}
	return mxhttp.JSON(w, http.StatusOK, resp)
}

// historyPager continues /messages backwards past the first event a tenant stores of a room
// it joined over federation (federation backfill; see docs/federation.md).
type historyPager interface {
	History(ctx context.Context, t *Tenant, roomID, userID, from string, limit int) ([]storage.EventRow, string, error)
}

// pageHistory fills the rest of a backwards page whose stream events ran out with the room's
// history from before them, ordered by depth, and sets its "h" end token.
func (s *Server) pageHistory(r *http.Request, sess *Session, roomID, from string, ranOut bool, limit int, filter *RoomEventFilter, resp map[string]any) error {
	hp, ok := s.opts.Remote.(historyPager)
	if !ok || !ranOut {
		return nil
	}
	chunk, _ := resp["chunk"].([]ClientEvent)
	rows, next, err := hp.History(r.Context(), sess.T, roomID, sess.UserID, from, limit-len(chunk))
	if err != nil {
		return err
	}
	for _, e := range rows {
		if filter == nil || filter.allows(e.Type, e.Sender) {
			chunk = append(chunk, clientEvent(e, sess.UserID, sess.DeviceID, true))
		}
	}
	resp["chunk"] = chunk
	if from != "" {
		resp["start"] = from
	}
	if next != "" {
		resp["end"] = next
	}
	return nil
}

func loadFilterForMessages(param string) (*RoomEventFilter, error) {
	if param == "" {
		return nil, nil
	}
	var f RoomEventFilter
	if err := json.Unmarshal([]byte(param), &f); err != nil {
		return nil, mxhttp.BadJSON("invalid filter: %v", safe(err))
	}
	return &f, nil
}
