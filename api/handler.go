package api

import (
	"context"
	"errors"
	"net"
	"net/http"

	"github.com/persistentchat/homeserver/appservice"
	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/sync"
)

// The handler shape, the JSON adapter and the Matrix error type are
// httpapi's, shared with federation; this file adds what the client API
// puts around a handler: authentication, account holds and rate limits.

// authMode says what credentials a route needs.
type authMode int

const (
	authNone     authMode = iota // public
	authRequired                 // a valid access token
	authOptional                 // used if present
)

// rateClass picks the rate limit bucket of a route.
type rateClass int

const (
	rateNone rateClass = iota
	rateMessage
	rateLogin
	rateRegistration
	// Per account, not per route: logins into an account, and failed
	// password checks for it (api/account.go, checkUserPassword).
	rateLoginAccount
	rateLoginFailed
)

// route is one row of a route table.
type route struct {
	method  string
	path    string
	handler httpapi.Func
	auth    authMode
	rate    rateClass
}

type ctxKey int

const ctxRequester ctxKey = iota

// Requester is who made an authenticated request.
type Requester struct {
	UserID   roomdag.UserID
	DeviceID string
	// TokenHash identifies the access token used (for logout).
	TokenHash []byte
	// AppService is the application service whose as_token made the
	// request, acting as UserID (nil for a user's own token).
	AppService *appservice.Registration
	// sessionMark is the notifier's session mark, taken before the token
	// was looked up (sync.SessionCheck).
	sessionMark uint64
	// Locked and Suspended: the account is on hold (api/moderation.go).
	Locked, Suspended bool
}

func requester(r *http.Request) *Requester {
	rq, _ := r.Context().Value(ctxRequester).(*Requester)
	return rq
}

// wrap adapts a route's handler: authentication, rate limits and body
// limits, then httpapi's adapter for panics, errors and the response.
func (s *Server) wrap(rt route) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s.http.Serve(w, r, rt.path, func(r *http.Request) (any, error) {
			if rt.auth == authNone {
				// Public routes read an application service's as_token
				// from the header (register, login): a bad query token
				// beside it fails as on every other route.
				if t, _ := requestToken(r); t != "" {
					if err := s.checkQueryToken(r, t); err != nil {
						return nil, err
					}
				}
			}
			if rt.auth != authNone {
				rq, err := s.authenticate(r)
				if errors.Is(err, errNoToken) && rt.auth == authRequired {
					err = httpapi.Errorf(http.StatusUnauthorized, httpapi.CodeMissingToken, "missing access token")
				}
				if err != nil && !errors.Is(err, errNoToken) {
					return nil, err
				}
				if rq != nil {
					r = r.WithContext(context.WithValue(context.WithValue(r.Context(), ctxRequester, rq), ctxServerKey{}, s))
					if err := checkHolds(rt, r, rq); err != nil {
						return nil, err
					}
				}
			}
			if rt.rate != rateNone && !s.rateExempt(r) {
				if err := s.limits.allow(r.Context(), rt.rate, rateKey(r)); err != nil {
					return nil, err
				}
			}
			r.Body = http.MaxBytesReader(w, r.Body, s.bodyLimit(rt.path))
			return rt.handler(r)
		})
	}
}

// rateKey is the authenticated user, else the client address.
func rateKey(r *http.Request) string {
	if rq := requester(r); rq != nil {
		return string(rq.UserID)
	}
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return host
	}
	return r.RemoteAddr
}

// writeError renders any error as a Matrix error, for the few places that
// answer outside a handler (the router's 404 and 405).
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	s.http.WriteError(w, r, err)
}

// mapError maps the client API's own errors; httpapi maps the rest.
func mapError(_ *http.Request, err error) *httpapi.Error {
	if errors.Is(err, sync.ErrSessionEnded) {
		// A long-poll whose session was logged out, deleted or
		// deactivated while it waited: no soft logout, the session is
		// gone.
		e := httpapi.Errorf(http.StatusUnauthorized, httpapi.CodeUnknownToken, "the access token was revoked while this request waited")
		e.Extra = map[string]any{"soft_logout": false}
		return e
	}
	return nil
}
