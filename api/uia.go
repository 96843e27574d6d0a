package api

import (
	"context"
	"encoding/json"
	"errors"
	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
	"net/http"
	"slices"
	"time"
)

// User-interactive authentication (spec: client-server API, "User-Interactive
// Authentication API"). Sessions are rows of the database, not of one
// process's memory: behind a load balancer each request of a flow may
// reach another process serving the client API on the same database. A
// flow that completes in the request that begins it (registration with
// m.login.dummy and no session yet) stores nothing.

// uiaSessionLifetime is how long a session lasts after it was begun or a
// stage of it was last completed.
const uiaSessionLifetime = 15 * time.Minute

// Stage types.
const (
	stageDummy             = "m.login.dummy"
	stagePassword          = "m.login.password"
	stageRegistrationToken = "m.login.registration_token"
)

// uiaStore is the part of Store that keeps sessions
// (storage/sqlstore/uia.go documents).
type uiaStore interface {
	PutUIASession(ctx context.Context, s storage.UIASession, nowMS int64) error
	UIASession(ctx context.Context, id string, nowMS int64) (*storage.UIASession, error)
	CompleteUIAStage(ctx context.Context, id, stage string, user roomdag.UserID, expiresMS, nowMS int64) (*storage.UIASession, error)
	DeleteUIASession(ctx context.Context, id string, nowMS int64) (bool, error)
}

type uiaSessions struct {
	clock clock.Clock
	store uiaStore
}

func newUIASessions(clk clock.Clock, store uiaStore) *uiaSessions {
	return &uiaSessions{clock: clk, store: store}
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

// errUnknownSession answers a session that is not (or no longer) stored:
// never begun, expired, or completed by another request.
func errUnknownSession() error {
	return httpapi.Errorf(http.StatusBadRequest, httpapi.CodeUnknown, "unknown or expired user-interactive auth session")
}

// require runs user-interactive auth for a request. Once a whole flow is
// complete it forgets the session and returns the account the flow proved
// ("" if none of its stages proves one) and a nil error; otherwise the
// 401 response to send, or the error of a failed stage. A session is
// bound to the request (method and path) that began it, and authorises
// one request: of requests that complete it at once, on any processes,
// one succeeds and the others are told the session is unknown.
//
// Callers parse and check the request body before calling it, so that a
// malformed body is answered 400 (M_NOT_JSON, M_BAD_JSON) rather than
// with a challenge: the spec asks registration for exactly that, and
// Complement's "POST rejects invalid utf-8 in JSON" checks it.
func (u *uiaSessions) require(r *http.Request, auth *uiaAuth, flows [][]string, params map[string]any, newID func() string, check stageCheck) (roomdag.UserID, error) {
	ctx := r.Context()
	now := u.clock.Now()
	nowMS, expiresMS := now.UnixMilli(), now.Add(uiaSessionLifetime).UnixMilli()
	endpoint := r.Method + " " + r.URL.Path
	var sess *storage.UIASession
	stored := auth != nil && auth.Session != ""
	if stored {
		s, err := u.store.UIASession(ctx, auth.Session, nowMS)
		if errors.Is(err, storage.ErrNotFound) {
			return "", errUnknownSession()
		}
		if err != nil {
			return "", err
		}
		if s.Endpoint != endpoint {
			return "", httpapi.Forbidden("this auth session belongs to another request")
		}
		sess = s
	} else {
		sess = &storage.UIASession{ID: newID(), Endpoint: endpoint}
	}

	var stageErr *httpapi.Error
	if auth != nil && auth.Type != "" {
		if !stageOffered(flows, auth.Type) {
			stageErr = httpapi.Errorf(http.StatusBadRequest, httpapi.CodeUnrecognized, "auth type %q is not offered", auth.Type)
		} else if user, err := check(auth.Type, auth); err != nil {
			me, ok := err.(*httpapi.Error)
			if !ok || me.Code == httpapi.CodeLimitExceeded {
				// A rate limit is no failed stage: 429 with
				// retry_after_ms, as Synapse answers UIA over
				// rc_login.failed_attempts.
				return "", err
			}
			stageErr = me
		} else {
			completed := sess.Completed
			if !contains(completed, auth.Type) {
				completed = append(slices.Clip(completed), auth.Type)
			}
			if stored && !anyFlowDone(flows, completed) {
				// Merged in the database with stages that other
				// requests complete meanwhile.
				s, err := u.store.CompleteUIAStage(ctx, sess.ID, auth.Type, user, expiresMS, nowMS)
				if errors.Is(err, storage.ErrNotFound) {
					return "", errUnknownSession()
				}
				if err != nil {
					return "", err
				}
				sess = s
			} else {
				sess.Completed = completed
				if user != "" {
					sess.User = user
				}
			}
		}
	}
	if anyFlowDone(flows, sess.Completed) {
		if stored {
			ok, err := u.store.DeleteUIASession(ctx, sess.ID, nowMS)
			if err != nil {
				return "", err
			}
			if !ok {
				return "", errUnknownSession()
			}
		}
		return sess.User, nil
	}
	if !stored {
		// Committed before the 401 that names it is sent.
		sess.ExpiresMS = expiresMS
		if err := u.store.PutUIASession(ctx, *sess, nowMS); err != nil {
			return "", err
		}
	}
	body := map[string]any{"flows": flowList(flows), "params": params, "session": sess.ID}
	if len(sess.Completed) > 0 {
		body["completed"] = append([]string(nil), sess.Completed...)
	}
	if stageErr != nil {
		body["errcode"], body["error"] = stageErr.Code, stageErr.Message
	}
	return "", &httpapi.Error{Status: http.StatusUnauthorized, Code: "", Extra: body}
}

// putNonce stores a shared-secret registration nonce
// (/_synapse/admin/v1/register), for uiaSessionLifetime. Nonces share the
// sessions' table under IDs of their own ("nonce:" and the nonce) and an
// endpoint no request has, so neither can stand for the other.
func (u *uiaSessions) putNonce(ctx context.Context, nonce string) error {
	now := u.clock.Now()
	return u.store.PutUIASession(ctx, storage.UIASession{ID: "nonce:" + nonce, Endpoint: nonceEndpoint,
		Completed: []string{}, ExpiresMS: now.Add(uiaSessionLifetime).UnixMilli()}, now.UnixMilli())
}

// takeNonce forgets a nonce and reports whether it was issued and
// unexpired: a nonce serves one registration.
func (u *uiaSessions) takeNonce(ctx context.Context, nonce string) (bool, error) {
	return u.store.DeleteUIASession(ctx, "nonce:"+nonce, u.clock.Now().UnixMilli())
}

// nonceEndpoint is the endpoint of stored nonces: no request's method and
// path.
const nonceEndpoint = "nonce"

func anyFlowDone(flows [][]string, completed []string) bool {
	for _, f := range flows {
		if flowDone(f, completed) {
			return true
		}
	}
	return false
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
