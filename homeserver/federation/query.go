package federation

import (
	"errors"
	"net/http"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/atoll-matrix/atoll/homeserver/clientapi"
	"github.com/atoll-matrix/atoll/homeserver/storage"
	"github.com/atoll-matrix/atoll/internal/mxhttp"
	"github.com/atoll-matrix/atoll/internal/pgdb"
)

func (s *Server) queryProfile(w http.ResponseWriter, r *http.Request, req *request) error {
	uid, err := spec.NewUserID(r.URL.Query().Get("user_id"), true)
	if err != nil {
		return mxhttp.InvalidParam("invalid user_id")
	}
	field := r.URL.Query().Get("field")
	if field != "" && field != "displayname" && field != "avatar_url" {
		return mxhttp.InvalidParam("unknown profile field")
	}
	out, err := clientapi.Profile(r.Context(), req.T, uid, field)
	if err != nil {
		return err
	}
	return mxhttp.JSON(w, http.StatusOK, out)
}

func (s *Server) queryDirectory(w http.ResponseWriter, r *http.Request, req *request) error {
	alias := r.URL.Query().Get("room_alias")
	if len(alias) < 2 || alias[0] != '#' {
		return mxhttp.InvalidParam("invalid room_alias")
	}
	var roomID string
	err := req.T.Store.Tx(r.Context(), func(q pgdb.DBTX) error {
		var err error
		roomID, _, err = storage.AliasRoom(r.Context(), q, alias)
		return err
	})
	if errors.Is(err, storage.ErrNotFound) {
		return mxhttp.NotFound("room alias not found")
	}
	if err != nil {
		return err
	}
	return mxhttp.JSON(w, http.StatusOK, map[string]any{"room_id": roomID, "servers": []string{string(req.T.ServerName)}})
}
