package roomdag

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strings"
)

// ErrSignature wraps every reason a signature check fails: the signature is
// missing, malformed, made with an unknown algorithm, or wrong.
var ErrSignature = errors.New("bad signature")

// SigningKey is a server's ed25519 signing key. The private half cannot be
// printed: String, GoString and Format show only the server and key ID,
// encoding/json skips it, and it is held by a closure, which fmt and slog
// print as an address even when a SigningKey is a field of a struct being
// printed (a plain unexported []byte field would be printed in full). The
// func field also makes keys impossible to compare with ==.
type SigningKey struct {
	ServerName ServerName
	// KeyID is "ed25519:" and the key version, e.g. "ed25519:a_AbCd".
	KeyID  string
	secret func() ed25519.PrivateKey
}

func newSigningKey(server ServerName, keyID string, seed []byte) SigningKey {
	priv := ed25519.NewKeyFromSeed(seed)
	return SigningKey{ServerName: server, KeyID: keyID, secret: func() ed25519.PrivateKey { return priv }}
}

// privateKey is nil for the zero SigningKey.
func (k SigningKey) privateKey() ed25519.PrivateKey {
	if k.secret == nil {
		return nil
	}
	return k.secret()
}

const keyAlgEd25519 = "ed25519"

// GenerateSigningKey makes a new key with an ID like Synapse's:
// "ed25519:a_" and four random letters or digits. rand supplies the seed and
// the ID; pass crypto/rand.Reader outside tests.
func GenerateSigningKey(server ServerName, rand io.Reader) (SigningKey, error) {
	if !validServerName(string(server)) {
		return SigningKey{}, fmt.Errorf("signing key: bad server name %q", server)
	}
	seed := make([]byte, ed25519.SeedSize)
	if _, err := io.ReadFull(rand, seed); err != nil {
		return SigningKey{}, fmt.Errorf("signing key: %w", err)
	}
	version, err := randomAlnum(rand, 4)
	if err != nil {
		return SigningKey{}, fmt.Errorf("signing key: %w", err)
	}
	return newSigningKey(server, keyAlgEd25519+":a_"+version, seed), nil
}

// ParseSigningKey reads Synapse's signing key file format: lines of
// "<algorithm> <version> <unpadded base64 seed>". The first key is returned;
// further lines (older keys Synapse keeps) are ignored. Blank lines are
// skipped.
func ParseSigningKey(server ServerName, text []byte) (SigningKey, error) {
	if !validServerName(string(server)) {
		return SigningKey{}, fmt.Errorf("signing key: bad server name %q", server)
	}
	for line := range strings.Lines(string(text)) {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) != 3 {
			return SigningKey{}, errors.New("signing key: want \"ed25519 <version> <base64 seed>\"")
		}
		if f[0] != keyAlgEd25519 {
			return SigningKey{}, fmt.Errorf("signing key: unsupported algorithm %q", f[0])
		}
		if !ValidKeyVersion(f[1]) {
			return SigningKey{}, fmt.Errorf("signing key: bad key version %q", f[1])
		}
		seed, err := decodeBase64(f[2])
		if err != nil || len(seed) != ed25519.SeedSize {
			return SigningKey{}, errors.New("signing key: seed is not base64 of 32 bytes")
		}
		return newSigningKey(server, keyAlgEd25519+":"+f[1], seed), nil
	}
	return SigningKey{}, errors.New("signing key: no key found")
}

// ValidKeyVersion says whether s may be a key version: the spec limits
// them to [a-zA-Z0-9_]
// (server-server API, "Publishing Keys").
func ValidKeyVersion(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// Marshal returns the key in Synapse's signing key file format, one line
// ending in a newline. The result is secret.
func (k SigningKey) Marshal() []byte {
	alg, version, _ := strings.Cut(k.KeyID, ":")
	var b bytes.Buffer
	b.WriteString(alg)
	b.WriteByte(' ')
	b.WriteString(version)
	b.WriteByte(' ')
	if priv := k.privateKey(); priv != nil {
		b.WriteString(base64.RawStdEncoding.EncodeToString(priv.Seed()))
	}
	b.WriteByte('\n')
	return b.Bytes()
}

// Public returns the verification key, nil for the zero SigningKey.
func (k SigningKey) Public() ed25519.PublicKey {
	priv := k.privateKey()
	if priv == nil {
		return nil
	}
	return priv.Public().(ed25519.PublicKey)
}

func (k SigningKey) String() string {
	return "SigningKey(" + string(k.ServerName) + " " + k.KeyID + ")"
}

func (k SigningKey) GoString() string { return k.String() }

// Format prints String for every verb, so %x, %+v or %#v cannot reveal the
// private key.
func (k SigningKey) Format(f fmt.State, _ rune) { io.WriteString(f, k.String()) }

// SignJSON signs a JSON object as server k.ServerName with key k.KeyID and
// returns it as canonical JSON with the signature added under
// signatures.{server}.{keyID}. Other signatures and "unsigned" are kept and
// not covered by the signature. Spec: appendices, "Signing Details".
func SignJSON(k SigningKey, obj []byte) ([]byte, error) {
	c, err := CanonicalJSON(obj)
	if err != nil {
		return nil, err
	}
	if !cjIsObject(c) {
		return nil, fmt.Errorf("%w: can only sign an object", ErrCanonicalJSON)
	}
	return signCanonical(k, c)
}

// signCanonical is SignJSON for a canonical object.
func signCanonical(k SigningKey, c []byte) ([]byte, error) {
	priv := k.privateKey()
	if priv == nil {
		return nil, errors.New("sign: signing key is not set")
	}
	sig := ed25519.Sign(priv, cjWithout(c, "signatures", "unsigned"))
	sigs, ok := cjGet(c, "signatures")
	if !ok {
		sigs = []byte("{}")
	} else if !cjIsObject(sigs) {
		return nil, fmt.Errorf("%w: signatures is not an object", ErrCanonicalJSON)
	}
	mine, ok := cjGet(sigs, string(k.ServerName))
	if !ok {
		mine = []byte("{}")
	} else if !cjIsObject(mine) {
		return nil, fmt.Errorf("%w: signatures of %s is not an object", ErrCanonicalJSON, k.ServerName)
	}
	mine = cjWith(mine, k.KeyID, jsonBase64(sig))
	return cjWith(c, "signatures", cjWith(sigs, string(k.ServerName), mine)), nil
}

// VerifyJSON checks the signature of server with keyID on a JSON object.
// Spec: appendices, "Checking for a Signature". The error wraps ErrSignature
// or, for a document that cannot be made canonical, ErrCanonicalJSON.
func VerifyJSON(server ServerName, keyID string, pub ed25519.PublicKey, obj []byte) error {
	if err := checkVerifyKey(keyID, pub); err != nil {
		return err
	}
	c, err := CanonicalJSON(obj)
	if err != nil {
		return err
	}
	return verifyCanonical(server, keyID, pub, c)
}

func checkVerifyKey(keyID string, pub ed25519.PublicKey) error {
	if alg, _, _ := strings.Cut(keyID, ":"); alg != keyAlgEd25519 {
		return fmt.Errorf("%w: unsupported key algorithm in %q", ErrSignature, keyID)
	}
	if len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: public key is not %d bytes", ErrSignature, ed25519.PublicKeySize)
	}
	return nil
}

// verifyCanonical is VerifyJSON for a canonical document.
func verifyCanonical(server ServerName, keyID string, pub ed25519.PublicKey, c []byte) error {
	if err := checkVerifyKey(keyID, pub); err != nil {
		return err
	}
	if !cjIsObject(c) {
		return fmt.Errorf("%w: not an object", ErrSignature)
	}
	sigs, ok := cjGet(c, "signatures")
	if !ok || !cjIsObject(sigs) {
		return fmt.Errorf("%w: no signatures", ErrSignature)
	}
	mine, ok := cjGet(sigs, string(server))
	if !ok || !cjIsObject(mine) {
		return fmt.Errorf("%w: not signed by %s", ErrSignature, server)
	}
	val, ok := cjGet(mine, keyID)
	if !ok {
		return fmt.Errorf("%w: not signed by %s with %s", ErrSignature, server, keyID)
	}
	s, ok := cjString(val)
	if !ok {
		return fmt.Errorf("%w: signature is not a string", ErrSignature)
	}
	sig, err := decodeBase64(s)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return fmt.Errorf("%w: signature is not base64 of %d bytes", ErrSignature, ed25519.SignatureSize)
	}
	if !ed25519.Verify(pub, cjWithout(c, "signatures", "unsigned"), sig) {
		return fmt.Errorf("%w: signature of %s with %s does not verify", ErrSignature, server, keyID)
	}
	return nil
}

// SignEvent signs the redacted form of an event and adds the signature to
// the full event, returned as canonical JSON. The content hash must already
// be set (AddContentHash): it is what ties the content to the signature.
// Spec: server-server API, "Signing Events".
func SignEvent(v *RoomVersion, k SigningKey, eventJSON []byte) ([]byte, error) {
	full, err := canonicalEvent(v, eventJSON)
	if err != nil {
		return nil, err
	}
	red, err := redactCanonical(v, full)
	if err != nil {
		return nil, err
	}
	signed, err := signCanonical(k, red)
	if err != nil {
		return nil, err
	}
	sigs, _ := cjGet(signed, "signatures")
	return cjWith(full, "signatures", sigs), nil
}

// VerifyEventSignature checks server's signature with keyID on an event,
// which is over its redacted form. It does not check the content hash. The
// error wraps ErrSignature, or ErrEventFormat for JSON that is not an event.
func VerifyEventSignature(v *RoomVersion, server ServerName, keyID string, pub ed25519.PublicKey, eventJSON []byte) error {
	red, err := Redact(v, eventJSON)
	if err != nil {
		return err
	}
	// red is canonical under v's rules, which in v1-v5 allow numbers that
	// VerifyJSON's strict rules refuse.
	return verifyCanonical(server, keyID, pub, red)
}
