package sync

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// TypeInvitePermissionConfig is the global account data with which a user
// blocks invites (spec v1.18, "Invite permission", MSC4380).
const TypeInvitePermissionConfig = "m.invite_permission_config"

// AccountDataReader reads one account data entry (Store.AccountData).
type AccountDataReader interface {
	AccountData(ctx context.Context, user roomdag.UserID, room roomdag.RoomID, typ string) (json.RawMessage, error)
}

// InvitesBlocked reports whether user blocks every invite: their
// m.invite_permission_config has default_action "block". A missing,
// invalid or other value lets invites through (spec). Read afresh on every
// request, so a change applies at once.
func InvitesBlocked(ctx context.Context, store AccountDataReader, user roomdag.UserID) (bool, error) {
	raw, err := store.AccountData(ctx, user, "", TypeInvitePermissionConfig)
	if errors.Is(err, storage.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	var c struct {
		DefaultAction any `json:"default_action"`
	}
	return json.Unmarshal(raw, &c) == nil && c.DefaultAction == "block", nil
}
