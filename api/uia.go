package api

import (
	"encoding/json"
	"net/http"
	gosync "sync"
	"time"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/roomdag"
)

// User-interactive authentication (spec: client-server API, "User-Interactive
// Authentication API"). Sessions live in memory: they last minutes, and a
// restart only makes a client start the flow again.

const uiaSessionLifetime = 15 * time.Minute

// Stage types.
const (
	stageDummy             = "m.login.dummy"
	stagePassword          = "m.login.password"
	stageRegistrationToken = "m.login.registration_token"
)

type uiaSession struct {
	id        string
	endpoint  string // method and path: a session is bound to one request
	completed []string
	expires   time.Time
	// user is the account a completed m.login.password stage proved
	// (Synapse's "user" of a UIA session); "" before.
	user roomdag.UserID
}

type uiaSessions struct {
	clock clock.Clock
	mu    gosync.Mutex
	m     map[string]*uiaSession
}

func newUIASessions(clk clock.Clock) *uiaSessions {
	return &uiaSessions{clock: clk, m: map[string]*uiaSession{}}
}

// uiaAuth is the "auth" object of a request.
type uiaAuth struct {
	Type       string          `json:"type"`
	Session    string          `json:"session"`
	Identifier json.RawMessage `json:"identifier"`
	User       string          `json:"user"`
	Password   string          `json:"password"`
	Token      string          `json:"token"`
}

// stageCheck runs one stage; it returns an error for a failed attempt,
// and for a stage that proves an account (m.login.password), that
// account.
type stageCheck func(stage string, a *uiaAuth) (roomdag.UserID, error)

// require runs user-interactive auth for a request. Once a whole flow is
// complete it forgets the session and returns the account the flow proved
// ("" if none of its stages proves one) and a nil error; otherwise the
// 401 response to send, or the error of a failed stage.
//
// Callers parse and check the request body before calling it, so that a
// malformed body is answered 400 (M_NOT_JSON, M_BAD_JSON) rather than
// with a challenge: the spec asks registration for exactly that, and
// Complement's "POST rejects invalid utf-8 in JSON" checks it.
func (u *uiaSessions) require(r *http.Request, auth *uiaAuth, flows [][]string, params map[string]any, newID func() string, check stageCheck) (roomdag.UserID, error) {
	now := u.clock.Now()
	u.mu.Lock()
	for id, s := range u.m {
		if now.After(s.expires) {
			delete(u.m, id)
		}
	}
	endpoint := r.Method + " " + r.URL.Path
	var sess *uiaSession
	if auth != nil && auth.Session != "" {
		sess = u.m[auth.Session]
		if sess == nil {
			u.mu.Unlock()
			return "", errorf(http.StatusBadRequest, CodeUnknown, "unknown or expired user-interactive auth session")
		}
		if sess.endpoint != endpoint {
			u.mu.Unlock()
			return "", forbidden("this auth session belongs to another request")
		}
	} else {
		sess = &uiaSession{id: newID(), endpoint: endpoint}
		u.m[sess.id] = sess
	}
	sess.expires = now.Add(uiaSessionLifetime)
	u.mu.Unlock()

	var stageErr *Error
	if auth != nil && auth.Type != "" {
		if !stageOffered(flows, auth.Type) {
			stageErr = errorf(http.StatusBadRequest, CodeUnrecognized, "auth type %q is not offered", auth.Type)
		} else if user, err := check(auth.Type, auth); err != nil {
			me, ok := err.(*Error)
			if !ok || me.Code == CodeLimitExceeded {
				// A rate limit is no failed stage: 429 with
				// retry_after_ms, as Synapse answers UIA over
				// rc_login.failed_attempts.
				return "", err
			}
			stageErr = me
		} else {
			u.mu.Lock()
			if !contains(sess.completed, auth.Type) {
				sess.completed = append(sess.completed, auth.Type)
			}
			if user != "" {
				sess.user = user
			}
			u.mu.Unlock()
		}
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, f := range flows {
		if flowDone(f, sess.completed) {
			delete(u.m, sess.id)
			return sess.user, nil
		}
	}
	body := map[string]any{"flows": flowList(flows), "params": params, "session": sess.id}
	if len(sess.completed) > 0 {
		body["completed"] = append([]string(nil), sess.completed...)
	}
	if stageErr != nil {
		body["errcode"], body["error"] = stageErr.Code, stageErr.Message
	}
	return "", &Error{Status: http.StatusUnauthorized, Code: "", Extra: body}
}

func stageOffered(flows [][]string, stage string) bool {
	for _, f := range flows {
		if contains(f, stage) {
			return true
		}
	}
	return false
}

func flowDone(flow, completed []string) bool {
	for _, st := range flow {
		if !contains(completed, st) {
			return false
		}
	}
	return true
}

func flowList(flows [][]string) []map[string][]string {
	out := make([]map[string][]string, len(flows))
	for i, f := range flows {
		out[i] = map[string][]string{"stages": f}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
