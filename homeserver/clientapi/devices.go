package clientapi

import (
	"errors"
	"net/http"
	"unicode/utf8"

	"github.com/atoll-matrix/atoll/homeserver/storage"
	"github.com/atoll-matrix/atoll/internal/mxhttp"
	"github.com/atoll-matrix/atoll/internal/pgdb"
)

// deviceJSON is the spec's Device object.
type deviceJSON struct {
	DeviceID    string `json:"device_id"`
	DisplayName string `json:"display_name,omitempty"`
	LastSeenIP  string `json:"last_seen_ip,omitempty"`
	LastSeenTS  int64  `json:"last_seen_ts,omitempty"`
}

func toDeviceJSON(d storage.Device) deviceJSON {
	return deviceJSON{DeviceID: d.DeviceID, DisplayName: d.DisplayName, LastSeenIP: d.LastSeenIP, LastSeenTS: d.LastSeenTS}
}

func (s *Server) listDevices(w http.ResponseWriter, r *http.Request, sess *Session) error {
	var devs []storage.Device
	err := sess.T.Store.Tx(r.Context(), func(q pgdb.DBTX) error {
		var err error
		devs, err = storage.ListDevices(r.Context(), q, sess.UserID)
		return err
	})
	if err != nil {
		return err
	}
	out := make([]deviceJSON, 0, len(devs))
	for _, d := range devs {
		out = append(out, toDeviceJSON(d))
	}
	return mxhttp.JSON(w, http.StatusOK, map[string]any{"devices": out})
}

func (s *Server) getDevice(w http.ResponseWriter, r *http.Request, sess *Session) error {
	var d storage.Device
	err := sess.T.Store.Tx(r.Context(), func(q pgdb.DBTX) error {
		var err error
		d, err = storage.GetDevice(r.Context(), q, sess.UserID, r.PathValue("deviceID"))
		return err
	})
	if errors.Is(err, storage.ErrNotFound) {
		return mxhttp.NotFound("unknown device")
	}
	if err != nil {
		return err
	}
	return mxhttp.JSON(w, http.StatusOK, toDeviceJSON(d))
}

func (s *Server) updateDevice(w http.ResponseWriter, r *http.Request, sess *Session) error {
	var req struct {
		DisplayName *string `json:"display_name"`
	}
	if err := mxhttp.DecodeJSON(r, &req); err != nil {
		return err
	}
	if req.DisplayName != nil && utf8.RuneCountInString(*req.DisplayName) > 255 {
		return mxhttp.InvalidParam("display_name is too long")
	}
	ctx := r.Context()
	deviceID := r.PathValue("deviceID")
	err := sess.T.Store.Tx(ctx, func(q pgdb.DBTX) error {
		if req.DisplayName == nil {
			_, err := storage.GetDevice(ctx, q, sess.UserID, deviceID)
			return err
		}
		if err := storage.RenameDevice(ctx, q, sess.UserID, deviceID, *req.DisplayName); err != nil {
			return err
		}
		// The display name is part of what keys/query returns.
		_, err := storage.MarkDeviceListChanged(ctx, q, sess.UserID)
		return err
	})
	if errors.Is(err, storage.ErrNotFound) {
		return mxhttp.NotFound("unknown device")
	}
	if err != nil {
		return err
	}
	if req.DisplayName != nil {
		s.notifier.Notify(sess.T.TenantID)
		s.deviceListChanged(ctx, sess.T, sess.UserID, []string{deviceID}, false, false)
	}
	return mxhttp.JSON(w, http.StatusOK, struct{}{})
}

func (s *Server) deleteDevice(w http.ResponseWriter, r *http.Request, sess *Session) error {
	var req struct {
		Auth *uiaAuth `json:"auth"`
	}
	if err := mxhttp.DecodeJSON(r, &req); err != nil {
		return err
	}
	if err := s.requirePassword(r, sess, req.Auth); err != nil {
		return err
	}
	if err := s.removeDevices(r, sess, []string{r.PathValue("deviceID")}); err != nil {
		return err
	}
	return mxhttp.JSON(w, http.StatusOK, struct{}{})
}

func (s *Server) deleteDevices(w http.ResponseWriter, r *http.Request, sess *Session) error {
	var req struct {
		Devices *[]string `json:"devices"`
		Auth    *uiaAuth  `json:"auth"`
	}
	if err := mxhttp.DecodeJSON(r, &req); err != nil {
		return err
	}
	if req.Devices == nil {
		return mxhttp.MissingParam("devices is required")
	}
	if err := s.requirePassword(r, sess, req.Auth); err != nil {
		return err
	}
	if err := s.removeDevices(r, sess, *req.Devices); err != nil {
		return err
	}
	return mxhttp.JSON(w, http.StatusOK, struct{}{})
}

// removeDevices deletes devices with their keys, tokens and queued messages and tells the
// user's contacts the device list changed. Unknown IDs are ignored.
func (s *Server) removeDevices(r *http.Request, sess *Session, ids []string) error {
	if len(ids) == 0 {
		return nil // DeleteDevices reads an empty list as "all devices"
	}
	ctx := r.Context()
	err := sess.T.Store.Tx(ctx, func(q pgdb.DBTX) error {
		return storage.RemoveDevices(ctx, q, sess.UserID, ids, "")
	})
	if err != nil {
		return err
	}
	s.notifier.Notify(sess.T.TenantID)
	s.deviceListChanged(ctx, sess.T, sess.UserID, ids, true, false)
	return nil
}
