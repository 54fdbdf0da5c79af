package media

import (
	"bytes"
	"errors"
	"image"
	"net/http"

	"github.com/atoll-matrix/atoll/sidecars/media/hsauth"
	"github.com/atoll-matrix/atoll/sidecars/media/mediadb"
	"github.com/atoll-matrix/atoll/sidecars/media/mediaid"
	"github.com/atoll-matrix/atoll/sidecars/media/mediastore"
	"github.com/atoll-matrix/atoll/sidecars/media/preview"
)

func (s *Server) previewURL(w http.ResponseWriter, r *http.Request) error {
	id, err := s.authenticate(r)
	if err != nil {
		return err
	}
	if s.preview == nil {
		return matrixError(http.StatusForbidden, "M_FORBIDDEN", "URL previews are disabled", nil)
	}
	raw := r.URL.Query().Get("url")
	if _, err := preview.CheckURL(raw); err != nil {
		return errBadParam("url must be an absolute http or https URL")
	}
	page, err := s.preview.Fetch(r.Context(), raw)
	if err != nil {
		return previewError(err)
	}
	og := map[string]any{}
	img, imgType := page.Image, page.ImageType
	if img == nil {
		for k, v := range page.OG {
			og[k] = v
		}
		if u := page.OG["og:image"]; u != "" {
			delete(og, "og:image")
			if img, imgType, err = s.preview.FetchImage(r.Context(), u); err != nil {
				img = nil // a page whose image fails still previews
			}
		}
	}
	if img != nil {
		mxc, err := s.storePreviewImage(r, id, img, imgType)
		if err != nil {
			return err
		}
		og["og:image"] = mxc
		og["og:image:type"] = imgType
		og["matrix:image:size"] = len(img)
		if cfg, _, err := image.DecodeConfig(bytes.NewReader(img)); err == nil {
			og["og:image:width"], og["og:image:height"] = cfg.Width, cfg.Height
		}
	}
	writeJSON(w, http.StatusOK, og)
	return nil
}

// storePreviewImage keeps a preview's image as local media of the requesting user.
func (s *Server) storePreviewImage(r *http.Request, id hsauth.Identity, img []byte, ct string) (string, error) {
	mediaID := mediaid.New()
	key := mediastore.LocalKey(mediaID)
	n, err := s.store.Put(r.Context(), id.TenantID, key, bytes.NewReader(img), int64(len(img)), ct)
	if err != nil {
		return "", err
	}
	err = s.db.InsertLocal(r.Context(), mediadb.Media{TenantID: id.TenantID, MediaID: mediaID, UserID: id.UserID,
		ContentType: ct, Size: n, ObjectKey: key, CreatedAt: s.now()}, 0)
	if err != nil {
		s.removeObjects(r, id.TenantID, key)
		return "", err
	}
	return mediaid.MXC{ServerName: id.ServerName, MediaID: mediaID}.String(), nil
}

func previewError(err error) error {
	switch {
	case errors.Is(err, preview.ErrForbiddenAddress):
		return matrixError(http.StatusForbidden, "M_FORBIDDEN", "URL not allowed for previews", err)
	case errors.Is(err, preview.ErrTooLarge):
		return errTooLarge("Page too large to preview", err)
	case errors.Is(err, preview.ErrUnsupported):
		return matrixError(http.StatusNotFound, "M_NOT_FOUND", "Cannot preview this URL", err)
	}
	return matrixError(http.StatusBadGateway, "M_UNKNOWN", "Fetching the URL failed", err)
}
