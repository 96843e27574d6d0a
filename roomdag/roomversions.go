package roomdag

// RoomVersion holds every way one room version differs from another. The
// rest of the package reads these fields; it never compares version strings.
// Spec: content/rooms/v10.md, v11.md, v12.md.
type RoomVersion struct {
	ID string
	// Stable versions may be offered to clients and used for new rooms.
	Stable bool
	// IntegerPowerLevels: power level values must be JSON integers (v10+).
	IntegerPowerLevels bool
	// KnockRestricted: the knock_restricted join rule exists (v10+).
	KnockRestricted bool
	// UpdatedRedaction: the v11 redaction algorithm (MSC2176, MSC3821,
	// MSC3989): the whole create content is kept, `redacts` moves into the
	// content, `invite` is kept in power levels, and `origin`, `membership`
	// and `prev_state` are no longer protected top-level keys.
	UpdatedRedaction bool
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
	// StateResV21: state resolution v2.1 (v12, MSC4297).
	StateResV21 bool
}

// roomVersions is the one table of supported versions. Versions before 10 are
// not supported yet: they need other event ID formats and redaction rules.
var roomVersions = map[string]*RoomVersion{
	"10": {ID: "10", Stable: true, IntegerPowerLevels: true, KnockRestricted: true},
	"11": {ID: "11", Stable: true, IntegerPowerLevels: true, KnockRestricted: true,
		UpdatedRedaction: true, CreatorFromSender: true},
	"12": {ID: "12", Stable: true, IntegerPowerLevels: true, KnockRestricted: true,
		UpdatedRedaction: true, CreatorFromSender: true,
		DomainlessRoomIDs: true, PrivilegedCreators: true, StateResV21: true},
}

// DefaultRoomVersion is what new rooms get unless the client or the config
// asks for another. The spec default is 12, but it also advises servers to
// keep creating v11 for a while, as Synapse does.
const DefaultRoomVersion = "11"

// LookupRoomVersion is the single place an unknown version is rejected.
func LookupRoomVersion(id string) (*RoomVersion, bool) {
	v, ok := roomVersions[id]
	return v, ok
}

// RoomVersions lists every supported version, for /capabilities.
func RoomVersions() []*RoomVersion {
	out := make([]*RoomVersion, 0, len(roomVersions))
	for _, id := range []string{"10", "11", "12"} {
		out = append(out, roomVersions[id])
	}
	return out
}
