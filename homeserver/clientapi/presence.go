package clientapi

import (
	"context"
	"net/http"
	"time"

	"github.com/atoll-matrix/atoll/homeserver/presence"
	"github.com/atoll-matrix/atoll/homeserver/storage"
	"github.com/atoll-matrix/atoll/internal/mxhttp"
	"github.com/atoll-matrix/atoll/internal/pgdb"
)

// Presence: GET and PUT /presence/{userId}/status, set_presence and the presence section of
// /sync. The state itself is in homeserver/presence (ephemeral, per shard, mirrored in Redis).

// presenceRoute is the route name of PUT /presence.
const presenceRoute = "client.presence_set"

// isActivity reports whether a route counts as the user's activity for presence: what a
// person does (send, read, type, join), not what clients do in the background (key queries,
// filters, pushers), as in Synapse.
func isActivity(route string) bool {
	switch route {
	case "client.send", "client.redact", "client.put_state", "client.receipt", "client.read_markers",
		"client.typing", "client.create_room", "client.join":
		return true
	}
	return false
}

// presenceActive records the user's activity for presence on the routes that count.
func (s *Server) presenceActive(r *http.Request, route string, sess *Session) {
	if s.presence == nil || r.Method == http.MethodGet || !isActivity(route) {
		return
	}
	s.presence.Active(sess.T.TenantID, sess.UserID)
}

// getPresence serves GET /presence/{userId}/status: one's own, or that of a user sharing a
// room with the caller.
func (s *Server) getPresence(w http.ResponseWriter, r *http.Request, sess *Session) error {
	uid, err := pathUserID(r, "userID")
	if err != nil {
		return err
	}
	target := uid.String()
	if target != sess.UserID {
		var shared []string
		err := sess.T.Store.Tx(r.Context(), func(q pgdb.DBTX) error {
			var err error
			shared, err = storage.SharedRoomUsers(r.Context(), q, sess.UserID)
			return err
		})
		if err != nil {
			return err
		}
		ok := false
		for _, u := range shared {
			if u == target {
				ok = true
				break
			}
		}
		if !ok {
			return mxhttp.Forbidden("you do not share a room with this user")
		}
	}
	s.presence.Load(r.Context(), sess.T.TenantID)
	st := s.presence.Get(sess.T.TenantID, target)
	return mxhttp.JSON(w, http.StatusOK, st.Content(time.Now(), false))
}

// putPresence serves PUT /presence/{userId}/status for the caller's own presence.
func (s *Server) putPresence(w http.ResponseWriter, r *http.Request, sess *Session) error {
	uid, err := pathUserID(r, "userID")
	if err != nil {
		return err
	}
	if uid.String() != sess.UserID {
		return mxhttp.Forbidden("you may only set your own presence")
	}
	var req struct {
		Presence  *string `json:"presence"`
		StatusMsg *string `json:"status_msg"`
	}
	if err := mxhttp.DecodeJSON(r, &req); err != nil {
		return err
	}
	if req.Presence == nil {
		return mxhttp.MissingParam("presence is required")
	}
	if !presence.Valid(*req.Presence) {
		return mxhttp.InvalidParam("presence must be online, offline or unavailable")
	}
	msg := ""
	if req.StatusMsg != nil {
		msg = truncate(*req.StatusMsg, 1024)
	}
	s.presence.Load(r.Context(), sess.T.TenantID)
	s.presence.Set(sess.T.TenantID, sess.UserID, *req.Presence, msg)
	return mxhttp.JSON(w, http.StatusOK, struct{}{})
}

// syncPresence fills the presence section: the m.presence events of the caller and of users
// sharing a room with the caller that changed after the token's presence serial (up to upto),
// or everyone not offline on an initial sync.
func (s *Server) syncPresence(ctx context.Context, q pgdb.DBTX, sess *Session, resp *syncResponse, filter *Filter, since, upto int64, initial bool) error {
	if filter != nil && filter.Presence != nil && filter.Presence.Types != nil && len(filter.Presence.Types) == 0 {
		return nil
	}
	changed := s.presence.Since(sess.T.TenantID, since, upto, initial)
	if len(changed) == 0 {
		return nil
	}
	shared, err := storage.SharedRoomUsers(ctx, q, sess.UserID)
	if err != nil {
		return err
	}
	visible := map[string]bool{sess.UserID: true}
	for _, u := range shared {
		visible[u] = true
	}
	var pf *EventFilter
	if filter != nil {
		pf = filter.Presence
	}
	limit := -1
	if pf != nil && pf.Limit != nil {
		limit = *pf.Limit
	}
	now := time.Now()
	for _, st := range changed {
		if !visible[st.UserID] || !pf.allows("m.presence", st.UserID) {
			continue
		}
		if limit >= 0 && len(resp.Presence.Events) >= limit {
			break
		}
		resp.Presence.Events = append(resp.Presence.Events, st.Event(now))
		resp.hasNews = true
	}
	return nil
}
