package api

import (
	"net/http"

	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/roomdag"
)

// Route is a client API route that another package serves (e2ee), given
// to the API in Config.Routes and wrapped as the API's own routes are:
// authentication, account holds, rate limits and body limits, then
// httpapi's adapter. Its handler reads who is calling with Caller.
type Route struct {
	Method, Path string
	Handler      httpapi.Func
	// Public routes need no access token; the others require one.
	Public bool
	// RateLimited puts the route in the message rate limit class.
	RateLimited bool
}

// Caller is the user and device an authenticated request was made with
// (device "" for an application service acting as a user without one).
// ok is false on a request that carries no access token.
func Caller(r *http.Request) (user roomdag.UserID, device string, ok bool) {
	rq := requester(r)
	if rq == nil {
		return "", "", false
	}
	return rq.UserID, rq.DeviceID, true
}

// extraRoutes converts Config.Routes into a route table.
func (s *Server) extraRoutes() []route {
	out := make([]route, 0, len(s.cfg.Routes))
	for _, rt := range s.cfg.Routes {
		r := route{method: rt.Method, path: rt.Path, handler: rt.Handler, auth: authRequired}
		if rt.Public {
			r.auth = authNone
		}
		if rt.RateLimited {
			r.rate = rateMessage
		}
		out = append(out, r)
	}
	return out
}
