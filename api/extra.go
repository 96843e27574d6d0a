package api

import (
	"net/http"

	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/roomdag"
)

// ExtraRoute is an endpoint another package serves (package e2ee) behind
// the client API's access-token authentication, account holds and body
// limits: one row of that package's route table. Path is the full path
// ("/_matrix/client/v3/keys/upload"); a v3 path answers under r0 too.
type ExtraRoute struct {
	Method  string
	Path    string
	Handler httpapi.Func
}

// Caller is who made an authenticated request of an ExtraRoute: the user
// and the device of the access token ("" for an application service
// acting as a user without a device).
func Caller(r *http.Request) (user roomdag.UserID, device string) {
	rq := requester(r)
	if rq == nil {
		return "", ""
	}
	return rq.UserID, rq.DeviceID
}

// extraRoutes is Config.ExtraRoutes as route table rows.
func (s *Server) extraRoutes() []route {
	out := make([]route, len(s.cfg.ExtraRoutes))
	for i, e := range s.cfg.ExtraRoutes {
		out[i] = route{method: e.Method, path: e.Path, handler: e.Handler, auth: authRequired}
	}
	return out
}
