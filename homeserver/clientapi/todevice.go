package clientapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/atoll-matrix/atoll/homeserver/storage"
	"github.com/atoll-matrix/atoll/internal/mxhttp"
	"github.com/atoll-matrix/atoll/internal/pgdb"
)

// sendToDevice queues messages for devices of local users, and for other servers' users as
// one m.direct_to_device EDU per server. A transaction ID already used by the sending device
// is answered without sending again.
func (s *Server) sendToDevice(w http.ResponseWriter, r *http.Request, sess *Session) error {
	eventType, txnID := r.PathValue("eventType"), r.PathValue("txnID")
	if eventType == "" || len(eventType) > 255 {
		return mxhttp.InvalidParam("invalid event type")
	}
	if txnID == "" || len(txnID) > 255 {
		return mxhttp.InvalidParam("invalid transaction ID")
	}
	var req struct {
		Messages map[string]map[string]json.RawMessage `json:"messages"`
	}
	if err := mxhttp.DecodeJSON(r, &req); err != nil {
		return err
	}
	if req.Messages == nil {
		return mxhttp.MissingParam("messages is required")
	}
	local := map[string]map[string]json.RawMessage{}
	remote := map[string]map[string]map[string]json.RawMessage{} // server -> user -> device
	for user, devices := range req.Messages {
		uid, err := spec.NewUserID(user, true)
		if err != nil {
			return mxhttp.InvalidParam("invalid user ID %q", truncate(user, 80))
		}
		for dev, content := range devices {
			if c := bytes.TrimSpace(content); len(c) == 0 || c[0] != '{' {
				return mxhttp.BadJSON("message content for %s/%s must be an object", truncate(user, 80), truncate(dev, 80))
			}
		}
		if uid.Domain() != sess.T.ServerName {
			if s.opts.Keys == nil {
				continue // no federation: other servers' users cannot be reached
			}
			srv := string(uid.Domain())
			if remote[srv] == nil {
				remote[srv] = map[string]map[string]json.RawMessage{}
			}
			remote[srv][user] = devices
			continue
		}
		local[user] = devices
	}
	ctx := r.Context()
	queued, fresh := false, false
	err := sess.T.Store.Tx(ctx, func(q pgdb.DBTX) error {
		var err error
		fresh, err = storage.RecordToDeviceTxn(ctx, q, sess.UserID, sess.DeviceID, txnID, time.Now().UnixMilli())
		if err != nil || !fresh {
			return err
		}
		for user, devices := range local {
			ids, err := storage.DeviceIDs(ctx, q, user)
			if err != nil {
				return err
			}
			exists := make(map[string]bool, len(ids))
			for _, id := range ids {
				exists[id] = true
			}
			for dev, content := range devices {
				targets := []string{dev}
				if dev == "*" {
					targets = ids
				} else if !exists[dev] {
					continue
				}
				for _, target := range targets {
					if _, err := storage.QueueToDevice(ctx, q, user, target, sess.UserID, eventType, content); err != nil {
						return err
					}
					queued = true
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if queued {
		s.notifier.Notify(sess.T.TenantID)
	}
	if fresh {
		// The message ID names this request, the same for every server it goes to.
		messageID := sess.DeviceID + ":" + txnID
		for srv, msgs := range remote {
			if err := s.opts.Keys.SendToDevice(ctx, sess.T, srv, sess.UserID, eventType, messageID, msgs); err != nil {
				return fmt.Errorf("queue to-device messages for %s: %w", srv, err)
			}
		}
	}
	return mxhttp.JSON(w, http.StatusOK, struct{}{})
}
