package roomdag

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// ErrContentHash means an event's hashes.sha256 is missing, malformed, or
// does not match its content. Spec: server-server API, "Checks performed on
// receipt of a PDU", step 4: such an event is redacted before further use.
var ErrContentHash = errors.New("content hash mismatch")

// contentHash is SHA-256 over the canonical event without "unsigned",
// "signatures" and "hashes". Spec: server-server API, "Calculating the content
// hash for an event". canon must be a canonical JSON object.
func contentHash(canon []byte) [32]byte {
	return sha256.Sum256(cjWithout(canon, "hashes", "signatures", "unsigned"))
}

// canonicalEvent makes eventJSON canonical under v's rules and checks it is
// an object.
func canonicalEvent(v *RoomVersion, eventJSON []byte) ([]byte, error) {
	c, err := canonicalJSONFor(v, eventJSON)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrEventFormat, err)
	}
	if !cjIsObject(c) {
		return nil, formatErr("event is not a JSON object")
	}
	return c, nil
}

// AddContentHash sets hashes.sha256 of an event of room version v to its
// content hash, keeping any other entry of "hashes", and returns the event
// as canonical JSON.
func AddContentHash(v *RoomVersion, eventJSON []byte) ([]byte, error) {
	c, err := canonicalEvent(v, eventJSON)
	if err != nil {
		return nil, err
	}
	sum := contentHash(c)
	hashes, ok := cjGet(c, "hashes")
	if !ok {
		hashes = []byte("{}")
	} else if !cjIsObject(hashes) {
		return nil, formatErr("hashes is not an object")
	}
	hashes = cjWith(hashes, "sha256", jsonBase64(sum[:]))
	return cjWith(c, "hashes", hashes), nil
}

// CheckContentHash reports whether hashes.sha256 matches the content of an
// event of room version v. The error wraps ErrContentHash, or
// ErrEventFormat for JSON that is not an event.
func CheckContentHash(v *RoomVersion, eventJSON []byte) error {
	c, err := canonicalEvent(v, eventJSON)
	if err != nil {
		return err
	}
	hashes, ok := cjGet(c, "hashes")
	if !ok || !cjIsObject(hashes) {
		return fmt.Errorf("%w: no hashes object", ErrContentHash)
	}
	val, ok := cjGet(hashes, "sha256")
	if !ok {
		return fmt.Errorf("%w: no sha256 hash", ErrContentHash)
	}
	s, ok := cjString(val)
	if !ok {
		return fmt.Errorf("%w: sha256 hash is not a string", ErrContentHash)
	}
	want, err := decodeBase64(s)
	if err != nil || len(want) != sha256.Size {
		return fmt.Errorf("%w: sha256 hash is not base64 of 32 bytes", ErrContentHash)
	}
	got := contentHash(c)
	if subtle.ConstantTimeCompare(got[:], want) != 1 {
		return ErrContentHash
	}
	return nil
}

// ReferenceHash is SHA-256 over the redacted event without "signatures" and
// "unsigned". Spec: server-server API, "Calculating the reference hash for an
// event".
func ReferenceHash(v *RoomVersion, eventJSON []byte) ([32]byte, error) {
	c, err := canonicalEvent(v, eventJSON)
	if err != nil {
		return [32]byte{}, err
	}
	return referenceHashCanonical(v, c)
}

// referenceHashCanonical is ReferenceHash for a canonical event.
func referenceHashCanonical(v *RoomVersion, c []byte) ([32]byte, error) {
	r, err := redactCanonical(v, c)
	if err != nil {
		return [32]byte{}, err
	}
	return sha256.Sum256(cjWithout(r, "signatures", "unsigned")), nil
}

// EventIDFromJSON returns an event's ID. In v3 and later it is computed:
// "$" and the unpadded base64 of the reference hash, standard in v3
// (rooms/v3 "Event IDs") and URL-safe from v4 (rooms/v4). In v1 and v2 it
// is the event's own event_id, which must be "$opaque:server" (rooms/v1
// "Event IDs"); the signature of that server vouches for it.
func EventIDFromJSON(v *RoomVersion, eventJSON []byte) (EventID, error) {
	if v.EventFormat == EventFormatV1 {
		c, err := canonicalEvent(v, eventJSON)
		if err != nil {
			return "", err
		}
		return eventIDField(c)
	}
	h, err := ReferenceHash(v, eventJSON)
	if err != nil {
		return "", err
	}
	return hashEventID(v, h), nil
}

// hashEventID is the event ID of a v3+ event with reference hash h.
func hashEventID(v *RoomVersion, h [32]byte) EventID {
	if v.EventFormat == EventFormatV3 {
		return EventID("$" + base64.RawStdEncoding.EncodeToString(h[:]))
	}
	return EventID("$" + base64.RawURLEncoding.EncodeToString(h[:]))
}

// eventIDField reads and checks the event_id of a canonical v1/v2 event.
func eventIDField(c []byte) (EventID, error) {
	raw, ok := cjGet(c, "event_id")
	if !ok {
		return "", formatErr("no event_id")
	}
	s, ok := cjString(raw)
	if !ok {
		return "", formatErr("event_id is not a string")
	}
	id, err := ParseEventID(s)
	if err != nil || !validServerName(id.server()) {
		return "", formatErr("event_id %q is not $opaque:server", s)
	}
	return id, nil
}

// jsonBase64 returns b as a JSON string of unpadded standard base64. Spec:
// appendices, "Unpadded Base64". The alphabet needs no JSON escaping.
func jsonBase64(b []byte) []byte {
	n := base64.RawStdEncoding.EncodedLen(len(b))
	out := make([]byte, n+2)
	out[0], out[n+1] = '"', '"'
	base64.RawStdEncoding.Encode(out[1:n+1], b)
	return out
}

// decodeBase64 decodes standard base64, with or without padding, as the
// spec asks receivers to accept.
func decodeBase64(s string) ([]byte, error) {
	if strings.HasSuffix(s, "=") {
		return base64.StdEncoding.DecodeString(s)
	}
	return base64.RawStdEncoding.DecodeString(s)
}
