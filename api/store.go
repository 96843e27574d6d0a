package api

import (
	"context"
	"encoding/json"

	"github.com/persistentchat/homeserver/media"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
	"github.com/persistentchat/homeserver/sync"
)

// Store is what the client-server API reads and writes beyond the room
// write path. It includes what sync reads, for history visibility checks.
type Store interface {
	sync.Store

	CreateUser(ctx context.Context, u storage.User, createdMS int64) error
	User(ctx context.Context, id roomdag.UserID) (*storage.User, error)
	SetPasswordHash(ctx context.Context, id roomdag.UserID, hash string) error
	SetProfile(ctx context.Context, id roomdag.UserID, displayName, avatarURL *string) error

	CreateSession(ctx context.Context, s storage.Session) error
	TokenOwner(ctx context.Context, hash []byte) (storage.TokenOwner, error)
	Refresh(ctx context.Context, oldRefresh []byte, next storage.Session) (roomdag.UserID, string, error)
	DeleteDevices(ctx context.Context, user roomdag.UserID, devices []string, keep string) error
	Devices(ctx context.Context, user roomdag.UserID) ([]storage.Device, error)
	SetDeviceName(ctx context.Context, user roomdag.UserID, device, name string) error
	SeenDevice(ctx context.Context, user roomdag.UserID, device, ip string, ms int64) error

	PutAccountData(ctx context.Context, user roomdag.UserID, room roomdag.RoomID, typ string, content json.RawMessage) (int64, error)
	AccountData(ctx context.Context, user roomdag.UserID, room roomdag.RoomID, typ string) (json.RawMessage, error)
	PutFilter(ctx context.Context, user roomdag.UserID, filter json.RawMessage) (int64, error)
	Filter(ctx context.Context, user roomdag.UserID, id int64) (json.RawMessage, error)

	PutAlias(ctx context.Context, alias roomdag.RoomAlias, room roomdag.RoomID, creator roomdag.UserID) error
	Alias(ctx context.Context, alias roomdag.RoomAlias) (roomdag.RoomID, roomdag.UserID, error)
	DeleteAlias(ctx context.Context, alias roomdag.RoomAlias) error
	RoomAliases(ctx context.Context, room roomdag.RoomID) ([]string, error)
	MoveAliases(ctx context.Context, from, to roomdag.RoomID) error
	SetPublished(ctx context.Context, room roomdag.RoomID, published bool) error

	JoinedRooms(ctx context.Context, user roomdag.UserID) ([]roomdag.RoomID, error)
	Forget(ctx context.Context, user roomdag.UserID, room roomdag.RoomID) error
	TxnEvent(ctx context.Context, user roomdag.UserID, txn roomdag.Txn) (roomdag.EventID, error)
	Event(ctx context.Context, id roomdag.EventID) (*roomdag.StoredEvent, error)
	EventPlace(ctx context.Context, id roomdag.EventID) (storage.EventPlace, error)
	StateEvents(ctx context.Context, snapshot int64) (roomdag.StateMap, error)
	TopoAtStream(ctx context.Context, room roomdag.RoomID, pos roomdag.StreamPos) (storage.TopoPos, error)
	RoomEventsTopo(ctx context.Context, room roomdag.RoomID, from storage.TopoPos, backwards bool, limit int) ([]*roomdag.StoredEvent, bool, error)
	EventNearTimestamp(ctx context.Context, room roomdag.RoomID, tsMS int64, forwards bool) (roomdag.EventID, int64, error)

	// PutReceipt and PutFullyRead only move forward: they return position 0
	// when the stored receipt or marker is already at or after eventPos.
	PutReceipt(ctx context.Context, room roomdag.RoomID, typ string, user roomdag.UserID, thread string,
		event roomdag.EventID, eventPos roomdag.StreamPos, tsMS int64) (int64, error)
	PutFullyRead(ctx context.Context, user roomdag.UserID, room roomdag.RoomID, event roomdag.EventID, eventPos roomdag.StreamPos) (int64, error)

	// Push rules (push.UserRules documents); UpdatePushRules also stores
	// the m.push_rules account data and returns its stream position.
	PushRules(ctx context.Context, user roomdag.UserID) (json.RawMessage, error)
	UpdatePushRules(ctx context.Context, user roomdag.UserID, fn func(cur json.RawMessage) (next, accountData json.RawMessage, err error)) (int64, error)

	// Directories and room tags (storage/sqlstore/directory.go documents).
	Published(ctx context.Context, room roomdag.RoomID) (bool, error)
	PublishedRooms(ctx context.Context) ([]roomdag.RoomID, error)
	UpdateAccountData(ctx context.Context, user roomdag.UserID, room roomdag.RoomID, typ string,
		fn func(cur json.RawMessage) (json.RawMessage, error)) (int64, error)
	SearchUserDirectory(ctx context.Context, searcher roomdag.UserID, terms []string, limit int) ([]storage.User, bool, error)

	// Notifications lists the user's notifications for events before
	// position before (0: from the newest), newest first
	// (storage/sqlstore/notifications.go).
	Notifications(ctx context.Context, user roomdag.UserID, before roomdag.StreamPos, limit int, onlyHighlight bool) ([]storage.Notification, error)

	// Pushers (storage/sqlstore/pushers.go documents).
	Pushers(ctx context.Context, user roomdag.UserID) ([]storage.Pusher, error)
	SetPusher(ctx context.Context, p storage.Pusher, appendPusher bool) ([]roomdag.UserID, error)
	DeletePusher(ctx context.Context, user roomdag.UserID, appID, pushKey string) error

	// Media metadata, for the media repository (media.Store documents).
	media.Store

	// Account deactivation (api/deactivate.go).
	Accounts
	// Account locking and suspension (api/moderation.go).
	AccountModeration
	// Extensible profiles (api/profile.go).
	Profiles
	// Devices that application services create (api/appservice.go).
	AppServiceDevices

	// User-interactive auth sessions and shared-secret registration
	// nonces (storage/sqlstore/uia.go documents).
	PutUIASession(ctx context.Context, s storage.UIASession, nowMS int64) error
	UIASession(ctx context.Context, id string, nowMS int64) (*storage.UIASession, error)
	CompleteUIAStage(ctx context.Context, id, stage string, user roomdag.UserID, expiresMS, nowMS int64) (*storage.UIASession, error)
	DeleteUIASession(ctx context.Context, id string, nowMS int64) (bool, error)

	// Exclusive runs fn while no other process sharing the database runs
	// an Exclusive of the same name (storage/sqlstore/exclusive.go).
	Exclusive(ctx context.Context, name string, fn func() error) error

	// Space hierarchy walks between pages (storage/sqlstore/hierarchy.go).
	PutHierarchySession(ctx context.Context, token string, user roomdag.UserID, walk []byte, expiresMS, nowMS int64, maxPerUser int) error
	HierarchySession(ctx context.Context, token string, nowMS int64) (roomdag.UserID, []byte, error)

	// Rate limit buckets shared by the processes of one database
	// (storage/sqlstore/ratelimits.go documents), used when
	// Config.SharedRateLimits is set.
	TakeRateToken(ctx context.Context, bucket string, nowUS, intervalUS int64, burst int) (int64, error)
	RefundRateToken(ctx context.Context, bucket string, nowUS, intervalUS int64) error
	PurgeRateLimits(ctx context.Context, nowUS int64) error

	// Reports for administrators (storage/sqlstore/reports.go documents).
	AddReport(ctx context.Context, r storage.Report) (int64, error)
	Reports(ctx context.Context, kind storage.ReportKind, from, limit int, forward bool) ([]storage.Report, int, error)

	// Relations and threads (storage/sqlstore/relations.go documents).
	Relations(ctx context.Context, q storage.RelationsQuery) ([]storage.RelatedEvent, bool, error)
	Threads(ctx context.Context, room roomdag.RoomID, participant roomdag.UserID, before *storage.TopoPos, limit int) ([]storage.ThreadRoot, bool, error)
	HasAnnotation(ctx context.Context, parent roomdag.EventID, sender roomdag.UserID, evType, key string) (bool, error)

	// Search (storage/sqlstore/search.go documents): the indexed events
	// matching a query, events by stream position, the words that matched
	// in some events, and a few entries of a state snapshot.
	SearchEvents(ctx context.Context, q storage.SearchQuery) ([]storage.SearchHit, error)
	EventsAt(ctx context.Context, positions []roomdag.StreamPos) ([]*roomdag.StoredEvent, error)
	// UserMembership returns the user's membership in one room (also an
	// out-of-band one: roomdag.Rooms.StoreOutOfBand), or
	// storage.ErrNotFound.
	UserMembership(ctx context.Context, user roomdag.UserID, room roomdag.RoomID) (storage.RoomMembership, error)
	// InviteState is the stripped state kept with the out-of-band
	// membership at pos (an invite's, a knock's), or nil.
	InviteState(ctx context.Context, pos roomdag.StreamPos) (json.RawMessage, error)
	SearchMatches(ctx context.Context, phrases []storage.SearchPhrase, positions []roomdag.StreamPos) ([]string, error)
	StateEntries(ctx context.Context, snapshot int64, keys []roomdag.StateKey) (map[roomdag.StateKey]roomdag.EventID, error)
}
