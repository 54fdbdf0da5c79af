package media

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/atoll-matrix/atoll/sidecars/media/fedmedia"
	"github.com/atoll-matrix/atoll/sidecars/media/hsauth"
	"github.com/atoll-matrix/atoll/sidecars/media/mediastore"
)

// Error is a failure to show the client as a Matrix error; Err is logged, never sent.
type Error struct {
	Status  int
	ErrCode string
	Message string
	Err     error
}

func (e *Error) Error() string {
	return fmt.Sprintf("%d %s: %s: %v", e.Status, e.ErrCode, e.Message, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

func matrixError(status int, code, msg string, cause error) *Error {
	return &Error{Status: status, ErrCode: code, Message: msg, Err: cause}
}

func errNotFound(cause error) *Error {
	return matrixError(http.StatusNotFound, "M_NOT_FOUND", "Not found", cause)
}

func errBadParam(msg string) *Error {
	return matrixError(http.StatusBadRequest, "M_INVALID_PARAM", msg, nil)
}

func errTooLarge(msg string, cause error) *Error {
	return matrixError(http.StatusRequestEntityTooLarge, "M_TOO_LARGE", msg, cause)
}

// toMatrix maps any error to what the client sees.
func toMatrix(err error) *Error {
	var me *Error
	if errors.As(err, &me) {
		return me
	}
	var hs *hsauth.MatrixError
	switch {
	case errors.As(err, &hs):
		msg := hs.Message
		if msg == "" {
			msg = http.StatusText(hs.Status)
		}
		return matrixError(hs.Status, hs.ErrCode, msg, err)
	case errors.Is(err, hsauth.ErrUnavailable):
		return matrixError(http.StatusBadGateway, "M_UNKNOWN", "Authentication service unavailable", err)
	case errors.Is(err, mediastore.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return matrixError(http.StatusGatewayTimeout, "M_UNKNOWN", "Media storage timed out", err)
	case errors.Is(err, mediastore.ErrUnavailable):
		return matrixError(http.StatusBadGateway, "M_UNKNOWN", "Media storage unavailable", err)
	case errors.Is(err, mediastore.ErrNotFound), errors.Is(err, fedmedia.ErrNotFound):
		return errNotFound(err)
	case errors.Is(err, fedmedia.ErrTooLarge):
		return matrixError(http.StatusBadGateway, "M_TOO_LARGE", "Remote media is too large", err)
	case errors.Is(err, fedmedia.ErrUnavailable):
		return matrixError(http.StatusBadGateway, "M_UNKNOWN", "Remote media unavailable", err)
	}
	return matrixError(http.StatusInternalServerError, "M_UNKNOWN", "Internal server error", err)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
