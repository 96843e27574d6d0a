package retention

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// HoldStore is what holds need of storage (storage/sqlstore/retention.go).
type HoldStore interface {
	// CreateHold stores a new hold and returns it with its ID.
	CreateHold(ctx context.Context, h storage.Hold) (storage.Hold, error)
	// ReleaseHold marks hold id released: storage.ErrNotFound for an
	// unknown one, storage.ErrConflict for one released already.
	ReleaseHold(ctx context.Context, id int64, by roomdag.UserID, atMS int64) (storage.Hold, error)
	// Holds lists the holds, oldest first; only active ones if activeOnly.
	Holds(ctx context.Context, activeOnly bool) ([]storage.Hold, error)
}

// AdminAction is an administrator's action, or the server's own (a
// purge, Actor ""), told to the AdminActionRecorder.
type AdminAction struct {
	// Action is "hold.create", "hold.release", "retention.purge" or
	// "retention.archive_purge" (the compliance archive's records).
	Action string
	Actor  roomdag.UserID
	// The target: the hold's user or room, the purged room.
	User roomdag.UserID
	Room roomdag.RoomID
	// HoldID and Reason for holds.
	HoldID int64
	Reason string
	// Before and Events for purges: the cut-off (events sent before it
	// were purged) and how many events went.
	Before time.Time
	Events int
	// Records, for an archive purge: the records whose content went.
	Records int
	AtMS    int64
}

// AdminActionRecorder records admin actions, for the compliance archive
// (package compliance implements it): holds made and released, and
// purges. It is called after the action is durable; an error is logged,
// the action stands. A change of a room's retention policy is an
// m.room.retention state event, which the archive records as it records
// every event, so it is not told here.
type AdminActionRecorder interface {
	RecordAdminAction(ctx context.Context, a AdminAction) error
}

// Holds makes, lists and releases legal holds and answers whether one
// applies. Its methods may be called from any goroutine.
type Holds struct {
	store    HoldStore
	clock    clock.Clock
	log      *slog.Logger
	recorder AdminActionRecorder // nil: none
}

// NewHolds makes the holds service; recorder may be nil.
func NewHolds(store HoldStore, clk clock.Clock, log *slog.Logger, recorder AdminActionRecorder) *Holds {
	return &Holds{store: store, clock: clk, log: log, recorder: recorder}
}

// MaxReasonLength bounds a hold's reason, in bytes.
const MaxReasonLength = 2000

// Errors of Create and Release, as Matrix errors for the admin API.
var (
	errTarget   = httpapi.Errorf(http.StatusBadRequest, httpapi.CodeInvalidParam, "a hold needs exactly one of user_id and room_id")
	errReason   = httpapi.Errorf(http.StatusBadRequest, httpapi.CodeInvalidParam, "a hold needs a reason (at most 2000 bytes)")
	errNoHold   = httpapi.Errorf(http.StatusNotFound, httpapi.CodeNotFound, "no such hold")
	errReleased = httpapi.Errorf(http.StatusBadRequest, httpapi.CodeBadState, "the hold was released already")
)

// Create places a hold on user's events or on room (exactly one of them
// set), for reason, by admin.
func (h *Holds) Create(ctx context.Context, admin, user roomdag.UserID, room roomdag.RoomID, reason string) (storage.Hold, error) {
	if (user == "") == (room == "") {
		return storage.Hold{}, errTarget
	}
	if reason == "" || len(reason) > MaxReasonLength {
		return storage.Hold{}, errReason
	}
	now := h.clock.Now().UnixMilli()
	hold, err := h.store.CreateHold(ctx, storage.Hold{User: user, Room: room, Reason: reason, CreatedBy: admin, CreatedMS: now})
	if err != nil {
		return storage.Hold{}, err
	}
	h.log.Info("legal hold created", "hold", hold.ID, "user", user, "room", room, "by", admin)
	h.record(ctx, AdminAction{Action: "hold.create", Actor: admin, User: user, Room: room, HoldID: hold.ID, Reason: reason, AtMS: now})
	return hold, nil
}

// Release ends hold id, by admin: the next purge covers what it held.
func (h *Holds) Release(ctx context.Context, admin roomdag.UserID, id int64) (storage.Hold, error) {
	now := h.clock.Now().UnixMilli()
	hold, err := h.store.ReleaseHold(ctx, id, admin, now)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return storage.Hold{}, errNoHold
	case errors.Is(err, storage.ErrConflict):
		return storage.Hold{}, errReleased
	case err != nil:
		return storage.Hold{}, err
	}
	h.log.Info("legal hold released", "hold", id, "user", hold.User, "room", hold.Room, "by", admin)
	h.record(ctx, AdminAction{Action: "hold.release", Actor: admin, User: hold.User, Room: hold.Room, HoldID: id, Reason: hold.Reason, AtMS: now})
	return hold, nil
}

// List lists the holds, oldest first: the active ones, or all.
func (h *Holds) List(ctx context.Context, all bool) ([]storage.Hold, error) {
	return h.store.Holds(ctx, !all)
}

// active is what the active holds cover.
type active struct {
	users map[roomdag.UserID]bool
	rooms map[roomdag.RoomID]bool
}

func (a active) userList() []roomdag.UserID {
	out := make([]roomdag.UserID, 0, len(a.users))
	for u := range a.users {
		out = append(out, u)
	}
	return out
}

func (h *Holds) active(ctx context.Context) (active, error) {
	hs, err := h.store.Holds(ctx, true)
	if err != nil {
		return active{}, err
	}
	a := active{users: map[roomdag.UserID]bool{}, rooms: map[roomdag.RoomID]bool{}}
	for _, x := range hs {
		if x.User != "" {
			a.users[x.User] = true
		}
		if x.Room != "" {
			a.rooms[x.Room] = true
		}
	}
	return a, nil
}

// Held returns what the active holds cover now: held(user, room) reports
// whether a hold covers user or room ("" matches no hold). The answer is
// a snapshot, quick and safe to call from any goroutine.
func (h *Holds) Held(ctx context.Context) (held func(user roomdag.UserID, room roomdag.RoomID) bool, err error) {
	a, err := h.active(ctx)
	if err != nil {
		return nil, err
	}
	return func(user roomdag.UserID, room roomdag.RoomID) bool {
		return user != "" && a.users[user] || room != "" && a.rooms[room]
	}, nil
}

// CheckErasure refuses to erase a user under a legal hold, with 403
// M_FORBIDDEN (api.ErasureGuard). Refusing, rather than deactivating
// without erasing, is what the user and the operator can both see: the
// request fails and changes nothing, so nobody believes the data erased
// while it is kept, and the account may still be deactivated without
// erase.
func (h *Holds) CheckErasure(ctx context.Context, user roomdag.UserID) error {
	a, err := h.active(ctx)
	if err != nil {
		return err
	}
	if a.users[user] {
		return httpapi.Forbidden("This account is under a legal hold: its data cannot be erased. Deactivate it without erase, or ask the server administrator.")
	}
	return nil
}

func (h *Holds) record(ctx context.Context, a AdminAction) {
	if h.recorder == nil {
		return
	}
	if err := h.recorder.RecordAdminAction(context.WithoutCancel(ctx), a); err != nil {
		h.log.Error("recording an admin action", "action", a.Action, "err", err)
	}
}
