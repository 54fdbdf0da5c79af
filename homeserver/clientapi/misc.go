package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/atoll-matrix/atoll/homeserver/storage"
	"github.com/atoll-matrix/atoll/internal/mxhttp"
	"github.com/atoll-matrix/atoll/internal/pgdb"
)

func (s *Server) versions(w http.ResponseWriter, r *http.Request) error {
	return mxhttp.JSON(w, http.StatusOK, map[string]any{
		"versions":          []string{"r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10", "v1.11", "v1.12"},
		"unstable_features": map[string]bool{},
	})
}

func (s *Server) wellKnownClient(w http.ResponseWriter, r *http.Request, t *Tenant) error {
	scheme := s.opts.WellKnownScheme
	if scheme == "" {
		scheme = "https"
		if r.TLS == nil {
			scheme = "http"
		}
	}
	return mxhttp.JSON(w, http.StatusOK, map[string]any{"m.homeserver": map[string]string{"base_url": scheme + "://" + r.Host}})
}

func (s *Server) wellKnownServer(w http.ResponseWriter, r *http.Request, t *Tenant) error {
	server := string(t.ServerName)
	if _, _, err := splitPort(server); err != nil {
		server += ":443"
	}
	return mxhttp.JSON(w, http.StatusOK, map[string]string{"m.server": server})
}

func splitPort(host string) (string, string, error) {
	for i := len(host) - 1; i >= 0; i-- {
		if host[i] == ':' {
			if _, err := strconv.Atoi(host[i+1:]); err == nil {
				return host[:i], host[i+1:], nil
			}
			break
		}
		if host[i] == ']' {
			break
		}
	}
	return host, "", errors.New("no port")
}

func (s *Server) capabilities(w http.ResponseWriter, r *http.Request, sess *Session) error {
	available := map[string]string{}
	for v, impl := range gomatrixserverlib.RoomVersions() {
		if impl.Stable() {
			available[string(v)] = "stable"
		}
	}
	def := sess.T.Settings.DefaultRoomVersion
	if def == "" {
		def = string(DefaultRoomVersion)
	}
	return mxhttp.JSON(w, http.StatusOK, map[string]any{"capabilities": map[string]any{
		"m.change_password": map[string]bool{"enabled": true},
		"m.room_versions":   map[string]any{"default": def, "available": available},
		"m.set_displayname": map[string]bool{"enabled": true},
		"m.set_avatar_url":  map[string]bool{"enabled": true},
		"m.3pid_changes":    map[string]bool{"enabled": false},
		"m.get_login_token": map[string]bool{"enabled": false},
	}})
}

// Profile.

func (s *Server) profile(field string) tenantHandler {
	return func(w http.ResponseWriter, r *http.Request, t *Tenant) error {
		uid, err := pathUserID(r, "userID")
		if err != nil {
			return err
		}
		var out map[string]string
		if uid.Domain() != t.ServerName && s.opts.Remote != nil {
			if out, err = s.opts.Remote.QueryProfile(r.Context(), t, uid.String(), field); err != nil {
				s.log.InfoContext(r.Context(), "remote profile query failed", "tenant", t.TenantID, "err", err)
				return mxhttp.NotFound("profile not found")
			}
		} else if out, err = Profile(r.Context(), t, uid, field); err != nil {
			return err
		}
		if field != "" && len(out) == 0 {
			return mxhttp.NotFound("profile field not set")
		}
		return mxhttp.JSON(w, http.StatusOK, out)
	}
}

func (s *Server) setProfile(field string) authedHandler {
	return func(w http.ResponseWriter, r *http.Request, sess *Session) error {
		uid, err := pathUserID(r, "userID")
		if err != nil {
			return err
		}
		if uid.String() != sess.UserID {
			return mxhttp.Forbidden("you may only change your own profile")
		}
		var req map[string]any
		if err := mxhttp.DecodeJSON(r, &req); err != nil {
			return err
		}
		v, ok := req[field]
		str, isStr := v.(string)
		if !ok || (!isStr && v != nil) {
			return mxhttp.BadJSON("%s must be a string", field)
		}
		if len(str) > 256 && field == "displayname" || len(str) > 1024 {
			return mxhttp.BadJSON("%s is too long", field)
		}
		var joined []storage.UserRoom
		err = sess.T.Store.Tx(r.Context(), func(q pgdb.DBTX) error {
			var err error
			if field == "displayname" {
				err = storage.SetDisplayName(r.Context(), q, sess.Local, str)
			} else {
				err = storage.SetAvatarURL(r.Context(), q, sess.Local, str)
			}
			if err != nil {
				return err
			}
			joined, err = storage.UserRooms(r.Context(), q, sess.UserID)
			return err
		})
		if err != nil {
			return err
		}
		// Propagate into the member event of every joined room.
		for _, jr := range joined {
			if jr.Membership != spec.Join {
				continue
			}
			if _, err := s.sendMembership(r.Context(), sess.T, jr.RoomID, sess.UserID, sess.UserID, spec.Join, "", nil); err != nil {
				s.log.WarnContext(r.Context(), "profile propagation failed", "tenant", sess.T.TenantID, "err", err)
			}
		}
		return mxhttp.JSON(w, http.StatusOK, struct{}{})
	}
}

// Profile returns a local user's public profile (one field, or both when field is ""), for
// the client API and federation queries alike.
func Profile(ctx context.Context, t *Tenant, uid *spec.UserID, field string) (map[string]string, error) {
	if uid.Domain() != t.ServerName {
		return nil, mxhttp.NotFound("profile not found")
	}
	var u storage.User
	err := t.Store.Tx(ctx, func(q pgdb.DBTX) error {
		var err error
		u, err = storage.GetUser(ctx, q, uid.Local())
		return err
	})
	if errors.Is(err, storage.ErrNotFound) || (err == nil && u.Deactivated) {
		return nil, mxhttp.NotFound("profile not found")
	}
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	if (field == "" || field == "displayname") && u.DisplayName != "" {
		out["displayname"] = u.DisplayName
	}
	if (field == "" || field == "avatar_url") && u.AvatarURL != "" {
		out["avatar_url"] = u.AvatarURL
	}
	return out, nil
}

// Filters.

func (s *Server) postFilter(w http.ResponseWriter, r *http.Request, sess *Session) error {
	uid, err := pathUserID(r, "userID")
	if err != nil {
		return err
	}
	if uid.String() != sess.UserID {
		return mxhttp.Forbidden("you may only create filters for yourself")
	}
	var f Filter
	if err := mxhttp.DecodeJSON(r, &f); err != nil {
		return err
	}
	b, _ := json.Marshal(f)
	var id int64
	err = sess.T.Store.Tx(r.Context(), func(q pgdb.DBTX) error {
		return q.QueryRow(r.Context(), `INSERT INTO filters (user_id, filter) VALUES ($1, $2) RETURNING filter_id`, sess.UserID, b).Scan(&id)
	})
	if err != nil {
		return err
	}
	return mxhttp.JSON(w, http.StatusOK, map[string]string{"filter_id": strconv.FormatInt(id, 10)})
}

func (s *Server) getFilter(w http.ResponseWriter, r *http.Request, sess *Session) error {
	uid, err := pathUserID(r, "userID")
	if err != nil {
		return err
	}
	if uid.String() != sess.UserID {
		return mxhttp.Forbidden("you may only read your own filters")
	}
	f, err := loadFilter(r.Context(), sess, r.PathValue("filterID"))
	if err != nil {
		return err
	}
	if f == nil {
		return mxhttp.NotFound("unknown filter")
	}
	return mxhttp.JSON(w, http.StatusOK, f)
}

// Typing, receipts, read markers.

func (s *Server) putTyping(w http.ResponseWriter, r *http.Request, sess *Session) error {
	roomID, err := pathRoomID(r)
	if err != nil {
		return err
	}
	uid, err := pathUserID(r, "userID")
	if err != nil {
		return err
	}
	if uid.String() != sess.UserID {
		return mxhttp.Forbidden("you may only set your own typing state")
	}
	var req struct {
		Typing  *bool `json:"typing"`
		Timeout int   `json:"timeout"`
	}
	if err := mxhttp.DecodeJSON(r, &req); err != nil {
		return err
	}
	if req.Typing == nil {
		return mxhttp.MissingParam("typing is required")
	}
	if err := s.requireJoined(r, sess, roomID); err != nil {
		return err
	}
	timeout := time.Duration(req.Timeout) * time.Millisecond
	if timeout <= 0 || timeout > 2*time.Minute {
		timeout = 30 * time.Second
	}
	s.typing.Set(sess.T.TenantID, roomID, sess.UserID, *req.Typing, timeout)
	if s.opts.Ephemeral != nil {
		// Best effort, as typing is: a lost notice costs a moment of "typing…" elsewhere.
		if err := s.opts.Ephemeral.Typing(r.Context(), sess.T, roomID, sess.UserID, *req.Typing, timeout); err != nil {
			s.log.InfoContext(r.Context(), "typing not sent to other servers", "tenant", sess.T.TenantID, "err", err)
		}
	}
	return mxhttp.JSON(w, http.StatusOK, struct{}{})
}

func (s *Server) requireJoined(r *http.Request, sess *Session, roomID string) error {
	return sess.T.Store.Tx(r.Context(), func(q pgdb.DBTX) error {
		a, err := roomAccess(r.Context(), q, roomID, sess.UserID)
		if err != nil {
			return err
		}
		if !a.Joined {
			return mxhttp.Forbidden("you are not in this room")
		}
		return nil
	})
}

func (s *Server) postReceipt(w http.ResponseWriter, r *http.Request, sess *Session) error {
	roomID, err := pathRoomID(r)
	if err != nil {
		return err
	}
	typ, eventID := r.PathValue("receiptType"), r.PathValue("eventID")
	if typ != "m.read" && typ != "m.read.private" && typ != "m.fully_read" {
		return mxhttp.InvalidParam("unknown receipt type")
	}
	var req struct {
		ThreadID string `json:"thread_id"`
	}
	if err := mxhttp.DecodeJSON(r, &req); err != nil {
		return err
	}
	if typ == "m.fully_read" && req.ThreadID != "" {
		return mxhttp.InvalidParam("m.fully_read cannot be threaded")
	}
	if err := s.markRead(r, sess, roomID, typ, eventID, req.ThreadID); err != nil {
		return err
	}
	return mxhttp.JSON(w, http.StatusOK, struct{}{})
}

func (s *Server) markRead(r *http.Request, sess *Session, roomID, typ, eventID, thread string) error {
	err := sess.T.Store.Tx(r.Context(), func(q pgdb.DBTX) error {
		a, err := roomAccess(r.Context(), q, roomID, sess.UserID)
		if err != nil {
			return err
		}
		if !a.Joined {
			return mxhttp.Forbidden("you are not in this room")
		}
		ev, err := storage.EventByID(r.Context(), q, eventID)
		if errors.Is(err, storage.ErrNotFound) || (err == nil && ev.RoomID != roomID) {
			return mxhttp.NotFound("unknown event")
		}
		if err != nil {
			return err
		}
		if typ == "m.fully_read" {
			c, _ := json.Marshal(map[string]string{"event_id": eventID})
			_, err = storage.PutAccountData(r.Context(), q, sess.UserID, roomID, "m.fully_read", c)
			return err
		}
		_, err = storage.PutReceipt(r.Context(), q, storage.Receipt{RoomID: roomID, Type: typ, UserID: sess.UserID, ThreadID: thread, EventID: eventID, TS: time.Now().UnixMilli()})
		return err
	})
	if err != nil {
		return err
	}
	s.notifier.Notify(sess.T.TenantID)
	if typ == "m.read" && s.opts.Ephemeral != nil {
		if err := s.opts.Ephemeral.Receipt(r.Context(), sess.T, roomID, sess.UserID, eventID, thread, time.Now().UnixMilli()); err != nil {
			s.log.InfoContext(r.Context(), "receipt not sent to other servers", "tenant", sess.T.TenantID, "err", err)
		}
	}
	return nil
}

func (s *Server) readMarkers(w http.ResponseWriter, r *http.Request, sess *Session) error {
	roomID, err := pathRoomID(r)
	if err != nil {
		return err
	}
	var req struct {
		FullyRead   string `json:"m.fully_read"`
		Read        string `json:"m.read"`
		ReadPrivate string `json:"m.read.private"`
	}
	if err := mxhttp.DecodeJSON(r, &req); err != nil {
		return err
	}
	for typ, id := range map[string]string{"m.fully_read": req.FullyRead, "m.read": req.Read, "m.read.private": req.ReadPrivate} {
		if id == "" {
			continue
		}
		if err := s.markRead(r, sess, roomID, typ, id, ""); err != nil {
			return err
		}
	}
	return mxhttp.JSON(w, http.StatusOK, struct{}{})
}

// Account data.

func (s *Server) accountData(put bool, perRoom bool) authedHandler {
	return func(w http.ResponseWriter, r *http.Request, sess *Session) error {
		uid, err := pathUserID(r, "userID")
		if err != nil {
			return err
		}
		if uid.String() != sess.UserID {
			return mxhttp.Forbidden("you may only access your own account data")
		}
		roomID := ""
		if perRoom {
			if roomID, err = pathRoomID(r); err != nil {
				return err
			}
		}
		typ := r.PathValue("type")
		if typ == "" || len(typ) > 255 {
			return mxhttp.InvalidParam("invalid account data type")
		}
		if put {
			if typ == "m.fully_read" || typ == "m.push_rules" {
				return mxhttp.Code(http.StatusBadRequest, "M_BAD_JSON", "%s cannot be set through account data", typ)
			}
			content, err := readContent(r)
			if err != nil {
				return err
			}
			err = sess.T.Store.Tx(r.Context(), func(q pgdb.DBTX) error {
				_, err := storage.PutAccountData(r.Context(), q, sess.UserID, roomID, typ, content)
				return err
			})
			if err != nil {
				return err
			}
			s.notifier.Notify(sess.T.TenantID)
			return mxhttp.JSON(w, http.StatusOK, struct{}{})
		}
		var content json.RawMessage
		err = sess.T.Store.Tx(r.Context(), func(q pgdb.DBTX) error {
			var err error
			content, err = storage.GetAccountData(r.Context(), q, sess.UserID, roomID, typ)
			return err
		})
		if errors.Is(err, storage.ErrNotFound) {
			return mxhttp.NotFound("account data not found")
		}
		if err != nil {
			return err
		}
		return mxhttp.JSON(w, http.StatusOK, content)
	}
}
