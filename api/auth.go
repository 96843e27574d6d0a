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

	"golang.org/x/crypto/bcrypt"

	"github.com/persistentchat/homeserver/storage"
)

// randomSource supplies the randomness for tokens and IDs (crypto/rand in
// production).
type randomSource = io.Reader

var errNoToken = errors.New("no access token")

// authenticate finds the access token (Authorization: Bearer only; query
// string tokens were deprecated in v1.11 and removed by MSC4127).
func (s *Server) authenticate(r *http.Request) (*Requester, error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		if r.URL.Query().Has("access_token") {
			return nil, errorf(http.StatusUnauthorized, CodeMissingToken, "access tokens are accepted only in the Authorization header")
		}
		return nil, errNoToken
	}
	token, ok := strings.CutPrefix(h, "Bearer ")
	if !ok || token == "" {
		return nil, errorf(http.StatusUnauthorized, CodeMissingToken, "Authorization header must be 'Bearer <token>'")
	}
	if reg := s.registry().ByASToken(token); reg != nil {
		return s.assertIdentity(r, reg)
	}
	hash := hashToken(token)
	owner, err := s.store.TokenOwner(r.Context(), hash)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, errorf(http.StatusUnauthorized, CodeUnknownToken, "unknown access token")
	}
	if err != nil {
		return nil, err
	}
	if owner.ExpiresMS != 0 && s.clock.Now().UnixMilli() >= owner.ExpiresMS {
		e := errorf(http.StatusUnauthorized, CodeUnknownToken, "access token has expired")
		e.Extra = map[string]any{"soft_logout": true}
		return nil, e
	}
	rq := &Requester{UserID: owner.UserID, DeviceID: owner.DeviceID, TokenHash: hash, Locked: owner.Locked, Suspended: owner.Suspended}
	s.noteSeen(r, rq)
	return rq, nil
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

func checkPassword(hash, pw string) bool {
	return hash != "" && bcrypt.CompareHashAndPassword([]byte(hash), bcryptInput(pw)) == nil
}

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

// minPasswordLength: anything shorter is refused with M_WEAK_PASSWORD.
const minPasswordLength = 8

func checkPasswordStrength(pw string) error {
	if len(pw) < minPasswordLength {
		return errorf(http.StatusBadRequest, CodeWeakPassword, "password must be at least %d characters", minPasswordLength)
	}
	if len(pw) > 512 {
		return errorf(http.StatusBadRequest, CodeInvalidParam, "password is too long")
	}
	return nil
}
