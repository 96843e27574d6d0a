package roomdag

// RoomVersion holds every way one room version differs from another. The
// rest of the package reads these fields; it never compares version strings.
// Spec: content/rooms/v1.md to v12.md.
type RoomVersion struct {
	ID string
	// Stable versions may be offered to clients and used for new rooms.
	Stable bool

	// EventFormat says how events are identified and referenced: v1 and v2
	// carry a server-assigned event_id and cite other events as
	// [event_id, hashes] pairs; v3 derives the ID from the reference hash
	// in standard base64, v4 and later in URL-safe base64.
	EventFormat EventFormat
	// StrictCanonicalJSON: events must be canonical JSON, so numbers are
	// integers within ±(2^53-1) and never floats (v6+). Older versions
	// accept any JSON number and hash it as Python's json module prints it,
	// as Synapse does (rooms/v1 "Canonical JSON").
	StrictCanonicalJSON bool
	// EnforceKeyValidity: a signing key's valid_until_ts must cover the
	// event's origin_server_ts (v5+, rooms/v5 "Signing key validity
	// period"). Signature checks on received events read it.
	EnforceKeyValidity bool
	// StateRes is the state resolution algorithm.
	StateRes StateResAlgorithm

	// RedactAliases: the original redaction algorithm keeps content.aliases
	// of m.room.aliases (v1-v5; dropped in v6).
	RedactAliases bool
	// RedactJoinRulesAllow: redaction keeps content.allow of
	// m.room.join_rules (v8+).
	RedactJoinRulesAllow bool
	// RedactAuthorisedVia: redaction keeps join_authorised_via_users_server
	// of m.room.member (v9+).
	RedactAuthorisedVia bool
	// UpdatedRedaction: the v11 redaction algorithm (MSC2176, MSC3821,
	// MSC3989): the whole create content is kept, `redacts` moves into the
	// content, `invite` is kept in power levels, and `origin`, `membership`
	// and `prev_state` are no longer protected top-level keys.
	UpdatedRedaction bool

	// RedactionAuthRule: m.room.redaction has an auth rule of its own,
	// needing the redact level or a redacted event of the same event ID
	// domain (v1, v2 rule 11); from v3 redactions are checked when applied
	// ("Handling redactions").
	RedactionAuthRule bool
	// AliasesAuthRule: m.room.aliases is allowed when its state key is the
	// sender's domain, whatever the power levels (v1-v5 rule 4).
	AliasesAuthRule bool
	// NotificationsPowerLevels: changes to the notifications levels are
	// checked like those to events (v6+, MSC2209).
	NotificationsPowerLevels bool
	// IntegerPowerLevels: power levels must be JSON integers (v10+). Before,
	// they may also be strings holding an integer, and, without
	// StrictCanonicalJSON (v1-v5), floats, which are truncated.
	IntegerPowerLevels bool
	// Knock: the knock membership and join rule exist (v7+).
	Knock bool
	// RestrictedJoins: the restricted join rule and
	// join_authorised_via_users_server exist (v8+).
	RestrictedJoins bool
	// KnockRestricted: the knock_restricted join rule exists (v10+).
	KnockRestricted bool
	// CreatorFromSender: the room creator is the create event's sender; the
	// `creator` content key is gone (v11+).
	CreatorFromSender bool
	// DomainlessRoomIDs: the room ID is "!" plus the create event's reference
	// hash, and the create event carries no room_id and is never listed in
	// auth_events (v12, MSC4291).
	DomainlessRoomIDs bool
	// PrivilegedCreators: the creators (create sender plus
	// content.additional_creators) have infinite power and cannot be listed in
	// m.room.power_levels (v12, MSC4289).
	PrivilegedCreators bool
}

// EventFormat is how a room version identifies and references events.
type EventFormat uint8

const (
	// EventFormatV1: "$opaque:server" event IDs carried in the event, and
	// prev_events/auth_events as [event_id, {"sha256": reference hash}]
	// pairs (rooms v1, v2).
	EventFormatV1 EventFormat = iota + 1
	// EventFormatV3: "$" + unpadded standard base64 of the reference hash,
	// and plain lists of event IDs (rooms v3).
	EventFormatV3
	// EventFormatV4: as V3 with URL-safe unpadded base64 (rooms v4+).
	EventFormatV4
)

// StateResAlgorithm names a state resolution algorithm.
type StateResAlgorithm uint8

const (
	StateResV1  StateResAlgorithm = iota + 1 // rooms v1 (ResolveStateV1)
	StateResV2                               // rooms v2-v11
	StateResV21                              // rooms v12 (MSC4297)
)

// roomVersions is the one table of supported versions. Each version is the
// one before it with what its spec page changes.
var roomVersions = func() map[string]*RoomVersion {
	v1 := RoomVersion{ID: "1", Stable: true, EventFormat: EventFormatV1, StateRes: StateResV1,
		RedactAliases: true, RedactionAuthRule: true, AliasesAuthRule: true}
	v2 := v1
	v2.ID, v2.StateRes = "2", StateResV2
	v3 := v2
	v3.ID, v3.EventFormat, v3.RedactionAuthRule = "3", EventFormatV3, false
	v4 := v3
	v4.ID, v4.EventFormat = "4", EventFormatV4
	v5 := v4
	v5.ID, v5.EnforceKeyValidity = "5", true
	v6 := v5
	v6.ID, v6.StrictCanonicalJSON, v6.NotificationsPowerLevels = "6", true, true
	v6.RedactAliases, v6.AliasesAuthRule = false, false
	v7 := v6
	v7.ID, v7.Knock = "7", true
	v8 := v7
	v8.ID, v8.RestrictedJoins, v8.RedactJoinRulesAllow = "8", true, true
	v9 := v8
	v9.ID, v9.RedactAuthorisedVia = "9", true
	v10 := v9
	v10.ID, v10.KnockRestricted, v10.IntegerPowerLevels = "10", true, true
	v11 := v10
	v11.ID, v11.UpdatedRedaction, v11.CreatorFromSender = "11", true, true
	v12 := v11
	v12.ID, v12.DomainlessRoomIDs, v12.PrivilegedCreators, v12.StateRes = "12", true, true, StateResV21
	m := map[string]*RoomVersion{}
	for _, v := range []RoomVersion{v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11, v12} {
		m[v.ID] = &v
	}
	return m
}()

// roomVersionOrder lists the versions for RoomVersions.
var roomVersionOrder = []string{"1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"}

// DefaultRoomVersion is what new rooms get unless the client or the config
// asks for another. The spec default is 12, but it also advises servers to
// keep creating v11 for a while, as Synapse does.
const DefaultRoomVersion = "11"

// LookupRoomVersion is the single place an unknown version is rejected.
func LookupRoomVersion(id string) (*RoomVersion, bool) {
	v, ok := roomVersions[id]
	return v, ok
}

// RoomVersions lists every supported version, oldest first, for
// /capabilities.
func RoomVersions() []*RoomVersion {
	out := make([]*RoomVersion, 0, len(roomVersionOrder))
	for _, id := range roomVersionOrder {
		out = append(out, roomVersions[id])
	}
	return out
}
