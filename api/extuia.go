package api

import (
	"encoding/json"
	"net/http"

	"github.com/persistentchat/homeserver/httpapi"
)

// ctxServerKey holds, in an authenticated request's context, the Server
// that serves it, for RequireUserAuth.
type ctxServerKey struct{}

// RequireUserAuth runs user-interactive auth for an authenticated request
// of a Route that another package serves (Config.Routes), as deleting a
// device does: the m.login.password stage for the requester's own
// account, skipped for an application service (MSC4190). auth is the
// request body's "auth" object, nil or empty if it has none. It returns
// nil once the flow is complete; else the error to answer with, a 401
// challenge naming the session included. Callers check the rest of the
// body first, so that a malformed body is 400 rather than a challenge.
func RequireUserAuth(r *http.Request, auth json.RawMessage) error {
	s, _ := r.Context().Value(ctxServerKey{}).(*Server)
	if s == nil || requester(r) == nil {
		return httpapi.Errorf(http.StatusUnauthorized, httpapi.CodeMissingToken, "missing access token")
	}
	var a *uiaAuth
	if len(auth) > 0 && string(auth) != "null" {
		a = new(uiaAuth)
		if err := json.Unmarshal(auth, a); err != nil {
			return httpapi.BadJSON("auth must be an object")
		}
	}
	return s.requireDeviceAuth(r, a)
}
