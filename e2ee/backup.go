package e2ee

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/persistentchat/homeserver/api"
	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// Server-side key backups (spec: client-server API, "Server-side key
// backups"): a user's Megolm sessions, encrypted by the client, in
// numbered versions of which the newest takes writes. The server reads
// only the three fields that decide which copy of a session to keep.

// CodeWrongRoomKeysVersion refuses a write to a backup version that is
// not the newest; the body names the newest in current_version.
const CodeWrongRoomKeysVersion = "M_WRONG_ROOM_KEYS_VERSION"

// BackupStore keeps backup versions and their sessions
// (storage/sqlstore/backup.go documents each method).
type BackupStore interface {
	CreateBackup(ctx context.Context, user roomdag.UserID, algorithm string, authData json.RawMessage) (int64, error)
	Backup(ctx context.Context, user roomdag.UserID, version int64) (*storage.BackupVersion, error)
	UpdateBackupAuth(ctx context.Context, user roomdag.UserID, version int64, authData json.RawMessage) error
	DeleteBackup(ctx context.Context, user roomdag.UserID, version int64) error
	PutBackupSessions(ctx context.Context, user roomdag.UserID, version int64, sessions []storage.BackupSession,
		replaces func(old, new *storage.BackupSession) bool) (*storage.BackupVersion, error)
	BackupSessions(ctx context.Context, user roomdag.UserID, version int64, room roomdag.RoomID, session string) ([]storage.BackupSession, error)
	DeleteBackupSessions(ctx context.Context, user roomdag.UserID, version int64, room roomdag.RoomID, session string) (*storage.BackupVersion, error)
}

// KeyBackup serves /room_keys.
type KeyBackup struct {
	store BackupStore
}

// NewKeyBackup makes the endpoints.
func NewKeyBackup(store BackupStore) *KeyBackup { return &KeyBackup{store: store} }

const roomKeys = "/_matrix/client/v3/room_keys"

// Routes are the key backup endpoints, for api.Config.Routes.
func (b *KeyBackup) Routes() []api.Route {
	return []api.Route{
		{Method: "POST", Path: roomKeys + "/version", Handler: b.createVersion},
		{Method: "GET", Path: roomKeys + "/version", Handler: b.getVersion},
		{Method: "GET", Path: roomKeys + "/version/{version}", Handler: b.getVersion},
		{Method: "PUT", Path: roomKeys + "/version/{version}", Handler: b.putVersion},
		{Method: "DELETE", Path: roomKeys + "/version/{version}", Handler: b.deleteVersion},
		{Method: "PUT", Path: roomKeys + "/keys", Handler: b.putKeys},
		{Method: "PUT", Path: roomKeys + "/keys/{roomId}", Handler: b.putKeys},
		{Method: "PUT", Path: roomKeys + "/keys/{roomId}/{sessionId}", Handler: b.putKeys},
		{Method: "GET", Path: roomKeys + "/keys", Handler: b.getKeys},
		{Method: "GET", Path: roomKeys + "/keys/{roomId}", Handler: b.getKeys},
		{Method: "GET", Path: roomKeys + "/keys/{roomId}/{sessionId}", Handler: b.getKeys},
		{Method: "DELETE", Path: roomKeys + "/keys", Handler: b.deleteKeys},
		{Method: "DELETE", Path: roomKeys + "/keys/{roomId}", Handler: b.deleteKeys},
		{Method: "DELETE", Path: roomKeys + "/keys/{roomId}/{sessionId}", Handler: b.deleteKeys},
	}
}

// Replaces is the spec's rule for which copy of a backed-up session is
// kept ("Server-side key backups", storing keys): a verified session
// replaces an unverified one; between equally verified ones, the one with
// the lower first_message_index (it decrypts more), and at equal
// indexes, the one with the lower forwarded_count. Otherwise the stored
// copy stays.
func Replaces(old, new *storage.BackupSession) bool {
	if old.IsVerified != new.IsVerified {
		return new.IsVerified
	}
	if old.FirstMessageIndex != new.FirstMessageIndex {
		return new.FirstMessageIndex < old.FirstMessageIndex
	}
	return new.ForwardedCount < old.ForwardedCount
}

func caller(r *http.Request) (roomdag.UserID, error) {
	user, _, ok := api.Caller(r)
	if !ok {
		return "", httpapi.Errorf(http.StatusUnauthorized, httpapi.CodeMissingToken, "missing access token")
	}
	return user, nil
}

type versionBody struct {
	Algorithm string          `json:"algorithm"`
	AuthData  json.RawMessage `json:"auth_data"`
	Version   *string         `json:"version"`
}

func (v *versionBody) check() error {
	if v.Algorithm == "" {
		return httpapi.MissingParam("algorithm is required")
	}
	if len(v.AuthData) == 0 || v.AuthData[0] != '{' {
		return httpapi.MissingParam("auth_data is required and must be an object")
	}
	return nil
}

func (b *KeyBackup) createVersion(r *http.Request) (any, error) {
	user, err := caller(r)
	if err != nil {
		return nil, err
	}
	var req versionBody
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if err := req.check(); err != nil {
		return nil, err
	}
	v, err := b.store.CreateBackup(r.Context(), user, req.Algorithm, req.AuthData)
	if err != nil {
		return nil, err
	}
	return map[string]string{"version": strconv.FormatInt(v, 10)}, nil
}

// errNoBackup is 404 for a version that does not exist (or no backup).
func errNoBackup() error { return httpapi.NotFound("no such backup version") }

// pathVersion is the {version} of a path; a version that cannot be one of
// ours is as unknown as a deleted one.
func pathVersion(s string) (int64, error) {
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v <= 0 {
		return 0, errNoBackup()
	}
	return v, nil
}

func (b *KeyBackup) getVersion(r *http.Request) (any, error) {
	user, err := caller(r)
	if err != nil {
		return nil, err
	}
	var v int64
	if s := httpapi.PathParam(r, "version"); s != "" {
		if v, err = pathVersion(s); err != nil {
			return nil, err
		}
	}
	bv, err := b.store.Backup(r.Context(), user, v)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, errNoBackup()
	}
	if err != nil {
		return nil, err
	}
	return map[string]any{"algorithm": bv.Algorithm, "auth_data": bv.AuthData, "count": bv.Count,
		"etag": strconv.FormatInt(bv.ETag, 10), "version": strconv.FormatInt(bv.Version, 10)}, nil
}

// putVersion updates a version's auth_data; its algorithm cannot change.
func (b *KeyBackup) putVersion(r *http.Request) (any, error) {
	user, err := caller(r)
	if err != nil {
		return nil, err
	}
	var req versionBody
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if err := req.check(); err != nil {
		return nil, err
	}
	s := httpapi.PathParam(r, "version")
	if req.Version != nil && *req.Version != s {
		return nil, httpapi.InvalidParam("the version in the body is not the version of the path")
	}
	v, err := pathVersion(s)
	if err != nil {
		return nil, err
	}
	bv, err := b.store.Backup(r.Context(), user, v)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, errNoBackup()
	}
	if err != nil {
		return nil, err
	}
	if bv.Algorithm != req.Algorithm {
		return nil, httpapi.InvalidParam("a backup version's algorithm cannot change (it is %s)", bv.Algorithm)
	}
	if err := b.store.UpdateBackupAuth(r.Context(), user, v, req.AuthData); errors.Is(err, storage.ErrNotFound) {
		return nil, errNoBackup()
	} else if err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

func (b *KeyBackup) deleteVersion(r *http.Request) (any, error) {
	user, err := caller(r)
	if err != nil {
		return nil, err
	}
	v, err := pathVersion(httpapi.PathParam(r, "version"))
	if err != nil {
		return nil, err
	}
	if err := b.store.DeleteBackup(r.Context(), user, v); errors.Is(err, storage.ErrNotFound) {
		return nil, errNoBackup()
	} else if err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// sessionBody is KeyBackupData.
type sessionBody struct {
	FirstMessageIndex *int64          `json:"first_message_index"`
	ForwardedCount    *int64          `json:"forwarded_count"`
	IsVerified        *bool           `json:"is_verified"`
	SessionData       json.RawMessage `json:"session_data"`
}

func (s *sessionBody) session(room roomdag.RoomID, id string) (storage.BackupSession, error) {
	if s.FirstMessageIndex == nil || s.ForwardedCount == nil || s.IsVerified == nil || len(s.SessionData) == 0 {
		return storage.BackupSession{}, httpapi.MissingParam("key backup data needs first_message_index, forwarded_count, is_verified and session_data")
	}
	if s.SessionData[0] != '{' {
		return storage.BackupSession{}, httpapi.BadJSON("session_data must be an object")
	}
	if *s.FirstMessageIndex < 0 || *s.ForwardedCount < 0 {
		return storage.BackupSession{}, httpapi.InvalidParam("first_message_index and forwarded_count cannot be negative")
	}
	return storage.BackupSession{Room: room, Session: id, FirstMessageIndex: *s.FirstMessageIndex,
		ForwardedCount: *s.ForwardedCount, IsVerified: *s.IsVerified, SessionData: s.SessionData}, nil
}

func (s storageSession) body() map[string]any {
	return map[string]any{"first_message_index": s.FirstMessageIndex, "forwarded_count": s.ForwardedCount,
		"is_verified": s.IsVerified, "session_data": s.SessionData}
}

type storageSession storage.BackupSession

type roomBody struct {
	Sessions map[string]sessionBody `json:"sessions"`
}

// queryVersion is the ?version= every /room_keys/keys request carries.
func queryVersion(r *http.Request) (int64, error) {
	s := r.URL.Query().Get("version")
	if s == "" {
		return 0, httpapi.MissingParam("the version query parameter is required")
	}
	return pathVersion(s)
}

// target is the room and session of a /room_keys/keys path, both "" for
// all rooms; a room ID is checked, a session ID is opaque.
func target(r *http.Request) (roomdag.RoomID, string, error) {
	room, session := httpapi.PathParam(r, "roomId"), httpapi.PathParam(r, "sessionId")
	if room == "" {
		return "", "", nil
	}
	id, err := roomdag.ParseRoomID(room)
	if err != nil {
		return "", "", httpapi.InvalidParam("not a room ID: %q", room)
	}
	return id, session, nil
}

func counts(bv *storage.BackupVersion) map[string]any {
	return map[string]any{"etag": strconv.FormatInt(bv.ETag, 10), "count": bv.Count}
}

// putKeys stores sessions in the newest version: of all rooms, one room
// or one session, as the path says.
func (b *KeyBackup) putKeys(r *http.Request) (any, error) {
	user, err := caller(r)
	if err != nil {
		return nil, err
	}
	room, session, err := target(r)
	if err != nil {
		return nil, err
	}
	var sessions []storage.BackupSession
	add := func(room roomdag.RoomID, rb roomBody) error {
		for id, sb := range rb.Sessions {
			s, err := sb.session(room, id)
			if err != nil {
				return err
			}
			sessions = append(sessions, s)
		}
		return nil
	}
	switch {
	case room == "":
		var req struct {
			Rooms map[string]roomBody `json:"rooms"`
		}
		if err := httpapi.DecodeJSON(r, &req); err != nil {
			return nil, err
		}
		if req.Rooms == nil {
			return nil, httpapi.MissingParam("rooms is required")
		}
		for rs, rb := range req.Rooms {
			id, err := roomdag.ParseRoomID(rs)
			if err != nil {
				return nil, httpapi.InvalidParam("not a room ID: %q", rs)
			}
			if err := add(id, rb); err != nil {
				return nil, err
			}
		}
	case session == "":
		var req roomBody
		if err := httpapi.DecodeJSON(r, &req); err != nil {
			return nil, err
		}
		if req.Sessions == nil {
			return nil, httpapi.MissingParam("sessions is required")
		}
		if err := add(room, req); err != nil {
			return nil, err
		}
	default:
		var req sessionBody
		if err := httpapi.DecodeJSON(r, &req); err != nil {
			return nil, err
		}
		s, err := req.session(room, session)
		if err != nil {
			return nil, err
		}
		sessions = append(sessions, s)
	}
	v, err := queryVersion(r)
	var wrong *storage.WrongBackupVersion
	if err != nil {
		// Not a version of ours: the newest is named all the same, if
		// there is one.
		cur, cerr := b.store.Backup(r.Context(), user, 0)
		if cerr == nil && r.URL.Query().Get("version") != "" {
			return nil, wrongVersion(cur.Version)
		}
		return nil, err
	}
	bv, err := b.store.PutBackupSessions(r.Context(), user, v, sessions, Replaces)
	switch {
	case errors.As(err, &wrong):
		return nil, wrongVersion(wrong.Current)
	case errors.Is(err, storage.ErrNotFound):
		return nil, errNoBackup()
	case err != nil:
		return nil, err
	}
	return counts(bv), nil
}

func wrongVersion(current int64) error {
	return &httpapi.Error{Status: http.StatusForbidden, Code: CodeWrongRoomKeysVersion,
		Message: "this is not the current backup version", Extra: map[string]any{"current_version": strconv.FormatInt(current, 10)}}
}

func (b *KeyBackup) getKeys(r *http.Request) (any, error) {
	user, err := caller(r)
	if err != nil {
		return nil, err
	}
	room, session, err := target(r)
	if err != nil {
		return nil, err
	}
	v, err := queryVersion(r)
	if err != nil {
		return nil, err
	}
	got, err := b.store.BackupSessions(r.Context(), user, v, room, session)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, errNoBackup()
	}
	if err != nil {
		return nil, err
	}
	switch {
	case room == "":
		rooms := map[roomdag.RoomID]map[string]map[string]any{}
		for _, s := range got {
			if rooms[s.Room] == nil {
				rooms[s.Room] = map[string]map[string]any{}
			}
			rooms[s.Room][s.Session] = storageSession(s).body()
		}
		out := map[string]any{}
		for id, ss := range rooms {
			out[string(id)] = map[string]any{"sessions": ss}
		}
		return map[string]any{"rooms": out}, nil
	case session == "":
		ss := map[string]any{}
		for _, s := range got {
			ss[s.Session] = storageSession(s).body()
		}
		return map[string]any{"sessions": ss}, nil
	default:
		if len(got) == 0 {
			return nil, httpapi.NotFound("no such session in this backup")
		}
		return storageSession(got[0]).body(), nil
	}
}

func (b *KeyBackup) deleteKeys(r *http.Request) (any, error) {
	user, err := caller(r)
	if err != nil {
		return nil, err
	}
	room, session, err := target(r)
	if err != nil {
		return nil, err
	}
	v, err := queryVersion(r)
	if err != nil {
		return nil, err
	}
	bv, err := b.store.DeleteBackupSessions(r.Context(), user, v, room, session)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, errNoBackup()
	}
	if err != nil {
		return nil, err
	}
	return counts(bv), nil
}
