package clientapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/atoll-matrix/atoll/homeserver/storage"
	"github.com/atoll-matrix/atoll/internal/mxhttp"
	"github.com/atoll-matrix/atoll/internal/pgdb"
)

// errWrongRoomKeysVersion is the spec's code for writing to a backup that is not current.
const errWrongRoomKeysVersion = "M_WRONG_ROOM_KEYS_VERSION"

// wrongVersionError is M_WRONG_ROOM_KEYS_VERSION's body, which names the current backup.
type wrongVersionError struct {
	ErrCode        string `json:"errcode"`
	Err            string `json:"error"`
	CurrentVersion string `json:"current_version"`
}

// keyBackupData is the spec's KeyBackupData.
type keyBackupData struct {
	FirstMessageIndex *int64          `json:"first_message_index"`
	ForwardedCount    *int64          `json:"forwarded_count"`
	IsVerified        *bool           `json:"is_verified"`
	SessionData       json.RawMessage `json:"session_data"`
}

func (d keyBackupData) validate() error {
	if d.FirstMessageIndex == nil || d.ForwardedCount == nil || d.IsVerified == nil || !present(d.SessionData) {
		return mxhttp.MissingParam("key backup data needs first_message_index, forwarded_count, is_verified and session_data")
	}
	if *d.FirstMessageIndex < 0 || *d.ForwardedCount < 0 {
		return mxhttp.InvalidParam("first_message_index and forwarded_count must not be negative")
	}
	if d.SessionData[0] != '{' {
		return mxhttp.BadJSON("session_data must be an object")
	}
	return nil
}

// better applies the spec's rules for replacing a backed-up session key: a verified key beats
// an unverified one, then the lower first_message_index wins, then the lower forwarded_count.
func (d keyBackupData) better(old keyBackupData) bool {
	if *d.IsVerified != *old.IsVerified {
		return *d.IsVerified
	}
	if *d.FirstMessageIndex != *old.FirstMessageIndex {
		return *d.FirstMessageIndex < *old.FirstMessageIndex
	}
	return *d.ForwardedCount < *old.ForwardedCount
}

type backupVersionJSON struct {
	Algorithm string          `json:"algorithm"`
	AuthData  json.RawMessage `json:"auth_data"`
	Count     int64           `json:"count"`
	Etag      string          `json:"etag"`
	Version   string          `json:"version"`
}

func toBackupVersionJSON(b storage.BackupVersion) backupVersionJSON {
	return backupVersionJSON{Algorithm: b.Algorithm, AuthData: b.AuthData, Count: b.Count,
		Etag: strconv.FormatInt(b.Etag, 10), Version: strconv.FormatInt(b.Version, 10)}
}

// parseBackupVersion reads a version string; anything but a positive number names no backup.
func parseBackupVersion(s string) (int64, error) {
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v <= 0 {
		return 0, mxhttp.NotFound("unknown backup version")
	}
	return v, nil
}

type backupVersionBody struct {
	Algorithm string          `json:"algorithm"`
	AuthData  json.RawMessage `json:"auth_data"`
	Version   string          `json:"version"`
}

func (b backupVersionBody) validate() error {
	if b.Algorithm == "" {
		return mxhttp.MissingParam("algorithm is required")
	}
	if !present(b.AuthData) {
		return mxhttp.MissingParam("auth_data is required")
	}
	if b.AuthData[0] != '{' {
		return mxhttp.BadJSON("auth_data must be an object")
	}
	return nil
}

func (s *Server) createBackupVersion(w http.ResponseWriter, r *http.Request, sess *Session) error {
	var req backupVersionBody
	if err := mxhttp.DecodeJSON(r, &req); err != nil {
		return err
	}
	if err := req.validate(); err != nil {
		return err
	}
	var v int64
	err := sess.T.Store.Tx(r.Context(), func(q pgdb.DBTX) error {
		var err error
		v, err = storage.CreateBackupVersion(r.Context(), q, sess.UserID, req.Algorithm, req.AuthData)
		return err
	})
	if err != nil {
		return err
	}
	return mxhttp.JSON(w, http.StatusOK, map[string]string{"version": strconv.FormatInt(v, 10)})
}

// getBackupVersion serves both the current backup and a named one.
func (s *Server) getBackupVersion(w http.ResponseWriter, r *http.Request, sess *Session) error {
	var version int64
	if p := r.PathValue("version"); p != "" {
		var err error
		if version, err = parseBackupVersion(p); err != nil {
			return err
		}
	}
	var b storage.BackupVersion
	err := sess.T.Store.Tx(r.Context(), func(q pgdb.DBTX) error {
		var err error
		if version == 0 {
			b, err = storage.CurrentBackupVersion(r.Context(), q, sess.UserID, false)
		} else {
			b, err = storage.GetBackupVersion(r.Context(), q, sess.UserID, version)
		}
		return err
	})
	if errors.Is(err, storage.ErrNotFound) {
		return mxhttp.NotFound("unknown backup version")
	}
	if err != nil {
		return err
	}
	return mxhttp.JSON(w, http.StatusOK, toBackupVersionJSON(b))
}

func (s *Server) updateBackupVersion(w http.ResponseWriter, r *http.Request, sess *Session) error {
	version, err := parseBackupVersion(r.PathValue("version"))
	if err != nil {
		return err
	}
	var req backupVersionBody
	if err := mxhttp.DecodeJSON(r, &req); err != nil {
		return err
	}
	if err := req.validate(); err != nil {
		return err
	}
	if req.Version != "" && req.Version != r.PathValue("version") {
		return mxhttp.InvalidParam("version in the body does not match the path")
	}
	err = sess.T.Store.Tx(r.Context(), func(q pgdb.DBTX) error {
		b, err := storage.GetBackupVersion(r.Context(), q, sess.UserID, version)
		if err != nil {
			return err
		}
		if b.Algorithm != req.Algorithm {
			return mxhttp.InvalidParam("the algorithm of a backup cannot change")
		}
		return storage.UpdateBackupAuthData(r.Context(), q, sess.UserID, version, req.AuthData)
	})
	if errors.Is(err, storage.ErrNotFound) {
		return mxhttp.NotFound("unknown backup version")
	}
	if err != nil {
		return err
	}
	return mxhttp.JSON(w, http.StatusOK, struct{}{})
}

func (s *Server) deleteBackupVersion(w http.ResponseWriter, r *http.Request, sess *Session) error {
	version, err := parseBackupVersion(r.PathValue("version"))
	if err != nil {
		return err
	}
	err = sess.T.Store.Tx(r.Context(), func(q pgdb.DBTX) error {
		return storage.DeleteBackupVersion(r.Context(), q, sess.UserID, version)
	})
	if errors.Is(err, storage.ErrNotFound) {
		return mxhttp.NotFound("unknown backup version")
	}
	if err != nil {
		return err
	}
	return mxhttp.JSON(w, http.StatusOK, struct{}{})
}

// backupScope is the part of a backup a room_keys/keys request addresses.
type backupScope struct {
	version   int64
	roomID    string
	sessionID string
}

func parseBackupScope(r *http.Request) (backupScope, error) {
	v := r.URL.Query().Get("version")
	if v == "" {
		return backupScope{}, mxhttp.MissingParam("version is required")
	}
	version, err := parseBackupVersion(v)
	if err != nil {
		return backupScope{}, err
	}
	return backupScope{version: version, roomID: r.PathValue("roomID"), sessionID: r.PathValue("sessionID")}, nil
}

func (s *Server) getBackupKeys(w http.ResponseWriter, r *http.Request, sess *Session) error {
	sc, err := parseBackupScope(r)
	if err != nil {
		return err
	}
	var keys []storage.BackupKey
	err = sess.T.Store.Tx(r.Context(), func(q pgdb.DBTX) error {
		if _, err := storage.GetBackupVersion(r.Context(), q, sess.UserID, sc.version); err != nil {
			return err
		}
		keys, err = storage.BackupKeys(r.Context(), q, sess.UserID, sc.version, sc.roomID, sc.sessionID)
		return err
	})
	if errors.Is(err, storage.ErrNotFound) {
		return mxhttp.NotFound("unknown backup version")
	}
	if err != nil {
		return err
	}
	switch {
	case sc.sessionID != "":
		if len(keys) == 0 {
			return mxhttp.NotFound("no key backed up for this session")
		}
		return mxhttp.JSON(w, http.StatusOK, keys[0].Data)
	case sc.roomID != "":
		sessions := map[string]json.RawMessage{}
		for _, k := range keys {
			sessions[k.SessionID] = k.Data
		}
		return mxhttp.JSON(w, http.StatusOK, map[string]any{"sessions": sessions})
	default:
		rooms := map[string]map[string]map[string]json.RawMessage{}
		for _, k := range keys {
			if rooms[k.RoomID] == nil {
				rooms[k.RoomID] = map[string]map[string]json.RawMessage{"sessions": {}}
			}
			rooms[k.RoomID]["sessions"][k.SessionID] = k.Data
		}
		return mxhttp.JSON(w, http.StatusOK, map[string]any{"rooms": rooms})
	}
}

type roomKeyBackupBody struct {
	Sessions map[string]keyBackupData `json:"sessions"`
}

// putBackupKeys stores keys in the current backup, keeping a stored key where it is better
// than the uploaded one.
func (s *Server) putBackupKeys(w http.ResponseWriter, r *http.Request, sess *Session) error {
	sc, err := parseBackupScope(r)
	if err != nil {
		return err
	}
	upload := map[string]map[string]keyBackupData{}
	switch {
	case sc.sessionID != "":
		var d keyBackupData
		if err := mxhttp.DecodeJSON(r, &d); err != nil {
			return err
		}
		upload[sc.roomID] = map[string]keyBackupData{sc.sessionID: d}
	case sc.roomID != "":
		var body roomKeyBackupBody
		if err := mxhttp.DecodeJSON(r, &body); err != nil {
			return err
		}
		if body.Sessions == nil {
			return mxhttp.MissingParam("sessions is required")
		}
		upload[sc.roomID] = body.Sessions
	default:
		var body struct {
			Rooms map[string]roomKeyBackupBody `json:"rooms"`
		}
		if err := mxhttp.DecodeJSON(r, &body); err != nil {
			return err
		}
		if body.Rooms == nil {
			return mxhttp.MissingParam("rooms is required")
		}
		for room, rk := range body.Rooms {
			upload[room] = rk.Sessions
		}
	}
	for room, sessions := range upload {
		if room == "" {
			return mxhttp.InvalidParam("room ID must not be empty")
		}
		for id, d := range sessions {
			if id == "" {
				return mxhttp.InvalidParam("session ID must not be empty")
			}
			if err := d.validate(); err != nil {
				return err
			}
		}
	}
	ctx := r.Context()
	var result storage.BackupVersion
	err = sess.T.Store.Tx(ctx, func(q pgdb.DBTX) error {
		if err := s.requireCurrentBackup(r, q, sess, sc.version); err != nil {
			return err
		}
		changed := false
		for room, sessions := range upload {
			stored, err := storage.BackupKeys(ctx, q, sess.UserID, sc.version, room, "")
			if err != nil {
				return err
			}
			old := make(map[string]json.RawMessage, len(stored))
			for _, k := range stored {
				old[k.SessionID] = k.Data
			}
			for id, d := range sessions {
				if prev, ok := old[id]; ok {
					var o keyBackupData
					if json.Unmarshal(prev, &o) == nil && o.validate() == nil && !d.better(o) {
						continue
					}
				}
				data, err := json.Marshal(d)
				if err != nil {
					return err
				}
				if err := storage.PutBackupKey(ctx, q, sess.UserID, sc.version, storage.BackupKey{RoomID: room, SessionID: id, Data: data}); err != nil {
					return err
				}
				changed = true
			}
		}
		if changed {
			if err := storage.BumpBackupEtag(ctx, q, sess.UserID, sc.version); err != nil {
				return err
			}
		}
		result, err = storage.GetBackupVersion(ctx, q, sess.UserID, sc.version)
		return err
	})
	if errors.Is(err, storage.ErrNotFound) {
		return mxhttp.NotFound("unknown backup version")
	}
	if err != nil {
		return err
	}
	return mxhttp.JSON(w, http.StatusOK, map[string]any{"count": result.Count, "etag": strconv.FormatInt(result.Etag, 10)})
}

// requireCurrentBackup locks the user's current backup and fails unless version is it.
func (s *Server) requireCurrentBackup(r *http.Request, q pgdb.DBTX, sess *Session, version int64) error {
	cur, err := storage.CurrentBackupVersion(r.Context(), q, sess.UserID, true)
	if err != nil {
		return err
	}
	if cur.Version == version {
		return nil
	}
	if _, err := storage.GetBackupVersion(r.Context(), q, sess.UserID, version); err != nil {
		return err
	}
	return &mxhttp.Error{Status: http.StatusForbidden, Body: wrongVersionError{
		ErrCode: errWrongRoomKeysVersion, Err: "this backup is not the current one", CurrentVersion: strconv.FormatInt(cur.Version, 10),
	}}
}

func (s *Server) deleteBackupKeys(w http.ResponseWriter, r *http.Request, sess *Session) error {
	sc, err := parseBackupScope(r)
	if err != nil {
		return err
	}
	ctx := r.Context()
	var result storage.BackupVersion
	err = sess.T.Store.Tx(ctx, func(q pgdb.DBTX) error {
		if _, err := storage.GetBackupVersion(ctx, q, sess.UserID, sc.version); err != nil {
			return err
		}
		n, err := storage.DeleteBackupKeys(ctx, q, sess.UserID, sc.version, sc.roomID, sc.sessionID)
		if err != nil {
			return err
		}
		if n > 0 {
			if err := storage.BumpBackupEtag(ctx, q, sess.UserID, sc.version); err != nil {
				return err
			}
		}
		result, err = storage.GetBackupVersion(ctx, q, sess.UserID, sc.version)
		return err
	})
	if errors.Is(err, storage.ErrNotFound) {
		return mxhttp.NotFound("unknown backup version")
	}
	if err != nil {
		return err
	}
	return mxhttp.JSON(w, http.StatusOK, map[string]any{"count": result.Count, "etag": strconv.FormatInt(result.Etag, 10)})
}
