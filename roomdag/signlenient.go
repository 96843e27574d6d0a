package roomdag

import (
	"crypto/ed25519"
	"fmt"
)

// A federation request's signature covers its body (server-server API,
// "Request Authentication"), and a body may carry events of room versions
// 1-5, whose numbers need not be integers: other servers encode such a
// body as Python's json module does, which is the lenient canonical form
// of those versions (canonicalJSONFor). SignJSON and VerifyJSON refuse
// those numbers, so requests are signed and checked in the lenient form.
// For documents without such numbers both forms are the same bytes.

// SignJSONLenient is SignJSON under the canonical JSON rules of room
// versions 1-5.
func SignJSONLenient(k SigningKey, obj []byte) ([]byte, error) {
	c, err := canonicalJSON(obj, true)
	if err != nil {
		return nil, err
	}
	if !cjIsObject(c) {
		return nil, fmt.Errorf("%w: can only sign an object", ErrCanonicalJSON)
	}
	return signCanonical(k, c)
}

// VerifyJSONLenient is VerifyJSON under the canonical JSON rules of room
// versions 1-5.
func VerifyJSONLenient(server ServerName, keyID string, pub ed25519.PublicKey, obj []byte) error {
	if err := checkVerifyKey(keyID, pub); err != nil {
		return err
	}
	c, err := canonicalJSON(obj, true)
	if err != nil {
		return err
	}
	return verifyCanonical(server, keyID, pub, c)
}
