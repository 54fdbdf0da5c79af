package clientapi

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/atoll-matrix/atoll/homeserver/storage"
	"github.com/atoll-matrix/atoll/internal/mxhttp"
	"github.com/atoll-matrix/atoll/internal/pgdb"
)

// Pushers and the notifications list.

// pushNotifyPath is the only path a push gateway URL may have.
const pushNotifyPath = "/_matrix/push/v1/notify"

type pusherJSON struct {
	Pushkey           string          `json:"pushkey"`
	Kind              string          `json:"kind"`
	AppID             string          `json:"app_id"`
	AppDisplayName    string          `json:"app_display_name"`
	DeviceDisplayName string          `json:"device_display_name"`
	ProfileTag        string          `json:"profile_tag,omitempty"`
	Lang              string          `json:"lang"`
	Data              json.RawMessage `json:"data"`
}

func (s *Server) getPushers(w http.ResponseWriter, r *http.Request, sess *Session) error {
	var ps []storage.Pusher
	err := sess.T.Store.Tx(r.Context(), func(q pgdb.DBTX) error {
		var err error
		ps, err = storage.UserPushers(r.Context(), q, sess.UserID)
		return err
	})
	if err != nil {
		return err
	}
	out := make([]pusherJSON, 0, len(ps))
	for _, p := range ps {
		out = append(out, pusherJSON{Pushkey: p.Pushkey, Kind: p.Kind, AppID: p.AppID, AppDisplayName: p.AppDisplayName,
			DeviceDisplayName: p.DeviceDisplayName, ProfileTag: p.ProfileTag, Lang: p.Lang, Data: p.Data})
	}
	return mxhttp.JSON(w, http.StatusOK, map[string]any{"pushers": out})
}

func (s *Server) setPusher(w http.ResponseWriter, r *http.Request, sess *Session) error {
	var raw map[string]json.RawMessage
	if err := mxhttp.DecodeJSON(r, &raw); err != nil {
		return err
	}
	var body struct {
		Pushkey           *string         `json:"pushkey"`
		Kind              *string         `json:"kind"`
		AppID             *string         `json:"app_id"`
		AppDisplayName    *string         `json:"app_display_name"`
		DeviceDisplayName *string         `json:"device_display_name"`
		ProfileTag        string          `json:"profile_tag"`
		Lang              *string         `json:"lang"`
		Data              json.RawMessage `json:"data"`
		Append            bool            `json:"append"`
	}
	b, _ := json.Marshal(raw)
	if err := json.Unmarshal(b, &body); err != nil {
		return mxhttp.BadJSON("invalid pusher: a field has the wrong type")
	}
	if body.Pushkey == nil || body.AppID == nil {
		return mxhttp.MissingParam("pushkey and app_id are required")
	}
	if _, ok := raw["kind"]; !ok {
		return mxhttp.MissingParam("kind is required")
	}
	if len(*body.AppID) > 64 || len(*body.Pushkey) > 512 || *body.AppID == "" || *body.Pushkey == "" {
		return mxhttp.InvalidParam("app_id must be 1 to 64 characters and pushkey 1 to 512 bytes")
	}
	ctx := r.Context()
	if body.Kind == nil { // kind null deletes the pusher
		return s.storePusher(w, r, sess, func(q pgdb.DBTX) error {
			return storage.DeletePusher(ctx, q, sess.UserID, *body.AppID, *body.Pushkey)
		})
	}
	if body.AppDisplayName == nil || body.DeviceDisplayName == nil || body.Lang == nil || len(body.Data) == 0 {
		return mxhttp.MissingParam("app_display_name, device_display_name, lang and data are required")
	}
	if *body.Kind != "http" {
		return mxhttp.InvalidParam("unsupported pusher kind %q", truncate(*body.Kind, 40))
	}
	var data struct {
		URL    *string `json:"url"`
		Format *string `json:"format"`
	}
	if err := json.Unmarshal(body.Data, &data); err != nil {
		return mxhttp.BadJSON("data must be an object")
	}
	if data.URL == nil {
		return mxhttp.MissingParam("data.url is required for http pushers")
	}
	u, err := url.Parse(*data.URL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.Path != pushNotifyPath {
		return mxhttp.InvalidParam("data.url must be an https URL with the path %s", pushNotifyPath)
	}
	if data.Format != nil && *data.Format != "event_id_only" {
		return mxhttp.InvalidParam("unsupported data.format")
	}
	p := storage.Pusher{UserID: sess.UserID, AppID: *body.AppID, Pushkey: *body.Pushkey, Kind: *body.Kind,
		AppDisplayName: *body.AppDisplayName, DeviceDisplayName: *body.DeviceDisplayName, ProfileTag: body.ProfileTag,
		Lang: *body.Lang, Data: body.Data, DeviceID: sess.DeviceID, CreatedTS: time.Now().UnixMilli()}
	return s.storePusher(w, r, sess, func(q pgdb.DBTX) error {
		if !body.Append {
			if err := storage.DeletePushersOfOthers(ctx, q, p.AppID, p.Pushkey, sess.UserID); err != nil {
				return err
			}
		}
		return storage.UpsertPusher(ctx, q, p)
	})
}

func (s *Server) storePusher(w http.ResponseWriter, r *http.Request, sess *Session, fn func(q pgdb.DBTX) error) error {
	if err := sess.T.Store.Tx(r.Context(), fn); err != nil {
		return err
	}
	return mxhttp.JSON(w, http.StatusOK, struct{}{})
}

type notificationJSON struct {
	Actions    json.RawMessage `json:"actions"`
	Event      ClientEvent     `json:"event"`
	ProfileTag string          `json:"profile_tag,omitempty"`
	Read       bool            `json:"read"`
	RoomID     string          `json:"room_id"`
	TS         int64           `json:"ts"`
}

func (s *Server) getNotifications(w http.ResponseWriter, r *http.Request, sess *Session) error {
	qs := r.URL.Query()
	var from int64
	if f := qs.Get("from"); f != "" {
		v, err := strconv.ParseInt(f, 10, 64)
		if err != nil || v < 0 {
			return mxhttp.InvalidParam("invalid from token")
		}
		from = v
	}
	limit := 50
	if l := qs.Get("limit"); l != "" {
		v, err := strconv.Atoi(l)
		if err != nil || v < 1 {
			return mxhttp.InvalidParam("limit must be a positive integer")
		}
		limit = min(v, 100)
	}
	only := qs.Get("only")
	var ns []storage.Notification
	err := sess.T.Store.Tx(r.Context(), func(q pgdb.DBTX) error {
		var err error
		ns, err = storage.Notifications(r.Context(), q, sess.UserID, from, limit+1, only == "highlight")
		return err
	})
	if err != nil {
		return err
	}
	resp := struct {
		NextToken     string             `json:"next_token,omitempty"`
		Notifications []notificationJSON `json:"notifications"`
	}{Notifications: []notificationJSON{}}
	if len(ns) > limit {
		ns = ns[:limit]
		resp.NextToken = strconv.FormatInt(ns[len(ns)-1].StreamPos, 10)
	}
	for _, n := range ns {
		actions := n.Actions
		if len(actions) == 0 {
			actions = json.RawMessage("[]")
		}
		resp.Notifications = append(resp.Notifications, notificationJSON{Actions: actions,
			Event: clientEvent(n.Event, sess.UserID, sess.DeviceID, true), Read: n.Read, RoomID: n.RoomID, TS: n.Event.OriginServerTS})
	}
	return mxhttp.JSON(w, http.StatusOK, resp)
}
