package clientapi

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"

	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"golang.org/x/crypto/bcrypt"

	"github.com/atoll-matrix/atoll/homeserver/storage"
	"github.com/atoll-matrix/atoll/homeserver/tenant"
	"github.com/atoll-matrix/atoll/internal/mxhttp"
	"github.com/atoll-matrix/atoll/internal/pgdb"
)

var localpartPattern = regexp.MustCompile(`^[a-z0-9._=\-/+]+$`)

const errUserDeactivated spec.MatrixErrorCode = "M_USER_DEACTIVATED"

func validLocalpart(lp string, server spec.ServerName) error {
	if lp == "" || !localpartPattern.MatchString(lp) {
		return mxhttp.Errorf(http.StatusBadRequest, spec.InvalidUsername("user ID may only contain a-z, 0-9, . _ = - / +"))
	}
	if len("@"+lp+":"+string(server)) > 255 {
		return mxhttp.Errorf(http.StatusBadRequest, spec.InvalidUsername("user ID is too long"))
	}
	return nil
}

type registerRequest struct {
	Username                 string   `json:"username"`
	Password                 string   `json:"password"`
	DeviceID                 string   `json:"device_id"`
	InitialDeviceDisplayName string   `json:"initial_device_display_name"`
	InhibitLogin             bool     `json:"inhibit_login"`
	Auth                     *uiaAuth `json:"auth"`
}

type loginResponse struct {
	UserID      string `json:"user_id"`
	AccessToken string `json:"access_token,omitempty"`
	DeviceID    string `json:"device_id,omitempty"`
	HomeServer  string `json:"home_server"`
}

func (s *Server) register(w http.ResponseWriter, r *http.Request, t *Tenant) error {
	if kind := r.URL.Query().Get("kind"); kind == "guest" {
		return mxhttp.Errorf(http.StatusForbidden, spec.GuestAccessForbidden("guest access is not enabled"))
	} else if kind != "" && kind != "user" {
		return mxhttp.InvalidParam("kind must be user or guest")
	}
	var req registerRequest
	if err := mxhttp.DecodeJSON(r, &req); err != nil {
		return err
	}
	var stage string
	switch t.Settings.Registration {
	case tenant.RegistrationOpen:
		stage = "m.login.dummy"
	case tenant.RegistrationToken:
		stage = "m.login.registration_token"
	default:
		return mxhttp.Forbidden("registration is not open on this homeserver")
	}
	if req.Username != "" {
		req.Username = strings.ToLower(req.Username)
		if err := validLocalpart(req.Username, t.ServerName); err != nil {
			return err
		}
	}
	if req.Auth == nil || req.Auth.Type == "" {
		return s.challenge("", stage)
	}
	if err := s.limit(r.Context(), "register_ip", t.TenantID+"|"+clientIP(r), registrationsPerMinute, time.Minute); err != nil {
		return err
	}
	if req.Auth.Type != stage {
		return s.challenge(req.Auth.Session, stage)
	}
	if len(req.Password) > 512 {
		return mxhttp.BadJSON("password is too long")
	}
	if req.Username == "" {
		req.Username = strings.ToLower(randomString(12))
	}
	resp, err := s.createAccount(r, t, req, false, func(q pgdb.DBTX) error {
		if stage == "m.login.registration_token" {
			return useRegistrationToken(r, q, req.Auth.Token)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return mxhttp.JSON(w, http.StatusOK, resp)
}

func useRegistrationToken(r *http.Request, q pgdb.DBTX, token string) error {
	tag, err := q.Exec(r.Context(), `UPDATE registration_tokens SET completed = completed + 1
		WHERE token = $1 AND (uses_allowed IS NULL OR completed < uses_allowed) AND (expiry_ts IS NULL OR expiry_ts > $2)`,
		token, time.Now().UnixMilli())
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return mxhttp.Code(http.StatusUnauthorized, spec.ErrorForbidden, "registration token is invalid or used up")
	}
	return nil
}

func (s *Server) createAccount(r *http.Request, t *Tenant, req registerRequest, admin bool, inTx func(q pgdb.DBTX) error) (loginResponse, error) {
	userID := "@" + req.Username + ":" + string(t.ServerName)
	hash := ""
	if req.Password != "" {
		b, err := bcrypt.GenerateFromPassword([]byte(req.Password), s.opts.BcryptCost)
		if err != nil {
			return loginResponse{}, fmt.Errorf("hash password: %w", err)
		}
		hash = string(b)
	}
	resp := loginResponse{UserID: userID, HomeServer: string(t.ServerName)}
	err := t.Store.Tx(r.Context(), func(q pgdb.DBTX) error {
		if t.Settings.MaxUsers > 0 {
			n, err := storage.CountUsers(r.Context(), q)
			if err != nil {
				return err
			}
			if n >= t.Settings.MaxUsers {
				return mxhttp.Code(http.StatusForbidden, "M_RESOURCE_LIMIT_EXCEEDED", "this homeserver has reached its user limit")
			}
		}
		now := time.Now().UnixMilli()
		if err := storage.CreateUser(r.Context(), q, storage.User{Localpart: req.Username, PasswordHash: hash, DisplayName: req.Username, Admin: admin, CreatedTS: now}); err != nil {
			if errors.Is(err, storage.ErrUserExists) {
				return mxhttp.Errorf(http.StatusBadRequest, spec.UserInUse("user ID already taken"))
			}
			return err
		}
		if inTx != nil {
			if err := inTx(q); err != nil {
				return err
			}
		}
		if req.InhibitLogin {
			return nil
		}
		resp.DeviceID = req.DeviceID
		if resp.DeviceID == "" {
			resp.DeviceID = randomString(10)
		}
		resp.AccessToken = newToken()
		return storage.UpsertDevice(r.Context(), q, storage.Device{UserID: userID, DeviceID: resp.DeviceID, DisplayName: req.InitialDeviceDisplayName, LastSeenIP: clientIP(r)}, hashToken(resp.AccessToken), now)
	})
	return resp, err
}

func (s *Server) registerAvailable(w http.ResponseWriter, r *http.Request, t *Tenant) error {
	lp := strings.ToLower(r.URL.Query().Get("username"))
	if err := validLocalpart(lp, t.ServerName); err != nil {
		return err
	}
	err := t.Store.Tx(r.Context(), func(q pgdb.DBTX) error {
		_, err := storage.GetUser(r.Context(), q, lp)
		return err
	})
	if err == nil {
		return mxhttp.Errorf(http.StatusBadRequest, spec.UserInUse("user ID already taken"))
	}
	if !errors.Is(err, storage.ErrNotFound) {
		return err
	}
	return mxhttp.JSON(w, http.StatusOK, map[string]bool{"available": true})
}

func (s *Server) registrationTokenValidity(w http.ResponseWriter, r *http.Request, t *Tenant) error {
	if t.Settings.Registration != tenant.RegistrationToken {
		return mxhttp.Forbidden("registration tokens are not used on this homeserver")
	}
	tok := r.URL.Query().Get("token")
	if tok == "" {
		return mxhttp.MissingParam("token is required")
	}
	var valid bool
	err := t.Store.Tx(r.Context(), func(q pgdb.DBTX) error {
		return q.QueryRow(r.Context(), `SELECT EXISTS (SELECT 1 FROM registration_tokens WHERE token = $1
			AND (uses_allowed IS NULL OR completed < uses_allowed) AND (expiry_ts IS NULL OR expiry_ts > $2))`,
			tok, time.Now().UnixMilli()).Scan(&valid)
	})
	if err != nil {
		return err
	}
	return mxhttp.JSON(w, http.StatusOK, map[string]bool{"valid": valid})
}

// Shared-secret registration, compatible with Synapse's admin API (used by existing tooling
// and by Complement).

func (s *Server) adminRegisterNonce(w http.ResponseWriter, r *http.Request, t *Tenant) error {
	if t.Settings.SharedSecret == "" {
		return mxhttp.Code(http.StatusBadRequest, spec.ErrorUnknown, "shared secret registration is not enabled")
	}
	return mxhttp.JSON(w, http.StatusOK, map[string]string{"nonce": s.uia.start()})
}

type adminRegisterRequest struct {
	Nonce       string `json:"nonce"`
	Username    string `json:"username"`
	Password    string `json:"password"`
	Admin       bool   `json:"admin"`
	MAC         string `json:"mac"`
	Displayname string `json:"displayname"`
}

func (s *Server) adminRegister(w http.ResponseWriter, r *http.Request, t *Tenant) error {
	if t.Settings.SharedSecret == "" {
		return mxhttp.Code(http.StatusBadRequest, spec.ErrorUnknown, "shared secret registration is not enabled")
	}
	var req adminRegisterRequest
	if err := mxhttp.DecodeJSON(r, &req); err != nil {
		return err
	}
	if req.Nonce == "" || req.Username == "" || req.MAC == "" {
		return mxhttp.MissingParam("nonce, username and mac are required")
	}
	if !s.uia.consume(req.Nonce) {
		return mxhttp.Code(http.StatusBadRequest, spec.ErrorUnknown, "unrecognised nonce")
	}
	mac := hmac.New(sha1.New, []byte(t.Settings.SharedSecret))
	mac.Write([]byte(req.Nonce + "\x00" + req.Username + "\x00" + req.Password + "\x00"))
	if req.Admin {
		mac.Write([]byte("admin"))
	} else {
		mac.Write([]byte("notadmin"))
	}
	want := hex.EncodeToString(mac.Sum(nil))
	if !hmac.Equal([]byte(want), []byte(strings.ToLower(req.MAC))) {
		return mxhttp.Forbidden("HMAC incorrect")
	}
	req.Username = strings.ToLower(req.Username)
	if err := validLocalpart(req.Username, t.ServerName); err != nil {
		return err
	}
	resp, err := s.createAccount(r, t, registerRequest{Username: req.Username, Password: req.Password}, req.Admin, nil)
	if err != nil {
		return err
	}
	return mxhttp.JSON(w, http.StatusOK, resp)
}

func (u *uiaSessions) consume(id string) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	exp, ok := u.sessions[id]
	delete(u.sessions, id)
	return ok && time.Now().Before(exp)
}

// Login.

func (s *Server) loginFlows(w http.ResponseWriter, r *http.Request, t *Tenant) error {
	return mxhttp.JSON(w, http.StatusOK, map[string]any{"flows": []map[string]string{{"type": "m.login.password"}}})
}

type loginRequest struct {
	Type                     string          `json:"type"`
	Identifier               *userIdentifier `json:"identifier"`
	User                     string          `json:"user"`
	Password                 string          `json:"password"`
	DeviceID                 string          `json:"device_id"`
	InitialDeviceDisplayName string          `json:"initial_device_display_name"`
}

// localpartOf accepts a bare localpart or a full user ID of this tenant.
func localpartOf(user string, server spec.ServerName) (string, bool) {
	if strings.HasPrefix(user, "@") {
		lp, srv, ok := strings.Cut(user[1:], ":")
		if !ok || spec.ServerName(srv) != server {
			return "", false
		}
		return strings.ToLower(lp), true
	}
	return strings.ToLower(user), user != ""
}

func (s *Server) login(w http.ResponseWriter, r *http.Request, t *Tenant) error {
	var req loginRequest
	if err := mxhttp.DecodeJSON(r, &req); err != nil {
		return err
	}
	if req.Type != "m.login.password" {
		return mxhttp.Code(http.StatusBadRequest, spec.ErrorUnknown, "unsupported login type %q", req.Type)
	}
	user := req.User
	if req.Identifier != nil {
		if req.Identifier.Type != "m.id.user" {
			return mxhttp.Code(http.StatusBadRequest, spec.ErrorUnknown, "unsupported identifier type %q", req.Identifier.Type)
		}
		user = req.Identifier.User
	}
	lp, ok := localpartOf(user, t.ServerName)
	if !ok {
		return mxhttp.Forbidden("invalid username or password")
	}
	if err := s.limit(r.Context(), "login_ip", t.TenantID+"|"+clientIP(r), 3*loginsPerMinute, time.Minute); err != nil {
		return err
	}
	if err := s.limit(r.Context(), "login_account", t.TenantID+"|"+lp, loginsPerMinute, time.Minute); err != nil {
		return err
	}
	if err := s.checkPassword(r, t, lp, req.Password); err != nil {
		return err
	}
	resp := loginResponse{UserID: "@" + lp + ":" + string(t.ServerName), HomeServer: string(t.ServerName), DeviceID: req.DeviceID, AccessToken: newToken()}
	if resp.DeviceID == "" {
		resp.DeviceID = randomString(10)
	}
	err := t.Store.Tx(r.Context(), func(q pgdb.DBTX) error {
		if err := storage.UpsertDevice(r.Context(), q, storage.Device{UserID: resp.UserID, DeviceID: resp.DeviceID, DisplayName: req.InitialDeviceDisplayName, LastSeenIP: clientIP(r)},
			hashToken(resp.AccessToken), time.Now().UnixMilli()); err != nil {
			return err
		}
		// A new device: the user's contacts must refetch its keys.
		_, err := storage.MarkDeviceListChanged(r.Context(), q, resp.UserID)
		return err
	})
	if err != nil {
		return err
	}
	s.notifier.Notify(t.TenantID)
	s.deviceListChanged(r.Context(), t, resp.UserID, []string{resp.DeviceID}, false, false)
	return mxhttp.JSON(w, http.StatusOK, resp)
}

func (s *Server) checkPassword(r *http.Request, t *Tenant, lp, password string) error {
	var u storage.User
	err := t.Store.Tx(r.Context(), func(q pgdb.DBTX) error {
		var err error
		u, err = storage.GetUser(r.Context(), q, lp)
		return err
	})
	if errors.Is(err, storage.ErrNotFound) {
		// Spend the same time as a real check so user existence does not leak by timing.
		_ = bcrypt.CompareHashAndPassword(s.dummyHash(), []byte(password))
		return mxhttp.Forbidden("invalid username or password")
	}
	if err != nil {
		return err
	}
	if u.Deactivated {
		return mxhttp.Code(http.StatusForbidden, errUserDeactivated, "this account has been deactivated")
	}
	if u.PasswordHash == "" || bcrypt.CompareHashAndPassword([]byte(u.PasswordHash), []byte(password)) != nil {
		return mxhttp.Forbidden("invalid username or password")
	}
	return nil
}

// requirePassword runs user-interactive auth with m.login.password for sensitive endpoints.
func (s *Server) requirePassword(r *http.Request, sess *Session, auth *uiaAuth) error {
	if auth == nil || auth.Type == "" {
		return s.challenge("", "m.login.password")
	}
	if auth.Type != "m.login.password" {
		return s.challenge(auth.Session, "m.login.password")
	}
	user := auth.User
	if auth.Identifier != nil {
		user = auth.Identifier.User
	}
	if user != "" {
		if lp, ok := localpartOf(user, sess.T.ServerName); !ok || lp != sess.Local {
			return mxhttp.Forbidden("authentication must be for the logged-in user")
		}
	}
	if err := s.checkPassword(r, sess.T, sess.Local, auth.Password); err != nil {
		var me *mxhttp.Error
		if errors.As(err, &me) && me.Status == http.StatusForbidden {
			session := auth.Session
			if session == "" {
				session = s.uia.start()
			}
			return &mxhttp.Error{Status: http.StatusUnauthorized, Body: uiaChallenge{
				Flows: []uiaFlow{{Stages: []string{"m.login.password"}}}, Params: map[string]any{}, Session: session,
				ErrCode: string(spec.ErrorForbidden), Error: "invalid password",
			}}
		}
		return err
	}
	return nil
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request, sess *Session) error {
	err := sess.T.Store.Tx(r.Context(), func(q pgdb.DBTX) error {
		return storage.RemoveDevices(r.Context(), q, sess.UserID, []string{sess.DeviceID}, "")
	})
	if err != nil {
		return err
	}
	s.notifier.Notify(sess.T.TenantID)
	s.deviceListChanged(r.Context(), sess.T, sess.UserID, []string{sess.DeviceID}, true, false)
	return mxhttp.JSON(w, http.StatusOK, struct{}{})
}

func (s *Server) logoutAll(w http.ResponseWriter, r *http.Request, sess *Session) error {
	err := sess.T.Store.Tx(r.Context(), func(q pgdb.DBTX) error {
		return storage.RemoveDevices(r.Context(), q, sess.UserID, nil, "")
	})
	if err != nil {
		return err
	}
	s.notifier.Notify(sess.T.TenantID)
	s.deviceListChanged(r.Context(), sess.T, sess.UserID, nil, true, false)
	return mxhttp.JSON(w, http.StatusOK, struct{}{})
}

func (s *Server) whoami(w http.ResponseWriter, r *http.Request, sess *Session) error {
	return mxhttp.JSON(w, http.StatusOK, map[string]any{"user_id": sess.UserID, "device_id": sess.DeviceID, "is_guest": false})
}

func (s *Server) changePassword(w http.ResponseWriter, r *http.Request, sess *Session) error {
	var req struct {
		NewPassword   string   `json:"new_password"`
		LogoutDevices *bool    `json:"logout_devices"`
		Auth          *uiaAuth `json:"auth"`
	}
	if err := mxhttp.DecodeJSON(r, &req); err != nil {
		return err
	}
	if err := s.requirePassword(r, sess, req.Auth); err != nil {
		return err
	}
	if req.NewPassword == "" {
		return mxhttp.MissingParam("new_password is required")
	}
	if len(req.NewPassword) > 512 {
		return mxhttp.BadJSON("password is too long")
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(req.NewPassword), s.opts.BcryptCost)
	if err != nil {
		return fmt.Errorf("hash password: %w", err)
	}
	err = sess.T.Store.Tx(r.Context(), func(q pgdb.DBTX) error {
		if err := storage.SetPasswordHash(r.Context(), q, sess.Local, string(hash)); err != nil {
			return err
		}
		if req.LogoutDevices == nil || *req.LogoutDevices {
			return storage.RemoveDevices(r.Context(), q, sess.UserID, nil, sess.DeviceID)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if req.LogoutDevices == nil || *req.LogoutDevices {
		s.deviceListChanged(r.Context(), sess.T, sess.UserID, nil, true, false)
	}
	return mxhttp.JSON(w, http.StatusOK, struct{}{})
}

func (s *Server) deactivate(w http.ResponseWriter, r *http.Request, sess *Session) error {
	var req struct {
		Auth  *uiaAuth `json:"auth"`
		Erase bool     `json:"erase"`
	}
	if err := mxhttp.DecodeJSON(r, &req); err != nil {
		return err
	}
	if err := s.requirePassword(r, sess, req.Auth); err != nil {
		return err
	}
	// Leave every room first, so other members see the account go.
	var joined []storage.UserRoom
	if err := sess.T.Store.Tx(r.Context(), func(q pgdb.DBTX) error {
		var err error
		joined, err = storage.UserRooms(r.Context(), q, sess.UserID)
		return err
	}); err != nil {
		return err
	}
	for _, jr := range joined {
		if jr.Membership == spec.Join || jr.Membership == spec.Invite || jr.Membership == spec.Knock {
			if _, err := s.sendMembership(r.Context(), sess.T, jr.RoomID, sess.UserID, sess.UserID, spec.Leave, "deactivated", nil); err != nil {
				s.log.WarnContext(r.Context(), "leave on deactivation failed", "room", jr.RoomID, "err", err)
			}
		}
	}
	err := sess.T.Store.Tx(r.Context(), func(q pgdb.DBTX) error {
		if err := storage.DeactivateUser(r.Context(), q, sess.UserID, sess.Local); err != nil {
			return err
		}
		_, err := storage.MarkDeviceListChanged(r.Context(), q, sess.UserID)
		return err
	})
	if err != nil {
		return err
	}
	s.deviceListChanged(r.Context(), sess.T, sess.UserID, nil, true, false)
	return mxhttp.JSON(w, http.StatusOK, map[string]string{"id_server_unbind_result": "no-support"})
}
