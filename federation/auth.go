package federation

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"net/http"
	"strings"

	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/roomdag"
)

// RequestKeys gives the key with which a server signs requests now
// (Keyring.RequestKey).
type RequestKeys interface {
	RequestKey(ctx context.Context, server roomdag.ServerName, keyID string) (ed25519.PublicKey, error)
}

// Authenticator checks the X-Matrix signature of inbound federation
// requests (server-server API, "Request Authentication"): every
// federation endpoint except the key and version ones goes through it.
type Authenticator struct {
	server  roomdag.ServerName
	keys    RequestKeys
	maxBody int64
}

// NewAuthenticator authenticates requests to server with keys. Bodies
// longer than maxBody bytes are refused with M_TOO_LARGE.
func NewAuthenticator(server roomdag.ServerName, keys RequestKeys, maxBody int64) *Authenticator {
	return &Authenticator{server: server, keys: keys, maxBody: maxBody}
}

type originKey struct{}

// Origin is the server that signed the request, set by the Authenticator;
// "" outside an authenticated request.
func Origin(ctx context.Context) roomdag.ServerName {
	o, _ := ctx.Value(originKey{}).(roomdag.ServerName)
	return o
}

// Wrap authenticates the request before h sees it: h runs only for a
// request signed by its origin, with the origin in the context (Origin)
// and the body, already read, readable again.
//
// Answers: no X-Matrix header, a malformed one, a destination other than
// this server, a key the origin does not publish (or no longer uses for
// requests) and a signature that does not verify are 401 M_UNAUTHORIZED; a
// body that is not JSON is 400 M_NOT_JSON and one that is not an object
// 400 M_BAD_JSON (the signature covers the parsed body, so it cannot be
// checked on one that does not parse).
func (a *Authenticator) Wrap(h httpapi.Func) httpapi.Func {
	return func(r *http.Request) (any, error) {
		origin, body, err := a.authenticate(r)
		if err != nil {
			return nil, err
		}
		r = r.WithContext(context.WithValue(r.Context(), originKey{}, origin))
		r.Body = readCloser{bytes.NewReader(body)}
		return h(r)
	}
}

type readCloser struct{ *bytes.Reader }

func (readCloser) Close() error { return nil }

func (a *Authenticator) authenticate(r *http.Request) (roomdag.ServerName, []byte, error) {
	var x XMatrix
	var perr error
	found := false
	// A request may carry several Authorization headers; the first with
	// the X-Matrix scheme is the one checked, as the spec's example
	// sender sends exactly one.
	for _, h := range r.Header.Values("Authorization") {
		if scheme, _, _ := strings.Cut(h, " "); strings.EqualFold(scheme, "X-Matrix") {
			x, perr = ParseXMatrix(h)
			found = true
			break
		}
	}
	if !found {
		return "", nil, httpapi.Unauthorized("missing X-Matrix authorization")
	}
	if perr != nil {
		return "", nil, httpapi.Unauthorized("%v", perr)
	}
	// "If this property is included, but the value does not match the
	// receiving server's name, the receiving server must deny the request
	// with an HTTP status code 401 Unauthorized."
	if x.Destination != "" && x.Destination != a.server {
		return "", nil, httpapi.Unauthorized("request is for %s, not this server", x.Destination)
	}
	var body []byte
	if r.Body != nil {
		r.Body = http.MaxBytesReader(nil, r.Body, a.maxBody)
		b, err := httpapi.ReadBody(r)
		if err != nil {
			return "", nil, err
		}
		body = b
	}
	content := bytes.TrimSpace(body)
	if len(content) > 0 {
		if _, err := httpapi.CheckObject(content); err != nil {
			return "", nil, err
		}
	}
	pub, err := a.keys.RequestKey(r.Context(), x.Origin, x.Key)
	if errors.Is(err, ErrUnknownKey) {
		return "", nil, httpapi.Unauthorized("%v", err)
	}
	if err != nil {
		return "", nil, err
	}
	if err := VerifyRequest(x, pub, a.server, r.Method, requestTarget(r), content); err != nil {
		if errors.Is(err, roomdag.ErrCanonicalJSON) {
			return "", nil, httpapi.BadJSON("request body: %v", err)
		}
		return "", nil, httpapi.Unauthorized("%v", err)
	}
	return x.Origin, body, nil
}

// requestTarget is the URI the sender signed: the path from /_matrix with
// its query, as it was sent (origin-form, RFC 9112 section 3.2.1).
func requestTarget(r *http.Request) string {
	if strings.HasPrefix(r.RequestURI, "/") {
		return r.RequestURI
	}
	return r.URL.RequestURI() // absolute-form, or a request built in a test
}
