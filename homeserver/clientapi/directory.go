package clientapi

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/atoll-matrix/atoll/homeserver/storage"
	"github.com/atoll-matrix/atoll/internal/mxhttp"
	"github.com/atoll-matrix/atoll/internal/pgdb"
)

// RemoteDirectory reaches the room directory, spaces, knocks and timelines of other servers
// (federation). The federation server implements it next to RemoteRooms; without it these
// requests stay local.
type RemoteDirectory interface {
	// PublicRooms asks server for its public room directory.
	PublicRooms(ctx context.Context, t *Tenant, server string, q PublicRoomsQuery) (PublicRoomsPage, error)
	// Knock makes a local user knock on a room of another server (make_knock, send_knock).
	Knock(ctx context.Context, t *Tenant, userID, roomID string, via []string, reason string) error
	// WithdrawKnock retracts a local user's pending knock on a room of another server.
	WithdrawKnock(ctx context.Context, t *Tenant, roomID, userID string) error
	// Hierarchy asks one of the servers for a room's summary and its children.
	Hierarchy(ctx context.Context, t *Tenant, roomID string, via []string, suggestedOnly bool) (RemoteHierarchy, error)
	// TimestampToEvent asks the servers for the event closest to ts in direction dir.
	TimestampToEvent(ctx context.Context, t *Tenant, roomID string, servers []string, ts int64, dir string) (eventID string, eventTS int64, err error)
}

// RemoteHierarchy is another server's answer about one room of a space.
type RemoteHierarchy struct {
	Room         SpaceRoom
	Children     []SpaceRoom
	Inaccessible []string
}

// remoteDirectory returns the federation side when it is wired.
func (s *Server) remoteDirectory() RemoteDirectory {
	rd, _ := s.opts.Remote.(RemoteDirectory)
	return rd
}

// PublicRoomsQuery selects a page of a public room directory.
type PublicRoomsQuery struct {
	Limit  int
	Since  string
	Filter string // generic_search_term, matched case-insensitively
}

// PublicRoomsPage is one page of a public room directory, as the client and federation APIs
// answer it.
type PublicRoomsPage struct {
	Chunk     []PublicRoom `json:"chunk"`
	NextBatch string       `json:"next_batch,omitempty"`
	PrevBatch string       `json:"prev_batch,omitempty"`
	Total     int          `json:"total_room_count_estimate"`
}

// PublicRoom is a room's entry in the directory and the summary of the room hierarchy.
type PublicRoom = publicRoom

// PublicRooms lists a page of the tenant's published rooms. The client and federation
// directory endpoints both answer with it.
func PublicRooms(ctx context.Context, t *Tenant, pq PublicRoomsQuery) (PublicRoomsPage, error) {
	offset := 0
	if pq.Since != "" {
		n, err := strconv.Atoi(pq.Since)
		if err != nil || n < 0 {
			return PublicRoomsPage{}, mxhttp.InvalidParam("invalid since token")
		}
		offset = n
	}
	limit := pq.Limit
	if limit <= 0 {
		limit = 100
	}
	if limit > 500 {
		limit = 500
	}
	filter := strings.ToLower(pq.Filter)
	page := PublicRoomsPage{Chunk: []PublicRoom{}}
	err := t.Store.Tx(ctx, func(q pgdb.DBTX) error {
		list, total, err := storage.PublishedRooms(ctx, q, offset, limit)
		if err != nil {
			return err
		}
		for _, p := range list {
			pr, err := directoryEntry(ctx, q, p.RoomID)
			if err != nil {
				return err
			}
			pr.NumJoinedMembers = p.Members
			if filter != "" && !strings.Contains(strings.ToLower(pr.Name+" "+pr.Topic+" "+pr.CanonicalAlias), filter) {
				continue
			}
			page.Chunk = append(page.Chunk, pr)
		}
		page.Total = total
		if offset+len(list) < total {
			page.NextBatch = strconv.Itoa(offset + len(list))
		}
		if offset > 0 {
			page.PrevBatch = strconv.Itoa(max(offset-limit, 0))
		}
		return nil
	})
	if err != nil {
		return PublicRoomsPage{}, fmt.Errorf("public rooms: %w", err)
	}
	return page, nil
}

// directoryEntry describes a stored room from its current state.
func directoryEntry(ctx context.Context, q pgdb.DBTX, roomID string) (publicRoom, error) {
	pr := publicRoom{RoomID: roomID}
	if err := q.QueryRow(ctx, `SELECT count(*) FROM current_state WHERE room_id = $1 AND type = 'm.room.member'
		AND membership = 'join'`, roomID).Scan(&pr.NumJoinedMembers); err != nil {
		return pr, fmt.Errorf("members of %s: %w", roomID, err)
	}
	events, err := storage.CurrentStateEvents(ctx, q, roomID, []storage.StateKeyTuple{
		{Type: spec.MRoomName}, {Type: spec.MRoomTopic}, {Type: spec.MRoomCanonicalAlias}, {Type: "m.room.avatar"},
		{Type: spec.MRoomJoinRules}, {Type: spec.MRoomHistoryVisibility}, {Type: "m.room.guest_access"}, {Type: spec.MRoomCreate}})
	if err != nil {
		return pr, fmt.Errorf("state of %s: %w", roomID, err)
	}
	for _, e := range events {
		var c map[string]any
		_ = json.Unmarshal(clientEvent(e, "", "", false).Content, &c)
		str := func(k string) string { v, _ := c[k].(string); return v }
		switch e.Type {
		case spec.MRoomName:
			pr.Name = str("name")
		case spec.MRoomTopic:
			pr.Topic = str("topic")
		case spec.MRoomCanonicalAlias:
			pr.CanonicalAlias = str("alias")
		case "m.room.avatar":
			pr.AvatarURL = str("url")
		case spec.MRoomJoinRules:
			pr.JoinRule = str("join_rule")
		case spec.MRoomHistoryVisibility:
			pr.WorldReadable = str("history_visibility") == "world_readable"
		case "m.room.guest_access":
			pr.GuestCanJoin = str("guest_access") == "can_join"
		case spec.MRoomCreate:
			pr.RoomType = str("type")
		}
	}
	return pr, nil
}
