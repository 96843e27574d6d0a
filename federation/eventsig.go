package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/persistentchat/homeserver/roomdag"
)

// VerifyEventSignatures checks the signatures a remote event must carry
// (server-server API, "Validating hashes and signatures on received
// events"): one of the sender's server, except on an invite through a
// third-party identifier (whose own signature the auth rules check); for
// rooms v1 and v2, one of the server in the event ID; for a join through
// a restricted room (v8+), one of the server of
// join_authorised_via_users_server. For each, every signature with a key
// known and valid must verify, and there must be at least one; signatures
// with unknown or expired keys are skipped. In room versions that enforce
// key validity (v5+) the key must have been valid at atTS, the event's
// origin_server_ts (rooms/v5, "Signing key validity period"); pass
// ev.OriginServerTS(). It does not check the content hash.
//
// The error wraps roomdag.ErrSignature when a signature is missing or
// wrong, ErrUnknownKey when no key of a server could be had; other errors
// are the store's.
func (k *Keyring) VerifyEventSignatures(ctx context.Context, ev *roomdag.Event, atTS int64) error {
	for _, server := range requiredSigners(ev) {
		if err := k.VerifyServerSignature(ctx, ev, server, atTS); err != nil {
			return err
		}
	}
	return nil
}

// VerifyServerSignature checks the signatures of one server on ev, as
// VerifyEventSignatures does for each server it requires: for a
// signature other than those (an invitee's server's on an invite).
func (k *Keyring) VerifyServerSignature(ctx context.Context, ev *roomdag.Event, server roomdag.ServerName, atTS int64) error {
	v := ev.Version()
	ids, err := signatureKeyIDs(ev.JSON(), server)
	if err != nil {
		return err
	}
	if len(ids) == 0 {
		return fmt.Errorf("%w: event %s is not signed by %s", roomdag.ErrSignature, ev.ID(), server)
	}
	// "If a signature is from an unknown or expired key, it is
	// skipped", and every other one must be valid; at least one is.
	var skipped []error
	verified := 0
	for _, id := range ids {
		pub, err := k.EventKey(ctx, server, id, atTS, v.EnforceKeyValidity)
		if errors.Is(err, ErrUnknownKey) {
			skipped = append(skipped, err)
			continue
		}
		if err != nil {
			return err
		}
		if err := roomdag.VerifyEventSignature(v, server, id, pub, ev.JSON()); err != nil {
			return fmt.Errorf("event %s: %w", ev.ID(), err)
		}
		verified++
	}
	if verified == 0 {
		return fmt.Errorf("event %s has no signature of %s with a key valid at %d: %w", ev.ID(), server, atTS, errors.Join(skipped...))
	}
	return nil
}

// requiredSigners lists the servers whose signature ev needs.
func requiredSigners(ev *roomdag.Event) []roomdag.ServerName {
	v := ev.Version()
	var servers []roomdag.ServerName
	add := func(s roomdag.ServerName) {
		for _, have := range servers {
			if have == s {
				return
			}
		}
		servers = append(servers, s)
	}
	// "If the event is a 3rd party invite, the sender must already match
	// the 3rd party invite, and the server which actually sends the event
	// may be a different server": the auth rules check the invite's own
	// signature instead.
	if !thirdPartyInvite(ev) {
		add(ev.Sender().Server())
	}
	if v.EventFormat == roomdag.EventFormatV1 {
		if _, server, ok := cutID(string(ev.ID())); ok {
			add(server)
		}
	}
	if v.RestrictedJoins && ev.Type() == roomdag.TypeMember && ev.Membership() == roomdag.MembershipJoin {
		if via := authorisedVia(ev); via != "" {
			add(via.Server())
		}
	}
	return servers
}

// thirdPartyInvite reports whether ev is an invite through a third-party
// identifier (m.room.member, membership invite, with
// content.third_party_invite).
func thirdPartyInvite(ev *roomdag.Event) bool {
	if ev.Type() != roomdag.TypeMember || ev.Membership() != roomdag.MembershipInvite {
		return false
	}
	var c struct {
		TPI json.RawMessage `json:"third_party_invite"`
	}
	return json.Unmarshal(ev.Content(), &c) == nil && len(c.TPI) > 0 && string(c.TPI) != "null"
}

// cutID splits a v1/v2 event ID "$opaque:server" at its first colon, as
// Synapse's get_domain_from_id does.
func cutID(id string) (string, roomdag.ServerName, bool) {
	local, server, ok := strings.Cut(id, ":")
	return local, roomdag.ServerName(server), ok && server != ""
}

// authorisedVia is content.join_authorised_via_users_server of a member
// event, "" when absent or not a user ID (the auth rules reject that).
func authorisedVia(ev *roomdag.Event) roomdag.UserID {
	var c struct {
		Via string `json:"join_authorised_via_users_server"`
	}
	if json.Unmarshal(ev.Content(), &c) != nil || c.Via == "" {
		return ""
	}
	u, err := roomdag.ParseUserID(c.Via)
	if err != nil {
		return ""
	}
	return u
}
