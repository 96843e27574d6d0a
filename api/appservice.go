package api

import (
	"context"
	"encoding/json"
	"errors"
	"github.com/persistentchat/homeserver/appservice"
	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// The client-server extensions for application services (spec:
// application service API, "Client-Server API Extensions"): as_token
// authentication with identity assertion, exclusive namespaces, the
// m.login.application_service registration and login, timestamp
// massaging, rate-limit exemption, ping and the third-party lookups.

// AppServices is what the API needs of application service support;
// appservice.Service implements it.
type AppServices interface {
	Registry() *appservice.Registry
	QueryUser(ctx context.Context, u roomdag.UserID) (bool, error)
	QueryAlias(ctx context.Context, a roomdag.RoomAlias) (bool, error)
	Ping(ctx context.Context, reg *appservice.Registration, txnID string) (time.Duration, error)
	ThirdParty(ctx context.Context, regs []*appservice.Registration, path string, query url.Values) []appservice.ThirdPartyResult
	Typing(room roomdag.RoomID, user roomdag.UserID, typing bool, timeout time.Duration)
	Receipt(room roomdag.RoomID, user roomdag.UserID, typ, thread string, event roomdag.EventID, tsMS int64)
	// Presence reaches the services from the syncer (sync.PresenceListener).
}

// loginTypeAppService is the login and registration type of services.
const loginTypeAppService = "m.login.application_service"

func (s *Server) appServiceRoutes() []route {
	return []route{
		{"POST", v1 + "/appservice/{appserviceId}/ping", s.pingAppService, authRequired, rateNone},
		{"GET", v3 + "/thirdparty/protocols", s.thirdPartyProtocols, authRequired, rateNone},
		{"GET", v3 + "/thirdparty/protocol/{protocol}", s.thirdPartyProtocol, authRequired, rateNone},
		{"GET", v3 + "/thirdparty/location/{protocol}", s.thirdPartyLookup("location"), authRequired, rateNone},
		{"GET", v3 + "/thirdparty/user/{protocol}", s.thirdPartyLookup("user"), authRequired, rateNone},
		{"GET", v3 + "/thirdparty/location", s.thirdPartyReverse("location", "alias"), authRequired, rateNone},
		{"GET", v3 + "/thirdparty/user", s.thirdPartyReverse("user", "userid"), authRequired, rateNone},
	}
}

// registry is the set of services, empty when none is configured.
func (s *Server) registry() *appservice.Registry {
	if s.cfg.AppServices == nil {
		return nil
	}
	return s.cfg.AppServices.Registry()
}

// bearer returns the request's access token (requestToken), "" if none:
// services send their as_token in the header or, older ones, as the
// access_token query parameter.
func bearer(r *http.Request) string {
	t, _ := requestToken(r)
	return t
}

// appServiceOf returns the service whose as_token the request carries,
// or nil.
func (s *Server) appServiceOf(r *http.Request) *appservice.Registration {
	t := bearer(r)
	if t == "" {
		return nil
	}
	return s.registry().ByASToken(t)
}

// assertIdentity authenticates a request made with a service's as_token:
// it acts as the user_id of the query string, which must be one of the
// service's users and registered, or else as the service's sender; and,
// if device_id is given (v1.17, MSC4326), as that device of the user,
// which must exist (spec: "Identity assertion").
func (s *Server) assertIdentity(r *http.Request, reg *appservice.Registration) (*Requester, error) {
	q := r.URL.Query()
	user := reg.Sender
	if raw := q.Get("user_id"); raw != "" {
		u, err := roomdag.ParseUserID(raw)
		if err != nil {
			return nil, httpapi.InvalidParam("malformed user_id")
		}
		if !reg.OwnsUser(u) {
			return nil, httpapi.Forbidden("the application service cannot act as %s: it is not in its namespaces", u)
		}
		user = u
	}
	rq := &Requester{UserID: user, AppService: reg}
	if user != reg.Sender {
		// The holds of the user the service acts as apply too.
		u, err := s.store.User(r.Context(), user)
		if errors.Is(err, storage.ErrNotFound) {
			return nil, httpapi.Forbidden("the application service has not registered %s", user)
		} else if err != nil {
			return nil, err
		}
		if u.Deactivated {
			// Deactivation ends every session of the account; a service
			// acting as it must not keep it alive (as a login would not).
			return nil, httpapi.Errorf(http.StatusForbidden, httpapi.CodeUserDeactivated, "%s has been deactivated", user)
		}
		rq.Locked, rq.Suspended = u.Locked, u.Suspended
	}
	device := q.Get("device_id")
	if device == "" {
		device = q.Get("org.matrix.msc3202.device_id") // the unstable name
	}
	if device != "" {
		devs, err := s.store.Devices(r.Context(), user)
		if err != nil {
			return nil, err
		}
		found := false
		for _, d := range devs {
			found = found || d.DeviceID == device
		}
		if !found {
			return nil, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeUnknownDevice, "%s has no device %s", user, device)
		}
		rq.DeviceID = device
		s.noteSeen(r, rq)
	}
	return rq, nil
}

// rateExempt says whether a request skips the rate limits: a service's
// requests do unless its registration says rate_limited: true, and those
// as its sender always do. Routes that need no token (register, login)
// are exempt when they carry a service's as_token.
func (s *Server) rateExempt(r *http.Request) bool {
	var reg *appservice.Registration
	user := roomdag.UserID("")
	if rq := requester(r); rq != nil {
		reg, user = rq.AppService, rq.UserID
	} else if reg = s.appServiceOf(r); reg != nil {
		user = reg.Sender
	}
	return reg != nil && (!reg.RateLimited || user == reg.Sender)
}

func exclusiveErr(format string, a ...any) *httpapi.Error {
	return httpapi.Errorf(http.StatusBadRequest, httpapi.CodeExclusive, format, a...)
}

// checkUserClaim refuses with M_EXCLUSIVE a user ID the caller may not
// take: reg is the calling service, nil for anybody else.
func (s *Server) checkUserClaim(reg *appservice.Registration, u roomdag.UserID) error {
	if s.registry().MayClaimUser(reg, u) {
		return nil
	}
	if reg != nil && !reg.OwnsUser(u) {
		return exclusiveErr("%s is not in the namespaces of application service %s", u, reg.ID)
	}
	return exclusiveErr("%s is reserved by an application service", u)
}

// checkAliasClaim refuses with M_EXCLUSIVE a local alias the requester
// may not create: one in another service's exclusive namespace, or, for
// a service, one outside its own namespaces.
func (s *Server) checkAliasClaim(r *http.Request, a roomdag.RoomAlias) error {
	var reg *appservice.Registration
	if rq := requester(r); rq != nil {
		reg = rq.AppService
	}
	if s.registry().MayClaimAlias(reg, a) {
		return nil
	}
	if reg != nil && !reg.InAliasNamespace(a) {
		return exclusiveErr("%s is not in the alias namespaces of application service %s", a, reg.ID)
	}
	return exclusiveErr("%s is reserved by an application service", a)
}

// checkAliasOwner refuses with M_EXCLUSIVE changes to an alias that a
// service other than the requester's holds exclusively (deleting it, say).
func (s *Server) checkAliasOwner(r *http.Request, a roomdag.RoomAlias) error {
	owner := s.registry().ExclusiveAliasOwner(a)
	if owner == nil {
		return nil
	}
	if rq := requester(r); rq != nil && rq.AppService == owner {
		return nil
	}
	return exclusiveErr("%s is reserved by an application service", a)
}

// checkCanonicalAliasClaim applies checkAliasClaim to the local aliases
// an m.room.canonical_alias content names.
func (s *Server) checkCanonicalAliasClaim(r *http.Request, content []byte) error {
	var c struct {
		Alias      *string  `json:"alias"`
		AltAliases []string `json:"alt_aliases"`
	}
	if json.Unmarshal(content, &c) != nil {
		return nil // checkCanonicalAlias reports malformed content
	}
	all := c.AltAliases
	if c.Alias != nil && *c.Alias != "" {
		all = append(all, *c.Alias)
	}
	for _, raw := range all {
		a, err := roomdag.ParseRoomAlias(raw)
		if err != nil || a.Server() != s.cfg.ServerName {
			continue
		}
		// A service may point its rooms at aliases outside its own
		// namespaces that exist already; what nobody may do is use a
		// service's exclusive alias but that service.
		if err := s.checkAliasOwner(r, a); err != nil {
			return err
		}
	}
	return nil
}

// localUserExists reports whether a local user exists; for one that does
// not but lies in a service's namespace, the service is asked first, and
// may create it (spec: "Querying").
func (s *Server) localUserExists(ctx context.Context, u roomdag.UserID) (bool, error) {
	_, err := s.store.User(ctx, u)
	if err == nil || !errors.Is(err, storage.ErrNotFound) {
		return err == nil, err
	}
	if s.cfg.AppServices == nil || u.Server() != s.cfg.ServerName {
		return false, nil
	}
	ok, err := s.cfg.AppServices.QueryUser(ctx, u)
	if !ok {
		return false, queryErr(err)
	}
	_, err = s.store.User(ctx, u)
	if errors.Is(err, storage.ErrNotFound) {
		return false, nil // it said yes but made nothing
	}
	return err == nil, err
}

// queryAliasRoom asks the services whose namespaces cover an unknown
// local alias, and returns the room the alias points to once one of them
// has created it; ErrNotFound when none did.
func (s *Server) queryAliasRoom(ctx context.Context, a roomdag.RoomAlias) (roomdag.RoomID, error) {
	if s.cfg.AppServices == nil {
		return "", storage.ErrNotFound
	}
	ok, err := s.cfg.AppServices.QueryAlias(ctx, a)
	if !ok {
		if err := queryErr(err); err != nil {
			return "", err
		}
		return "", storage.ErrNotFound
	}
	room, _, err := s.store.Alias(ctx, a)
	return room, err
}

// queryErr maps a failed query: a service that did not answer in time is
// a 408 to the client, as the spec asks; any other failure counts as "no
// such entity" (the service was asked and said nothing useful).
func queryErr(err error) error {
	if err != nil && appservice.IsTimeout(err) {
		return httpapi.Errorf(http.StatusRequestTimeout, httpapi.CodeUnknown, "the application service did not answer in time")
	}
	return nil
}

// massagedTS is the ts query parameter of a service's send or state
// request (spec: "Timestamp massaging"); 0 for other requesters, who may
// not set it, or when absent.
func massagedTS(r *http.Request) (int64, error) {
	rq := requester(r)
	raw := r.URL.Query().Get("ts")
	if rq == nil || rq.AppService == nil || raw == "" {
		return 0, nil
	}
	ts, err := strconv.ParseInt(raw, 10, 64)
	if err != nil || ts < 0 || ts > 1<<53-1 {
		return 0, httpapi.InvalidParam("ts must be a whole number of milliseconds from 0 to 2^53-1")
	}
	return ts, nil
}

// noteTyping and noteReceipt tell the services of ephemeral changes.
func (s *Server) noteTyping(room roomdag.RoomID, user roomdag.UserID, typing bool, timeout time.Duration) {
	if s.cfg.AppServices != nil {
		s.cfg.AppServices.Typing(room, user, typing, timeout)
	}
}

func (s *Server) noteReceipt(room roomdag.RoomID, user roomdag.UserID, typ, thread string, event roomdag.EventID, tsMS int64) {
	if s.cfg.AppServices != nil {
		s.cfg.AppServices.Receipt(room, user, typ, thread, event, tsMS)
	}
}

// registerAppServiceUser is POST /register by a service: no flows, no
// password; the user must lie in its namespaces (spec: "Server admin
// style permissions"). It works whether or not registration is open.
func (s *Server) registerAppServiceUser(r *http.Request, reg *appservice.Registration) (any, error) {
	var req struct {
		Type                     string   `json:"type"`
		Username                 string   `json:"username"`
		User                     string   `json:"user"` // before r0
		DeviceID                 string   `json:"device_id"`
		InitialDeviceDisplayName *string  `json:"initial_device_display_name"`
		InhibitLogin             bool     `json:"inhibit_login"`
		RefreshToken             bool     `json:"refresh_token"`
		Auth                     *uiaAuth `json:"auth"`
	}
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if req.Type == "" && req.Auth != nil {
		req.Type = req.Auth.Type
	}
	if req.Type != "" && req.Type != loginTypeAppService {
		return nil, httpapi.BadJSON("an application service registers users with type %s", loginTypeAppService)
	}
	name := req.Username
	if name == "" {
		name = req.User
	}
	if name == "" {
		return nil, httpapi.MissingParam("username is required")
	}
	var user roomdag.UserID
	if strings.HasPrefix(name, "@") {
		u, err := roomdag.ParseUserID(name)
		if err != nil || u.Server() != s.cfg.ServerName || !roomdag.ValidLocalpart(u.Localpart()) {
			return nil, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeInvalidUsername, "invalid user ID %q", name)
		}
		user = u
	} else {
		if !roomdag.ValidLocalpart(name) {
			return nil, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeInvalidUsername, "user ID may contain only a-z, 0-9, and . _ = - / +")
		}
		user = roomdag.NewUserID(name, s.cfg.ServerName)
	}
	if len(user) > 255 {
		return nil, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeInvalidUsername, "user ID is too long")
	}
	if err := s.checkUserClaim(reg, user); err != nil {
		return nil, err
	}
	if err := s.store.CreateUser(r.Context(), storage.User{ID: user}, s.clock.Now().UnixMilli()); err != nil {
		if errors.Is(err, storage.ErrConflict) {
			return nil, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeUserInUse, "user ID already taken")
		}
		return nil, err
	}
	if req.InhibitLogin {
		return map[string]any{"user_id": user, "home_server": s.cfg.ServerName}, nil
	}
	return s.startSession(r, user, req.DeviceID, req.InitialDeviceDisplayName, req.RefreshToken)
}

// AppServiceDevices creates devices without access tokens, for
// application services (v1.17, MSC4190).
type AppServiceDevices interface {
	// CreateDevice creates the user's device unless it exists; it says
	// whether it did. name, if not nil, is the device's display name.
	CreateDevice(ctx context.Context, user roomdag.UserID, device string, name *string) (bool, error)
}

// createAppServiceDevice is PUT /devices/{deviceId} by an application
// service for a device its user does not have: it creates it, with no
// access token, and answers 201 (spec v1.17, MSC4190: services manage
// their users' devices without /login, which OAuth-only servers lack).
// The service then acts as it with ?device_id= (MSC4326).
func (s *Server) createAppServiceDevice(r *http.Request, user roomdag.UserID, device string, name *string) (any, error) {
	if len(device) > maxDeviceIDBytes || !utf8.ValidString(device) || strings.ContainsFunc(device, unicode.IsControl) {
		return nil, httpapi.InvalidParam("device IDs are at most %d bytes of printable text", maxDeviceIDBytes)
	}
	created, err := s.store.CreateDevice(r.Context(), user, device, name)
	if err != nil {
		return nil, err
	}
	if !created { // made by a request that raced this one
		if name != nil {
			if err := s.store.SetDeviceName(r.Context(), user, device, *name); err != nil {
				return nil, err
			}
		}
		return struct{}{}, nil
	}
	return httpapi.WithStatus{Status: http.StatusCreated, Body: struct{}{}}, nil
}

// maxDeviceIDBytes bounds device IDs, as startSession does.
const maxDeviceIDBytes = 255

// loginAppService is POST /login with m.login.application_service: the
// service's as_token in place of a password, for one of its users.
func (s *Server) loginAppService(r *http.Request, req loginRequest) (any, error) {
	if bearer(r) == "" {
		return nil, httpapi.Errorf(http.StatusUnauthorized, httpapi.CodeMissingToken, "%s needs the application service's as_token", loginTypeAppService)
	}
	reg := s.appServiceOf(r)
	if reg == nil {
		return nil, httpapi.Errorf(http.StatusUnauthorized, httpapi.CodeUnknownToken, "unknown application service token")
	}
	user, err := s.loginUser(req.Identifier, req.User)
	if err != nil {
		return nil, err
	}
	if !reg.OwnsUser(user) {
		return nil, httpapi.Errorf(http.StatusForbidden, httpapi.CodeExclusive, "%s is not in the namespaces of application service %s", user, reg.ID)
	}
	if u, err := s.store.User(r.Context(), user); errors.Is(err, storage.ErrNotFound) {
		return nil, httpapi.Forbidden("the application service has not registered %s", user)
	} else if err != nil {
		return nil, err
	} else if u.Deactivated {
		// A deactivated account gets no new session by any login type.
		return nil, httpapi.Errorf(http.StatusForbidden, httpapi.CodeUserDeactivated, "%s has been deactivated", user)
	}
	return s.startSession(r, user, req.DeviceID, req.InitialDeviceDisplayName, req.RefreshToken)
}

// pingAppService is POST /_matrix/client/v1/appservice/{appserviceId}/ping
// (spec v1.7): the homeserver pings the calling service.
func (s *Server) pingAppService(r *http.Request) (any, error) {
	rq := requester(r)
	id := httpapi.PathParam(r, "appserviceId")
	if rq.AppService == nil || rq.AppService.ID != id {
		return nil, httpapi.Forbidden("the access token is not the as_token of application service %q", id)
	}
	var req struct {
		TransactionID string `json:"transaction_id"`
	}
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	d, err := s.cfg.AppServices.Ping(r.Context(), rq.AppService, req.TransactionID)
	var se *appservice.StatusError
	switch {
	case err == nil:
		return map[string]any{"duration_ms": d.Milliseconds()}, nil
	case errors.Is(err, appservice.ErrNoURL):
		return nil, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeURLNotSet, "the application service has no URL")
	case errors.As(err, &se):
		e := httpapi.Errorf(http.StatusBadGateway, httpapi.CodeBadStatus, "ping returned status %d", se.Status)
		e.Extra = map[string]any{"status": se.Status, "body": se.Body}
		return nil, e
	case appservice.IsTimeout(err):
		return nil, httpapi.Errorf(http.StatusGatewayTimeout, httpapi.CodeConnectionTimeout, "the connection to the application service timed out")
	case errors.Is(err, context.Canceled):
		return nil, err
	}
	return nil, httpapi.Errorf(http.StatusBadGateway, httpapi.CodeConnectionFailed, "could not reach the application service: %v", err)
}

// Third-party lookups (client-server "Third-party Lookup"), answered by
// the services that declare the protocol.

// instanceID names a protocol instance across services, as Synapse does.
func instanceID(reg *appservice.Registration, network string) string {
	b, _ := json.Marshal(map[string]string{"appservice_id": reg.ID, "network_id": network})
	return string(b)
}

// mergeProtocol folds the protocol descriptions of several services into
// one: the first gives the fields, every one adds its instances, each
// with an instance_id.
func mergeProtocol(results []appservice.ThirdPartyResult) map[string]any {
	var out map[string]any
	var instances []any
	for _, res := range results {
		var p map[string]any
		if json.Unmarshal(res.Body, &p) != nil || p == nil {
			continue
		}
		if out == nil {
			out = p
		}
		list, _ := p["instances"].([]any)
		for _, inst := range list {
			m, ok := inst.(map[string]any)
			if !ok {
				continue
			}
			network, _ := m["network_id"].(string)
			m["instance_id"] = instanceID(res.Service, network)
			instances = append(instances, m)
		}
	}
	if out != nil {
		if instances == nil {
			instances = []any{}
		}
		out["instances"] = instances
	}
	return out
}

func (s *Server) thirdPartyProtocols(r *http.Request) (any, error) {
	out := map[string]any{}
	if s.cfg.AppServices == nil {
		return out, nil
	}
	protocols := map[string]bool{}
	for _, reg := range s.registry().WithProtocol("") {
		for _, p := range reg.Protocols {
			protocols[p] = true
		}
	}
	for p := range protocols {
		res := s.cfg.AppServices.ThirdParty(r.Context(), s.registry().WithProtocol(p), "protocol/"+url.PathEscape(p), nil)
		if m := mergeProtocol(res); m != nil {
			out[p] = m
		}
	}
	return out, nil
}

func (s *Server) thirdPartyProtocol(r *http.Request) (any, error) {
	p := httpapi.PathParam(r, "protocol")
	regs := s.registry().WithProtocol(p)
	if len(regs) == 0 || s.cfg.AppServices == nil {
		return nil, httpapi.NotFound("unknown protocol %q", p)
	}
	m := mergeProtocol(s.cfg.AppServices.ThirdParty(r.Context(), regs, "protocol/"+url.PathEscape(p), nil))
	if m == nil {
		return nil, httpapi.NotFound("no application service described protocol %q", p)
	}
	return m, nil
}

// concatLists joins the JSON arrays the services answered with.
func concatLists(results []appservice.ThirdPartyResult) []json.RawMessage {
	out := []json.RawMessage{}
	for _, res := range results {
		var list []json.RawMessage
		if json.Unmarshal(res.Body, &list) == nil {
			out = append(out, list...)
		}
	}
	return out
}

// thirdPartyLookup forwards GET /thirdparty/{kind}/{protocol} with its
// search fields to the services of the protocol.
func (s *Server) thirdPartyLookup(kind string) httpapi.Func {
	return func(r *http.Request) (any, error) {
		p := httpapi.PathParam(r, "protocol")
		regs := s.registry().WithProtocol(p)
		if len(regs) == 0 || s.cfg.AppServices == nil {
			return nil, httpapi.NotFound("unknown protocol %q", p)
		}
		q := r.URL.Query()
		q.Del("access_token")
		return concatLists(s.cfg.AppServices.ThirdParty(r.Context(), regs, kind+"/"+url.PathEscape(p), q)), nil
	}
}

// thirdPartyReverse forwards GET /thirdparty/{kind}?{param}= to every
// service that declares a protocol.
func (s *Server) thirdPartyReverse(kind, param string) httpapi.Func {
	return func(r *http.Request) (any, error) {
		v := r.URL.Query().Get(param)
		if v == "" {
			return nil, httpapi.MissingParam("%s is required", param)
		}
		if s.cfg.AppServices == nil {
			return []json.RawMessage{}, nil
		}
		regs := s.registry().WithProtocol("")
		return concatLists(s.cfg.AppServices.ThirdParty(r.Context(), regs, kind, url.Values{param: {v}})), nil
	}
}
