package api

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
	"net/http"
	"strings"
)

func (s *Server) accountRoutes() []route {
	return []route{
		{"POST", v3 + "/register", s.register, authNone, rateRegistration},
		{"GET", v3 + "/register/available", s.registerAvailable, authNone, rateRegistration},
		{"GET", v1 + "/register/m.login.registration_token/validity", s.tokenValidity, authNone, rateRegistration},
		{"GET", v3 + "/login", s.loginFlows, authNone, rateNone},
		{"POST", v3 + "/login", s.login, authNone, rateLogin},
		{"POST", v3 + "/refresh", s.refresh, authNone, rateLogin},
		{"POST", v3 + "/logout", s.logout, authRequired, rateNone},
		{"POST", v3 + "/logout/all", s.logoutAll, authRequired, rateNone},
		{"GET", v3 + "/account/whoami", s.whoami, authRequired, rateNone},
		{"POST", v3 + "/account/password", s.changePassword, authRequired, rateLogin},
		{"GET", v3 + "/devices", s.listDevices, authRequired, rateNone},
		{"GET", v3 + "/devices/{deviceId}", s.getDevice, authRequired, rateNone},
		{"PUT", v3 + "/devices/{deviceId}", s.putDevice, authRequired, rateNone},
		{"DELETE", v3 + "/devices/{deviceId}", s.deleteDevice, authRequired, rateNone},
		{"POST", v3 + "/delete_devices", s.deleteDevices, authRequired, rateNone},
		{"GET", "/_synapse/admin/v1/register", s.adminRegisterNonce, authNone, rateRegistration},
		{"POST", "/_synapse/admin/v1/register", s.adminRegister, authNone, rateRegistration},
	}
}

type registerRequest struct {
	Type                     string   `json:"type"` // only m.login.application_service
	Username                 string   `json:"username"`
	Password                 string   `json:"password"`
	DeviceID                 string   `json:"device_id"`
	InitialDeviceDisplayName *string  `json:"initial_device_display_name"`
	InhibitLogin             bool     `json:"inhibit_login"`
	RefreshToken             bool     `json:"refresh_token"`
	Auth                     *uiaAuth `json:"auth"`
}

func (s *Server) registerFlows() [][]string {
	if s.cfg.RequiresToken {
		return [][]string{{stageRegistrationToken}}
	}
	return [][]string{{stageDummy}}
}

func (s *Server) register(r *http.Request) (any, error) {
	switch kind := r.URL.Query().Get("kind"); kind {
	case "", "user":
	case "guest":
		return nil, httpapi.Errorf(http.StatusForbidden, httpapi.CodeGuestAccessForbidden, "guest access is disabled")
	default:
		return nil, httpapi.InvalidParam("unknown kind %q", kind)
	}
	if reg := s.appServiceOf(r); reg != nil {
		return s.registerAppServiceUser(r, reg)
	}
	if !s.cfg.EnableRegistration {
		return nil, httpapi.Forbidden("registration is disabled")
	}
	var req registerRequest
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if req.Type == loginTypeAppService {
		if bearer(r) == "" {
			return nil, httpapi.Errorf(http.StatusUnauthorized, httpapi.CodeMissingToken, "%s needs the application service's as_token", loginTypeAppService)
		}
		return nil, httpapi.Errorf(http.StatusUnauthorized, httpapi.CodeUnknownToken, "unknown application service token")
	}
	var user roomdag.UserID
	if req.Username != "" {
		// A name an application service holds is refused as such, even
		// when the service has registered it already.
		if err := s.checkUserClaim(nil, roomdag.NewUserID(strings.ToLower(req.Username), s.cfg.ServerName)); err != nil {
			return nil, err
		}
		u, err := s.checkNewUsername(r, req.Username)
		if err != nil {
			return nil, err
		}
		user = u
	}
	// The password is optional in the spec's request schema, and clients
	// (and Complement's "POST {} returns a set of flows") start with an
	// empty body to learn the flows: so a password is checked here only if
	// given, and required once auth is complete.
	if req.Password != "" {
		if err := s.checkPasswordStrength(req.Password); err != nil {
			return nil, err
		}
	}
	_, err := s.uia.require(r, req.Auth, s.registerFlows(), map[string]any{}, func() string { return s.newID(24) },
		func(stage string, a *uiaAuth) (roomdag.UserID, error) {
			if stage == stageRegistrationToken && !validToken(s.cfg.Tokens, a.Token) {
				return "", httpapi.Forbidden("invalid registration token")
			}
			return "", nil
		})
	if err != nil {
		return nil, err
	}
	if req.Password == "" {
		return nil, httpapi.MissingParam("password is required")
	}
	if user == "" {
		user = roomdag.NewUserID(strings.ToLower(s.newID(12)), s.cfg.ServerName)
	}
	hash, err := s.hashPassword(req.Password)
	if err != nil {
		return nil, err
	}
	if err := s.store.CreateUser(r.Context(), storage.User{ID: user, PasswordHash: hash}, s.clock.Now().UnixMilli()); err != nil {
		if errors.Is(err, storage.ErrConflict) {
			return nil, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeUserInUse, "user ID already taken")
		}
		return nil, err
	}
	resp := map[string]any{"user_id": user}
	if req.InhibitLogin {
		return resp, nil
	}
	return s.startSession(r, user, req.DeviceID, req.InitialDeviceDisplayName, req.RefreshToken)
}

// checkNewUsername validates a requested localpart and that it is free.
func (s *Server) checkNewUsername(r *http.Request, username string) (roomdag.UserID, error) {
	// Capitals are folded to lower case, as Synapse does and Complement
	// expects ("POST /register downcases capitals in usernames").
	local := strings.ToLower(username)
	if !roomdag.ValidLocalpart(local) {
		return "", httpapi.Errorf(http.StatusBadRequest, httpapi.CodeInvalidUsername, "user ID may contain only a-z, 0-9, and . _ = - / +")
	}
	user := roomdag.NewUserID(local, s.cfg.ServerName)
	if len(user) > 255 {
		return "", httpapi.Errorf(http.StatusBadRequest, httpapi.CodeInvalidUsername, "user ID is too long")
	}
	if _, err := s.store.User(r.Context(), user); err == nil {
		return "", httpapi.Errorf(http.StatusBadRequest, httpapi.CodeUserInUse, "user ID already taken")
	} else if !errors.Is(err, storage.ErrNotFound) {
		return "", err
	}
	return user, nil
}

func (s *Server) registerAvailable(r *http.Request) (any, error) {
	if !s.cfg.EnableRegistration {
		return nil, httpapi.Forbidden("registration is disabled")
	}
	name := r.URL.Query().Get("username")
	if name == "" {
		return nil, httpapi.MissingParam("username is required")
	}
	if err := s.checkUserClaim(nil, roomdag.NewUserID(strings.ToLower(name), s.cfg.ServerName)); err != nil {
		return nil, err
	}
	if _, err := s.checkNewUsername(r, name); err != nil {
		return nil, err
	}
	return map[string]bool{"available": true}, nil
}

func (s *Server) tokenValidity(r *http.Request) (any, error) {
	if !s.cfg.EnableRegistration || !s.cfg.RequiresToken {
		return nil, httpapi.Forbidden("registration tokens are not in use")
	}
	t := r.URL.Query().Get("token")
	if t == "" {
		return nil, httpapi.MissingParam("token is required")
	}
	return map[string]bool{"valid": validToken(s.cfg.Tokens, t)}, nil
}

// startSession creates (or reuses) a device and issues tokens for it.
func (s *Server) startSession(r *http.Request, user roomdag.UserID, deviceID string, name *string, wantRefresh bool) (any, error) {
	if deviceID == "" {
		deviceID = s.newID(10)
	}
	if len(deviceID) > 255 {
		return nil, httpapi.InvalidParam("device_id is too long")
	}
	access, err := s.newToken("mat_")
	if err != nil {
		return nil, err
	}
	sess := storage.Session{UserID: user, DeviceID: deviceID, DisplayName: name, TokenHash: hashToken(access)}
	resp := map[string]any{"user_id": user, "access_token": access, "device_id": deviceID,
		"home_server": s.cfg.ServerName, "well_known": map[string]any{"m.homeserver": map[string]string{"base_url": s.cfg.BaseURL}}}
	if wantRefresh {
		refresh, err := s.newToken("mar_")
		if err != nil {
			return nil, err
		}
		sess.RefreshHash = hashToken(refresh)
		resp["refresh_token"] = refresh
		if s.cfg.AccessTokenLifetime > 0 {
			sess.ExpiresMS = s.clock.Now().Add(s.cfg.AccessTokenLifetime).UnixMilli()
			resp["expires_in_ms"] = s.cfg.AccessTokenLifetime.Milliseconds()
		}
	}
	if err := s.store.CreateSession(r.Context(), sess); err != nil {
		return nil, err
	}
	return resp, nil
}

func (s *Server) loginFlows(r *http.Request) (any, error) {
	flows := []map[string]string{{"type": "m.login.password"}}
	if len(s.registry().All()) > 0 {
		flows = append(flows, map[string]string{"type": loginTypeAppService})
	}
	return map[string]any{"flows": flows}, nil
}

type loginRequest struct {
	Type                     string          `json:"type"`
	Identifier               json.RawMessage `json:"identifier"`
	User                     string          `json:"user"`
	Password                 string          `json:"password"`
	DeviceID                 string          `json:"device_id"`
	InitialDeviceDisplayName *string         `json:"initial_device_display_name"`
	RefreshToken             bool            `json:"refresh_token"`
}

// loginUser resolves the user of a password login: identifier m.id.user
// (or the deprecated top-level user), as a localpart or a full user ID.
func (s *Server) loginUser(identifier json.RawMessage, legacyUser string) (roomdag.UserID, error) {
	name := legacyUser
	if len(identifier) > 0 {
		var id struct {
			Type string `json:"type"`
			User string `json:"user"`
		}
		if err := json.Unmarshal(identifier, &id); err != nil {
			return "", httpapi.BadJSON("identifier must be an object")
		}
		if id.Type != "m.id.user" {
			return "", httpapi.Errorf(http.StatusBadRequest, httpapi.CodeUnknown, "identifier type %q is not supported", id.Type)
		}
		name = id.User
	}
	if name == "" {
		return "", httpapi.MissingParam("no user given")
	}
	if strings.HasPrefix(name, "@") {
		u, err := roomdag.ParseUserID(strings.ToLower(name))
		if err != nil || u.Server() != s.cfg.ServerName {
			return "", httpapi.Forbidden("invalid username or password")
		}
		return u, nil
	}
	return roomdag.NewUserID(strings.ToLower(name), s.cfg.ServerName), nil
}

// checkUserPassword returns M_FORBIDDEN for any unknown user or wrong
// password, so the answer does not tell which it was. login says the
// check is for a new session (POST /login) rather than for
// user-interactive auth.
//
// The account's limits come first (Synapse's rc_login.failed_attempts
// and, for logins, rc_login.account; any user ID, existing or not): an
// account over either is refused with M_LIMIT_EXCEEDED without checking
// the password, whatever address the attempts come from, so spreading
// them over many addresses does not buy more bcrypt checks. A token of
// each is taken before the check, so that attempts arriving together are
// bounded too, and given back when the outcome is not one the limit
// counts: a right password is no failure, a wrong one no login.
func (s *Server) checkUserPassword(r *http.Request, user roomdag.UserID, pw string, login bool) error {
	key := string(user)
	if err := s.limits.allow(r.Context(), rateLoginFailed, key); err != nil {
		return err
	}
	if login {
		if err := s.limits.allow(r.Context(), rateLoginAccount, key); err != nil {
			s.limits.refund(r.Context(), rateLoginFailed, key)
			return err
		}
	}
	right, err := s.verifyPassword(r, user, pw)
	if right || err != nil && !isForbidden(err) {
		s.limits.refund(r.Context(), rateLoginFailed, key) // not a failed attempt
	}
	if login && err != nil {
		s.limits.refund(r.Context(), rateLoginAccount, key) // no login was made
	}
	return err
}

// isForbidden: the error is a wrong user or password (M_FORBIDDEN).
func isForbidden(err error) bool {
	var me *httpapi.Error
	return errors.As(err, &me) && me.Code == httpapi.CodeForbidden
}

// verifyPassword checks a user's password; right says the password was
// right, whatever else stops the login.
func (s *Server) verifyPassword(r *http.Request, user roomdag.UserID, pw string) (right bool, err error) {
	u, err := s.store.User(r.Context(), user)
	if errors.Is(err, storage.ErrNotFound) {
		// Spend the same time as a real check, so timing does not tell
		// whether the account exists.
		s.checkPassword(s.dummyHash(), pw)
		return false, httpapi.Forbidden("invalid username or password")
	}
	if err != nil {
		return false, err
	}
	// Deactivation clears the password, so this comes first: whatever
	// password is given, the answer is M_USER_DEACTIVATED, as Synapse
	// gives (and Complement's "After deactivating account, can't log in
	// with password" expects a 403).
	if u.Deactivated {
		return false, httpapi.Errorf(http.StatusForbidden, httpapi.CodeUserDeactivated, "this account has been deactivated")
	}
	if !s.checkPassword(u.PasswordHash, pw) {
		return false, httpapi.Forbidden("invalid username or password")
	}
	if u.Locked {
		// Spec: a locked account cannot obtain a new access token.
		e := httpapi.Errorf(http.StatusUnauthorized, httpapi.CodeUserLocked, "This account has been locked")
		e.Extra = map[string]any{"soft_logout": true}
		return true, e
	}
	return true, nil
}

func (s *Server) login(r *http.Request) (any, error) {
	var req loginRequest
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if req.Type == loginTypeAppService {
		return s.loginAppService(r, req)
	}
	if req.Type != "m.login.password" {
		return nil, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeUnknown, "login type %q is not supported", req.Type)
	}
	user, err := s.loginUser(req.Identifier, req.User)
	if err != nil {
		return nil, err
	}
	if err := s.checkUserPassword(r, user, req.Password, true); err != nil {
		return nil, err
	}
	return s.startSession(r, user, req.DeviceID, req.InitialDeviceDisplayName, req.RefreshToken)
}

func (s *Server) refresh(r *http.Request) (any, error) {
	var req struct {
		RefreshToken string `json:"refresh_token"`
	}
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if req.RefreshToken == "" {
		return nil, httpapi.MissingParam("refresh_token is required")
	}
	access, err := s.newToken("mat_")
	if err != nil {
		return nil, err
	}
	refresh, err := s.newToken("mar_")
	if err != nil {
		return nil, err
	}
	next := storage.Session{TokenHash: hashToken(access), RefreshHash: hashToken(refresh)}
	resp := map[string]any{"access_token": access, "refresh_token": refresh}
	if s.cfg.AccessTokenLifetime > 0 {
		next.ExpiresMS = s.clock.Now().Add(s.cfg.AccessTokenLifetime).UnixMilli()
		resp["expires_in_ms"] = s.cfg.AccessTokenLifetime.Milliseconds()
	}
	if _, _, err := s.store.Refresh(r.Context(), hashToken(req.RefreshToken), next); err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return nil, httpapi.Errorf(http.StatusUnauthorized, httpapi.CodeUnknownToken, "unknown refresh token")
		}
		return nil, err
	}
	return resp, nil
}

// logout deletes the device, and with it every token it had.
func (s *Server) logout(r *http.Request) (any, error) {
	rq := requester(r)
	return struct{}{}, s.endSessions(r.Context(), rq.UserID, []string{rq.DeviceID}, "")
}

func (s *Server) logoutAll(r *http.Request) (any, error) {
	return struct{}{}, s.endSessions(r.Context(), requester(r).UserID, nil, "")
}

func (s *Server) whoami(r *http.Request) (any, error) {
	rq := requester(r)
	out := map[string]any{"user_id": rq.UserID, "is_guest": false}
	if rq.DeviceID != "" || rq.AppService == nil {
		out["device_id"] = rq.DeviceID // a service acting without a device has none
	}
	return out, nil
}

// requirePassword runs user-interactive auth with the m.login.password
// stage for the requester's own account.
//
// The stage checks the password of the account it names. A flow that
// proved another account than the requester's is refused with 403
// M_FORBIDDEN once complete, as Synapse does (validate_user_via_ui_auth)
// and Complement's "DELETE /device/{deviceId} requires UI auth user to
// match device owner" expects: a stolen access token and the thief's own
// password must not delete the victim's devices or change their password.
func (s *Server) requirePassword(r *http.Request, auth *uiaAuth) error {
	rq := requester(r)
	proved, err := s.uia.require(r, auth, [][]string{{stagePassword}}, map[string]any{}, func() string { return s.newID(24) },
		func(stage string, a *uiaAuth) (roomdag.UserID, error) {
			user, err := s.loginUser(a.Identifier, a.User)
			if err != nil {
				return "", err
			}
			if err := s.checkUserPassword(r, user, a.Password, false); err != nil {
				return "", err
			}
			return user, nil
		})
	if err != nil {
		return err
	}
	if proved != rq.UserID {
		return httpapi.Forbidden("the credentials given are not those of the account making the request")
	}
	return nil
}

func (s *Server) changePassword(r *http.Request) (any, error) {
	var req struct {
		NewPassword   string   `json:"new_password"`
		LogoutDevices *bool    `json:"logout_devices"`
		Auth          *uiaAuth `json:"auth"`
	}
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if req.NewPassword == "" {
		return nil, httpapi.MissingParam("new_password is required")
	}
	if err := s.checkPasswordStrength(req.NewPassword); err != nil {
		return nil, err
	}
	if err := s.requirePassword(r, req.Auth); err != nil {
		return nil, err
	}
	rq := requester(r)
	hash, err := s.hashPassword(req.NewPassword)
	if err != nil {
		return nil, err
	}
	if err := s.store.SetPasswordHash(r.Context(), rq.UserID, hash); err != nil {
		return nil, err
	}
	if req.LogoutDevices == nil || *req.LogoutDevices {
		if err := s.endSessions(r.Context(), rq.UserID, nil, rq.DeviceID); err != nil {
			return nil, err
		}
	}
	return struct{}{}, nil
}

func (s *Server) listDevices(r *http.Request) (any, error) {
	devs, err := s.store.Devices(r.Context(), requester(r).UserID)
	if err != nil {
		return nil, err
	}
	return map[string]any{"devices": devs}, nil
}

func (s *Server) findDevice(r *http.Request, id string) (*storage.Device, error) {
	devs, err := s.store.Devices(r.Context(), requester(r).UserID)
	if err != nil {
		return nil, err
	}
	for i := range devs {
		if devs[i].DeviceID == id {
			return &devs[i], nil
		}
	}
	return nil, httpapi.NotFound("unknown device")
}

func (s *Server) getDevice(r *http.Request) (any, error) {
	return s.findDevice(r, httpapi.PathParam(r, "deviceId"))
}

func (s *Server) putDevice(r *http.Request) (any, error) {
	var req struct {
		DisplayName *string `json:"display_name"`
	}
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	id := httpapi.PathParam(r, "deviceId")
	if _, err := s.findDevice(r, id); err != nil {
		if rq := requester(r); rq.AppService != nil {
			return s.createAppServiceDevice(r, rq.UserID, id, req.DisplayName)
		}
		return nil, err
	}
	if req.DisplayName != nil {
		if err := s.store.SetDeviceName(r.Context(), requester(r).UserID, id, *req.DisplayName); err != nil {
			return nil, err
		}
	}
	return struct{}{}, nil
}

func (s *Server) deleteDevice(r *http.Request) (any, error) {
	var req struct {
		Auth *uiaAuth `json:"auth"`
	}
	// Older clients send DELETE without a body: an empty body reads as {}
	// (Synapse also takes any non-JSON body for {}; here only an empty one
	// is, and anything else that is not JSON is 400 M_NOT_JSON, as on every
	// other endpoint).
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	// No 404 for an unknown device: the spec (device_management.yaml)
	// answers 200 for a device that "had been removed previously", so a
	// retried DELETE succeeds, as delete_devices does.
	id := httpapi.PathParam(r, "deviceId")
	if err := s.requireDeviceAuth(r, req.Auth); err != nil {
		return nil, err
	}
	return struct{}{}, s.endSessions(r.Context(), requester(r).UserID, []string{id}, "")
}

// requireDeviceAuth is the user-interactive auth of deleting devices,
// which an application service skips (v1.17, MSC4190: it has no password
// for its users, and manages their devices for encryption).
func (s *Server) requireDeviceAuth(r *http.Request, auth *uiaAuth) error {
	if requester(r).AppService != nil {
		return nil
	}
	return s.requirePassword(r, auth)
}

func (s *Server) deleteDevices(r *http.Request) (any, error) {
	var req struct {
		Devices []string `json:"devices"`
		Auth    *uiaAuth `json:"auth"`
	}
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if req.Devices == nil {
		return nil, httpapi.MissingParam("devices is required")
	}
	if err := s.requireDeviceAuth(r, req.Auth); err != nil {
		return nil, err
	}
	return struct{}{}, s.endSessions(r.Context(), requester(r).UserID, req.Devices, "")
}

// Synapse's shared-secret registration (/_synapse/admin/v1/register): not
// in the spec, but operators' tools and Complement use it.

func (s *Server) adminRegisterNonce(r *http.Request) (any, error) {
	if s.cfg.SharedSecret == "" {
		return nil, httpapi.Errorf(http.StatusNotFound, httpapi.CodeUnrecognized, "shared-secret registration is disabled")
	}
	nonce := s.newID(32)
	if err := s.uia.putNonce(r.Context(), nonce); err != nil {
		return nil, err
	}
	return map[string]string{"nonce": nonce}, nil
}

func (s *Server) adminRegister(r *http.Request) (any, error) {
	if s.cfg.SharedSecret == "" {
		return nil, httpapi.Errorf(http.StatusNotFound, httpapi.CodeUnrecognized, "shared-secret registration is disabled")
	}
	var req struct {
		Nonce       string  `json:"nonce"`
		Username    string  `json:"username"`
		Password    string  `json:"password"`
		Admin       bool    `json:"admin"`
		MAC         string  `json:"mac"`
		Displayname *string `json:"displayname"`
	}
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	issued, err := s.uia.takeNonce(r.Context(), req.Nonce)
	if err != nil {
		return nil, err
	}
	if !issued {
		return nil, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeUnknown, "unrecognised nonce")
	}
	mac := hmac.New(sha1.New, []byte(s.cfg.SharedSecret))
	admin := "notadmin"
	if req.Admin {
		admin = "admin"
	}
	mac.Write([]byte(req.Nonce + "\x00" + req.Username + "\x00" + req.Password + "\x00" + admin))
	want := mac.Sum(nil)
	got, err := hex.DecodeString(req.MAC)
	if err != nil || !hmac.Equal(want, got) {
		return nil, httpapi.Forbidden("HMAC incorrect")
	}
	// Synapse lower-cases the name here (after checking the MAC, which
	// covers it as sent); operators' scripts and Complement's "with shared
	// secret downcases capitals" rely on it.
	user, err := s.checkNewUsername(r, strings.ToLower(req.Username))
	if err != nil {
		return nil, err
	}
	hash, err := s.hashPassword(req.Password)
	if err != nil {
		return nil, err
	}
	if err := s.store.CreateUser(r.Context(), storage.User{ID: user, PasswordHash: hash, Admin: req.Admin, DisplayName: req.Displayname}, s.clock.Now().UnixMilli()); err != nil {
		if errors.Is(err, storage.ErrConflict) {
			return nil, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeUserInUse, "user ID already taken")
		}
		return nil, err
	}
	return s.startSession(r, user, "", nil, false)
}
