package api

import (
	"encoding/json"

	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/roomdag"
)

// The operator's switches for end-to-end encryption in rooms
// (Config.EncryptionByDefault, Config.RefuseRoomEncryption; documented in
// configs/homeserver.yaml).

// Values of Config.EncryptionByDefault, Synapse's
// encryption_enabled_by_default_for_room_type.
const (
	EncryptionAll    = "all"
	EncryptionInvite = "invite"
	EncryptionOff    = "off"
)

// defaultEncryption is the Megolm algorithm that new rooms are encrypted
// with (spec: "Messaging algorithms").
var defaultEncryption = json.RawMessage(`{"algorithm":"m.megolm.v1.aes-sha2"}`)

// checkRoomEncryption refuses an m.room.encryption event, in a new room's
// initial state or sent later, when the server refuses encryption.
func (s *Server) checkRoomEncryption(evType string) error {
	if evType == roomdag.TypeEncryption && s.cfg.RefuseRoomEncryption {
		return httpapi.Forbidden("end-to-end encryption is disabled on this server: its rooms are kept readable for the organisation's archive")
	}
	return nil
}

// withDefaultEncryption adds m.room.encryption to a new room's initial
// state where EncryptionByDefault asks for it (Synapse's semantics:
// "invite" is the private_chat and trusted_private_chat presets), unless
// the creator gave one or the server refuses encryption.
func (s *Server) withDefaultEncryption(preset string, initial []stateEvent) []stateEvent {
	if s.cfg.RefuseRoomEncryption {
		return initial
	}
	switch s.cfg.EncryptionByDefault {
	case EncryptionAll:
	case EncryptionInvite:
		if preset != "private_chat" && preset != "trusted_private_chat" {
			return initial
		}
	default:
		return initial
	}
	for _, ev := range initial {
		if ev.Type == roomdag.TypeEncryption && ev.StateKey == "" {
			return initial
		}
	}
	return append(initial, stateEvent{Type: roomdag.TypeEncryption, Content: defaultEncryption})
}
