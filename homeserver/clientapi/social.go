package clientapi

import (
	"encoding/json"
	"errors"
	"net/http"

	"time"

	"github.com/atoll-matrix/atoll/homeserver/storage"
	"github.com/atoll-matrix/atoll/internal/mxhttp"
	"github.com/atoll-matrix/atoll/internal/pgdb"
)

// User directory.

func (s *Server) searchUsers(w http.ResponseWriter, r *http.Request, sess *Session) error {
	var req struct {
		SearchTerm string `json:"search_term"`
		Limit      int    `json:"limit"`
	}
	if err := mxhttp.DecodeJSON(r, &req); err != nil {
		return err
	}
	if req.SearchTerm == "" {
		return mxhttp.MissingParam("search_term is required")
	}
	if req.Limit <= 0 || req.Limit > 50 {
		req.Limit = 10
	}
	var found []storage.DirectoryUser
	err := sess.T.Store.Tx(r.Context(), func(q pgdb.DBTX) error {
		var err error
		found, err = storage.SearchUsers(r.Context(), q, string(sess.T.ServerName), sess.UserID, req.SearchTerm, req.Limit+1)
		return err
	})
	if err != nil {
		return err
	}
	limited := len(found) > req.Limit
	if limited {
		found = found[:req.Limit]
	}
	results := make([]map[string]any, 0, len(found))
	for _, u := range found {
		m := map[string]any{"user_id": u.UserID}
		if u.DisplayName != "" {
			m["display_name"] = u.DisplayName
		}
		if u.AvatarURL != "" {
			m["avatar_url"] = u.AvatarURL
		}
		results = append(results, m)
	}
	return mxhttp.JSON(w, http.StatusOK, map[string]any{"results": results, "limited": limited})
}

// Relations and threads.

func (s *Server) relations(w http.ResponseWriter, r *http.Request, sess *Session) error {
	roomID, err := pathRoomID(r)
	if err != nil {
		return err
	}
	eventID := r.PathValue("eventID")
	relType, evType := r.PathValue("relType"), r.PathValue("eventType")
	limit, err := queryInt(r, "limit", 50, 1, 500)
	if err != nil {
		return err
	}
	var from int64
	if v := r.URL.Query().Get("from"); v != "" {
		if from, err = parsePageToken(v); err != nil {
			return err
		}
	}
	resp := map[string]any{}
	err = sess.T.Store.Tx(r.Context(), func(q pgdb.DBTX) error {
		a, err := roomAccess(r.Context(), q, roomID, sess.UserID)
		if err != nil {
			return err
		}
		parent, err := storage.EventByID(r.Context(), q, eventID)
		if errors.Is(err, storage.ErrNotFound) || (err == nil && (parent.RoomID != roomID || parent.StreamPos > a.MaxPos)) {
			return mxhttp.NotFound("event not found")
		}
		if err != nil {
			return err
		}
		rows, err := storage.Relations(r.Context(), q, roomID, eventID, relType, evType, from, limit+1)
		if err != nil {
			return err
		}
		var visible []storage.EventRow
		for _, e := range rows {
			if e.StreamPos <= a.MaxPos {
				visible = append(visible, e)
			}
		}
		if len(visible) > limit {
			visible = visible[:limit]
			resp["next_batch"] = topoToken(visible[len(visible)-1].StreamPos)
		}
		resp["chunk"] = clientEvents(visible, sess.UserID, sess.DeviceID, true)
		return nil
	})
	if err != nil {
		return err
	}
	return mxhttp.JSON(w, http.StatusOK, resp)
}

func (s *Server) threads(w http.ResponseWriter, r *http.Request, sess *Session) error {
	roomID, err := pathRoomID(r)
	if err != nil {
		return err
	}
	limit, err := queryInt(r, "limit", 50, 1, 500)
	if err != nil {
		return err
	}
	include := r.URL.Query().Get("include")
	if include != "" && include != "all" && include != "participated" {
		return mxhttp.InvalidParam("include must be all or participated")
	}
	var from int64
	if v := r.URL.Query().Get("from"); v != "" {
		if from, err = parsePageToken(v); err != nil {
			return err
		}
	}
	resp := map[string]any{}
	err = sess.T.Store.Tx(r.Context(), func(q pgdb.DBTX) error {
		a, err := roomAccess(r.Context(), q, roomID, sess.UserID)
		if err != nil {
			return err
		}
		rows, err := storage.ThreadRoots(r.Context(), q, roomID, from, limit+1)
		if err != nil {
			return err
		}
		var out []storage.EventRow
		for _, e := range rows {
			if e.StreamPos > a.MaxPos {
				continue
			}
			if include == "participated" && e.Sender != sess.UserID {
				replies, err := storage.Relations(r.Context(), q, roomID, e.EventID, "m.thread", "", 0, 1000)
				if err != nil {
					return err
				}
				mine := false
				for _, rp := range replies {
					if rp.Sender == sess.UserID {
						mine = true
						break
					}
				}
				if !mine {
					continue
				}
			}
			out = append(out, e)
		}
		if len(out) > limit {
			out = out[:limit]
			resp["next_batch"] = topoToken(out[len(out)-1].StreamPos)
		}
		resp["chunk"] = clientEvents(out, sess.UserID, sess.DeviceID, true)
		return nil
	})
	if err != nil {
		return err
	}
	return mxhttp.JSON(w, http.StatusOK, resp)
}

// Reporting content.

func (s *Server) report(w http.ResponseWriter, r *http.Request, sess *Session) error {
	roomID, err := pathRoomID(r)
	if err != nil {
		return err
	}
	eventID := r.PathValue("eventID")
	var req struct {
		Reason string `json:"reason"`
		Score  *int   `json:"score"`
	}
	if err := mxhttp.DecodeJSON(r, &req); err != nil {
		return err
	}
	if req.Score != nil && (*req.Score < -100 || *req.Score > 0) {
		return mxhttp.InvalidParam("score must be between -100 and 0")
	}
	if len(req.Reason) > 1000 {
		return mxhttp.InvalidParam("reason is too long")
	}
	err = sess.T.Store.Tx(r.Context(), func(q pgdb.DBTX) error {
		a, err := roomAccess(r.Context(), q, roomID, sess.UserID)
		if err != nil {
			return mxhttp.NotFound("event not found")
		}
		var ev *string
		if eventID != "" {
			e, err := storage.EventByID(r.Context(), q, eventID)
			if errors.Is(err, storage.ErrNotFound) || (err == nil && (e.RoomID != roomID || e.StreamPos > a.MaxPos)) {
				return mxhttp.NotFound("event not found")
			}
			if err != nil {
				return err
			}
			ev = &eventID
		}
		_, err = q.Exec(r.Context(), `INSERT INTO reports (room_id, event_id, user_id, reason, score, ts) VALUES ($1, $2, $3, $4, $5, $6)`,
			roomID, ev, sess.UserID, req.Reason, req.Score, time.Now().UnixMilli())
		return err
	})
	if err != nil {
		return err
	}
	return mxhttp.JSON(w, http.StatusOK, struct{}{})
}

// Room tags live in the room's m.tag account data, as the spec describes.

func (s *Server) tags(w http.ResponseWriter, r *http.Request, sess *Session) error {
	uid, err := pathUserID(r, "userID")
	if err != nil {
		return err
	}
	if uid.String() != sess.UserID {
		return mxhttp.Forbidden("you may only access your own tags")
	}
	roomID, err := pathRoomID(r)
	if err != nil {
		return err
	}
	tag := r.PathValue("tag")
	if r.Method != http.MethodGet && (tag == "" || len(tag) > 255) {
		return mxhttp.InvalidParam("invalid tag")
	}
	var body map[string]any
	if r.Method == http.MethodPut {
		if err := mxhttp.DecodeJSON(r, &body); err != nil {
			return err
		}
		if o, ok := body["order"]; ok {
			if _, isNum := o.(float64); !isNum {
				return mxhttp.BadJSON("order must be a number")
			}
		}
	}
	type tagContent struct {
		Tags map[string]map[string]any `json:"tags"`
	}
	var content tagContent
	err = sess.T.Store.Tx(r.Context(), func(q pgdb.DBTX) error {
		raw, err := storage.GetAccountData(r.Context(), q, sess.UserID, roomID, "m.tag")
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			return err
		}
		if len(raw) > 0 {
			_ = json.Unmarshal(raw, &content)
		}
		if content.Tags == nil {
			content.Tags = map[string]map[string]any{}
		}
		switch r.Method {
		case http.MethodGet:
			return nil
		case http.MethodPut:
			if body == nil {
				body = map[string]any{}
			}
			content.Tags[tag] = body
		case http.MethodDelete:
			delete(content.Tags, tag)
		}
		b, _ := json.Marshal(content)
		_, err = storage.PutAccountData(r.Context(), q, sess.UserID, roomID, "m.tag", b)
		return err
	})
	if err != nil {
		return err
	}
	if r.Method == http.MethodGet {
		return mxhttp.JSON(w, http.StatusOK, content)
	}
	s.notifier.Notify(sess.T.TenantID)
	return mxhttp.JSON(w, http.StatusOK, struct{}{})
}
