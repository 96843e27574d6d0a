package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
	"github.com/persistentchat/homeserver/sync"
	"golang.org/x/crypto/bcrypt"
)

// randomSource supplies the randomness for tokens and IDs (crypto/rand in
// production).
type randomSource = io.Reader

var errNoToken = errors.New("no access token")

// requestToken finds a request's access token: the Authorization header
// ("Bearer <token>"), else the access_token query parameter. present says
// whether the request carries either; a header in any other form gives
// token "" with present true.
//
// The query parameter is deprecated (spec v1.11) and MSC4127 removes it
// from the spec, but real clients still send it: matrix-nio and many bots
// built on it, older appservice bridges (?access_token=<as_token>), and
// media links embedded where no header can be set. Deprecated things stay
// supported here, so it is accepted on every authenticated route.
//
// When both are given the header wins. Synapse refuses that mix with
// M_MISSING_TOKEN ("Mixing Authorization headers and access_token query
// parameters"), which breaks bots that send the token both ways; the spec
// does not forbid it and prefers the header, so the header is used. The
// query parameter is not ignored, though (authenticate): it must be a
// valid token too, so that a request carrying a bad one fails loudly
// instead of acting for whoever the header names.
func requestToken(r *http.Request) (token string, present bool) {
	if h := r.Header.Get("Authorization"); h != "" {
		t, ok := strings.CutPrefix(h, "Bearer ")
		if !ok {
			return "", true
		}
		return t, true
	}
	q := r.URL.Query()
	if !q.Has("access_token") {
		return "", false
	}
	return q.Get("access_token"), true
}

// authenticate resolves a request's access token (requestToken) to its
// user and device, or to an application service acting as a user.
func (s *Server) authenticate(r *http.Request) (*Requester, error) {
	// Read before the token is looked up, so that a session ended after
	// the lookup is always seen by a long-poll (sync.SessionCheck).
	mark := s.sync.Notifier().SessionMark()
	token, present := requestToken(r)
	if !present {
		return nil, errNoToken
	}
	if token == "" {
		return nil, httpapi.Errorf(http.StatusUnauthorized, httpapi.CodeMissingToken, "access token must be given as 'Authorization: Bearer <token>' or as the access_token query parameter")
	}
	if err := s.checkQueryToken(r, token); err != nil {
		return nil, err
	}
	if reg := s.registry().ByASToken(token); reg != nil {
		return s.assertIdentity(r, reg)
	}
	hash := hashToken(token)
	owner, err := s.tokenOwner(r.Context(), hash)
	if err != nil {
		return nil, err
	}
	rq := &Requester{UserID: owner.UserID, DeviceID: owner.DeviceID, TokenHash: hash, sessionMark: mark, Locked: owner.Locked, Suspended: owner.Suspended}
	s.noteSeen(r, rq)
	return rq, nil
}

// tokenOwner looks up a user's access token: 401 M_UNKNOWN_TOKEN if it is
// unknown or has expired.
func (s *Server) tokenOwner(ctx context.Context, hash []byte) (storage.TokenOwner, error) {
	owner, err := s.store.TokenOwner(ctx, hash)
	if errors.Is(err, storage.ErrNotFound) {
		return owner, httpapi.Errorf(http.StatusUnauthorized, httpapi.CodeUnknownToken, "unknown access token")
	}
	if err != nil {
		return owner, err
	}
	if owner.ExpiresMS != 0 && s.clock.Now().UnixMilli() >= owner.ExpiresMS {
		e := httpapi.Errorf(http.StatusUnauthorized, httpapi.CodeUnknownToken, "access token has expired")
		e.Extra = map[string]any{"soft_logout": true}
		return owner, e
	}
	return owner, nil
}

// checkQueryToken: a request that has an Authorization header and also an
// access_token query parameter with another token is authenticated by the
// header (requestToken), but only if the query's token is valid as well,
// a user's or an application service's; else 401 M_UNKNOWN_TOKEN.
func (s *Server) checkQueryToken(r *http.Request, header string) error {
	if r.Header.Get("Authorization") == "" || !r.URL.Query().Has("access_token") {
		return nil
	}
	q := r.URL.Query().Get("access_token")
	if q == header || s.registry().ByASToken(q) != nil {
		return nil
	}
	if _, err := s.tokenOwner(r.Context(), hashToken(q)); err != nil {
		var me *httpapi.Error
		if errors.As(err, &me) {
			return httpapi.Errorf(http.StatusUnauthorized, httpapi.CodeUnknownToken,
				"the access_token query parameter is not a valid access token (with an Authorization header too, both must be valid; the header's is used)")
		}
		return err
	}
	return nil
}

// sessionCheck lets a long-poll made by rq end when rq's session does
// (sync.SessionCheck); nil for an application service's as_token, which
// no logout ends.
func (s *Server) sessionCheck(rq *Requester) *sync.SessionCheck {
	if rq.AppService != nil || rq.TokenHash == nil {
		return nil
	}
	return &sync.SessionCheck{Mark: rq.sessionMark, Alive: func(ctx context.Context) (bool, error) {
		if _, err := s.store.TokenOwner(ctx, rq.TokenHash); err == nil {
			return true, nil
		} else if !errors.Is(err, storage.ErrNotFound) {
			return false, err
		}
		// /refresh replaces the access token but the session (the device)
		// goes on: a poll made with the old token is not a logged-out one,
		// and answering it 401 would log a refreshing client out.
		devs, err := s.store.Devices(ctx, rq.UserID)
		if err != nil {
			return false, err
		}
		for _, d := range devs {
			if d.DeviceID == rq.DeviceID {
				return true, nil
			}
		}
		return false, nil
	}}
}

// endSessions deletes devices with their tokens and pushers (the
// arguments of Store.DeleteDevices) and ends the long-polls made with
// them, which answer 401 M_UNKNOWN_TOKEN at once instead of anything that
// happens after.
func (s *Server) endSessions(ctx context.Context, user roomdag.UserID, devices []string, keep string) error {
	committed := s.sync.Notifier().EndSessions(user)
	err := s.store.DeleteDevices(ctx, user, devices, keep)
	committed()
	if err != nil {
		return err
	}
	// Their pushers went with them: delivery stops now rather than at the
	// loops' next read of their pusher.
	return s.pushersChanged(ctx, user)
}

// hashToken: tokens are 256-bit random values, so SHA-256 is enough to make
// a stolen database useless without slowing every request down.
func hashToken(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// newToken makes an access or refresh token with a readable prefix.
func (s *Server) newToken(prefix string) (string, error) {
	b := make([]byte, 32)
	if _, err := io.ReadFull(s.random, b); err != nil {
		return "", err
	}
	return prefix + base64.RawURLEncoding.EncodeToString(b), nil
}

const idAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

// newID makes an n-letter identifier (device IDs, session IDs).
func (s *Server) newID(n int) string {
	b := make([]byte, n)
	if _, err := io.ReadFull(s.random, b); err != nil {
		panic("random source failed: " + err.Error())
	}
	for i := range b {
		b[i] = idAlphabet[int(b[i])%len(idAlphabet)]
	}
	return string(b)
}

func (s *Server) hashPassword(pw string) (string, error) {
	return HashPassword(pw, s.cfg.BcryptCost)
}

// HashPassword hashes a password with bcrypt at the given cost.
func HashPassword(pw string, cost int) (string, error) {
	h, err := bcrypt.GenerateFromPassword(bcryptInput(pw), cost)
	return string(h), err
}

// checkPassword compares a password with its bcrypt hash, and counts the
// comparison (PasswordChecks).
func (s *Server) checkPassword(hash, pw string) bool {
	s.passwordChecks.Add(1)
	return hash != "" && bcrypt.CompareHashAndPassword([]byte(hash), bcryptInput(pw)) == nil
}

// PasswordChecks is how many passwords the server has compared with a
// hash since it started (each costs bcrypt's time): tests check that
// refused login attempts cost none.
func (s *Server) PasswordChecks() uint64 { return s.passwordChecks.Load() }

// bcryptInput: bcrypt reads at most 72 bytes, so longer passwords are
// pre-hashed (as passlib's bcrypt_sha256 does) instead of truncated. Shorter
// ones are used as they are, which keeps hashes imported from Synapse valid.
func bcryptInput(pw string) []byte {
	if len(pw) <= 72 {
		return []byte(pw)
	}
	h := sha256.Sum256([]byte(pw))
	return []byte(base64.StdEncoding.EncodeToString(h[:]))
}

// validToken compares a registration token with each configured one in
// constant time.
func validToken(tokens []string, t string) bool {
	ok := false
	for _, want := range tokens {
		ok = subtle.ConstantTimeCompare([]byte(want), []byte(t)) == 1 || ok
	}
	return ok
}

// dummyHash is a hash of a random password at the configured cost, made
// once, for timing-safe failed logins.
func (s *Server) dummyHash() string {
	s.dummyOnce.Do(func() {
		h, err := HashPassword(s.newID(16), s.cfg.BcryptCost)
		if err == nil {
			s.dummy = h
		}
	})
	return s.dummy
}

// seenEvery throttles last-seen writes: once per device per interval.
const seenEvery = 5 * time.Minute

// noteSeen records a device's last use, at most once per seenEvery, off the
// request path.
func (s *Server) noteSeen(r *http.Request, rq *Requester) {
	now := s.clock.Now()
	key := string(rq.UserID) + "|" + rq.DeviceID
	if last, ok := s.seen.Load(key); ok && now.Sub(last.(time.Time)) < seenEvery {
		return
	}
	s.seen.Store(key, now)
	ip := r.RemoteAddr
	if host, _, err := net.SplitHostPort(ip); err == nil {
		ip = host
	}
	go func() {
		if err := s.store.SeenDevice(context.Background(), rq.UserID, rq.DeviceID, ip, now.UnixMilli()); err != nil {
			s.log.Warn("recording device last seen", "err", err)
		}
	}()
}

// PasswordPolicy is what new passwords must satisfy (configs.PasswordPolicy
// documents each field; Synapse's password_config.policy).
type PasswordPolicy struct {
	Enabled                                                         bool
	MinimumLength                                                   int
	RequireDigit, RequireSymbol, RequireLowercase, RequireUppercase bool
}

// maxPasswordLength bounds every password, policy or not (Synapse's limit).
const maxPasswordLength = 512

// checkPasswordStrength applies the policy to a new, non-empty password:
// 400 with the code of the first check it fails, in Synapse's order
// (length, digit, symbol, upper case, lower case). Lengths count
// characters (code points), as Synapse does.
func (s *Server) checkPasswordStrength(pw string) error {
	n := utf8.RuneCountInString(pw)
	if n > maxPasswordLength {
		return httpapi.InvalidParam("password is too long: at most %d characters", maxPasswordLength)
	}
	p := s.cfg.PasswordPolicy
	if !p.Enabled {
		return nil
	}
	refuse := func(code, format string, a ...any) error {
		return httpapi.Errorf(http.StatusBadRequest, code, format, a...)
	}
	has := func(in func(rune) bool) bool { return strings.IndexFunc(pw, in) >= 0 }
	isDigit := func(c rune) bool { return c >= '0' && c <= '9' }
	isLower := func(c rune) bool { return c >= 'a' && c <= 'z' }
	isUpper := func(c rune) bool { return c >= 'A' && c <= 'Z' }
	switch {
	case n < p.MinimumLength:
		return refuse(httpapi.CodePasswordTooShort, "password must be at least %d characters long", p.MinimumLength)
	case p.RequireDigit && !has(isDigit):
		return refuse(httpapi.CodePasswordNoDigit, "password must include at least one digit")
	case p.RequireSymbol && !has(func(c rune) bool { return !isDigit(c) && !isLower(c) && !isUpper(c) }):
		return refuse(httpapi.CodePasswordNoSymbol, "password must include at least one symbol")
	case p.RequireUppercase && !has(isUpper):
		return refuse(httpapi.CodePasswordNoUppercase, "password must include at least one upper-case letter")
	case p.RequireLowercase && !has(isLower):
		return refuse(httpapi.CodePasswordNoLowercase, "password must include at least one lower-case letter")
	}
	return nil
}
