// Package compliance is the compliance archive (issue 13): an
// append-only, hash-chained record of every event the server stores and
// of every media upload and download, history read and admin action;
// signed checkpoints over the chain; its verification; and exports that
// a recipient can check without the server.
//
// The chain: record n has a canonical JSON form (Canonical: seq, ts,
// kind, actor, room, payload), record_hash = sha256(canonical), and
// hash = sha256(prev_hash || record_hash) over the raw 32-byte digests,
// prev_hash of record 1 being 32 zero bytes. Hashing the record's digest
// rather than its bytes lets the retention purge drop a payload
// (storage's PurgeCompliance) while the chain still verifies. A
// checkpoint is the server's ed25519 signature (Matrix JSON signing,
// the server's signing key) over {"seq", "head", "ts", "server"}: the
// chain had seq records and its last hash was head.
//
// One archiver appends (Archiver, a streamworker loop under the lease
// "compliance"); request paths only queue records (Recorder).
package compliance

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// Kinds of record.
const (
	KindEvent         = "event"
	KindReceived      = "received_event" // from another server, outside the timeline (archiver.go)
	KindMediaUpload   = "media_upload"
	KindMediaDownload = "media_download"
	KindHistoryRead   = "history_read"
	KindAdminAction   = "admin_action"
)

// zeroHash is the prev_hash of the first record.
var zeroHash = hex.EncodeToString(make([]byte, sha256.Size))

// Canonical is the record's canonical JSON, the bytes record_hash
// covers: {"actor", "kind", "payload", "room", "seq", "ts"}, the payload
// made canonical.
func Canonical(r storage.ComplianceRecord) ([]byte, error) {
	p, err := roomdag.CanonicalJSON([]byte(r.Payload))
	if err != nil {
		return nil, err
	}
	return canonicalRecord(r, p)
}

// canonicalRecord is r's canonical JSON around payload, which must be
// canonical already: the archiver's payloads are built so, and it then
// hashes without another pass over them.
func canonicalRecord(r storage.ComplianceRecord, payload []byte) ([]byte, error) {
	b := make([]byte, 0, len(payload)+len(r.Actor)+len(r.Room)+len(r.Kind)+80)
	b = append(b, `{"actor":`...)
	b, err := appendString(b, r.Actor)
	if err != nil {
		return nil, err
	}
	b = append(b, `,"kind":`...)
	if b, err = appendString(b, r.Kind); err != nil {
		return nil, err
	}
	b = append(b, `,"payload":`...)
	b = append(b, payload...)
	b = append(b, `,"room":`...)
	if b, err = appendString(b, r.Room); err != nil {
		return nil, err
	}
	b = append(b, `,"seq":`...)
	b = strconv.AppendInt(b, r.Seq, 10)
	b = append(b, `,"ts":`...)
	b = strconv.AppendInt(b, r.TS, 10)
	return append(b, '}'), nil
}

// appendString appends s as a canonical JSON string, as encoding/json
// then CanonicalJSON would write it (invalid UTF-8 becoming U+FFFD), at
// once for the plain strings that IDs and types are.
func appendString(dst []byte, s string) ([]byte, error) {
	plain := true
	for i := 0; i < len(s) && plain; i++ {
		c := s[i]
		plain = c >= 0x20 && c != '"' && c != '\\'
	}
	if plain && utf8.ValidString(s) {
		dst = append(dst, '"')
		dst = append(dst, s...)
		return append(dst, '"'), nil
	}
	b, err := json.Marshal(s)
	if err != nil {
		return nil, err
	}
	c, err := roomdag.CanonicalJSON(b)
	return append(dst, c...), err
}

// RecordHash is the hex sha256 of the record's canonical JSON.
func RecordHash(r storage.ComplianceRecord) (string, error) {
	c, err := Canonical(r)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(c)
	return hex.EncodeToString(sum[:]), nil
}

// Link is sha256(prev || record), over the decoded digests, in hex.
func Link(prev, record string) (string, error) {
	p, err := hex.DecodeString(prev)
	if err != nil || len(p) != sha256.Size {
		return "", fmt.Errorf("compliance: bad hash %q", prev)
	}
	r, err := hex.DecodeString(record)
	if err != nil || len(r) != sha256.Size {
		return "", fmt.Errorf("compliance: bad hash %q", record)
	}
	sum := sha256.Sum256(append(p, r...))
	return hex.EncodeToString(sum[:]), nil
}

// seal fills in r's hashes after prev; r.Payload must be canonical.
func seal(r *storage.ComplianceRecord, prev string) error {
	c, err := canonicalRecord(*r, []byte(r.Payload))
	if err != nil {
		return err
	}
	sum := sha256.Sum256(c)
	rh := hex.EncodeToString(sum[:])
	h, err := Link(prev, rh)
	if err != nil {
		return err
	}
	r.RecordHash, r.PrevHash, r.Hash = rh, prev, h
	return nil
}

// checkpointBody is what a checkpoint signs.
type checkpointBody struct {
	Seq    int64  `json:"seq"`
	Head   string `json:"head"`
	TS     int64  `json:"ts"`
	Server string `json:"server"`
}

// SignCheckpoint signs that the chain had seq records ending in head.
func SignCheckpoint(key roomdag.SigningKey, seq int64, head string, ts int64) (storage.ComplianceCheckpoint, error) {
	b, _ := json.Marshal(checkpointBody{seq, head, ts, string(key.ServerName)})
	signed, err := roomdag.SignJSON(key, b)
	if err != nil {
		return storage.ComplianceCheckpoint{}, err
	}
	var s struct {
		Signatures map[string]map[string]string `json:"signatures"`
	}
	if err := json.Unmarshal(signed, &s); err != nil {
		return storage.ComplianceCheckpoint{}, err
	}
	return storage.ComplianceCheckpoint{Seq: seq, Head: head, TS: ts, KeyID: key.KeyID,
		Signature: s.Signatures[string(key.ServerName)][key.KeyID]}, nil
}

// SignedCheckpoint is a checkpoint as Matrix signed JSON: what a
// manifest carries, checkable with any Matrix signing library against
// the server's key (/_matrix/key/v2/server).
func SignedCheckpoint(server roomdag.ServerName, c storage.ComplianceCheckpoint) json.RawMessage {
	b, _ := json.Marshal(map[string]any{"seq": c.Seq, "head": c.Head, "ts": c.TS, "server": string(server),
		"signatures": map[string]map[string]string{string(server): {c.KeyID: c.Signature}}})
	return b
}

// ErrBadSignature says a checkpoint's signature does not verify.
var ErrBadSignature = errors.New("compliance: checkpoint signature does not verify")

// VerifyCheckpoint checks c's signature by server's key pub.
func VerifyCheckpoint(server roomdag.ServerName, pub ed25519.PublicKey, c storage.ComplianceCheckpoint) error {
	if err := roomdag.VerifyJSON(server, c.KeyID, pub, SignedCheckpoint(server, c)); err != nil {
		return fmt.Errorf("%w: %w", ErrBadSignature, err)
	}
	return nil
}
