package compliance

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// referenceCanonical is the plain definition of a record's canonical
// JSON: the record as an object, through CanonicalJSON.
func referenceCanonical(r storage.ComplianceRecord) ([]byte, error) {
	b, err := json.Marshal(map[string]any{"seq": r.Seq, "ts": r.TS, "kind": r.Kind, "actor": r.Actor, "room": r.Room,
		"payload": json.RawMessage(r.Payload)})
	if err != nil {
		return nil, err
	}
	return roomdag.CanonicalJSON(b)
}

// referencePayload is the plain definition of an event record's payload.
func referencePayload(e storage.ComplianceEvent, removed []byte) ([]byte, error) {
	ev := e.JSON
	if e.Redacted && e.Original != nil {
		ev = e.Original
	}
	p := map[string]any{"event_id": string(e.ID), "type": e.Type, "event": json.RawMessage(ev), "redacted": e.Redacted}
	if e.Redacted && e.Original == nil {
		p["original_lost"] = true
	}
	if e.Type == roomdag.TypeRedaction {
		if target := redactsOf(ev); target != "" {
			p["redacts"] = target
			if removed != nil {
				p["removed"] = json.RawMessage(removed)
			}
		}
	}
	b, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	return roomdag.CanonicalJSON(b)
}

// originals is a Store holding only redacted events' originals.
type originals struct {
	Store
	m map[roomdag.EventID][]byte
}

func (o originals) ComplianceOriginal(_ context.Context, id roomdag.EventID) ([]byte, error) {
	if b, ok := o.m[id]; ok {
		return b, nil
	}
	return nil, storage.ErrNotFound
}

// The archiver writes payloads and hashes records without the generic
// passes through encoding/json and CanonicalJSON: its bytes must be the
// ones those passes give, for every kind of string (escapes, controls,
// non-ASCII, U+2028, invalid UTF-8) and for non-canonical stored JSON.
func TestFastCanonicalMatchesReference(t *testing.T) {
	strs := []string{"", "@alice:example.org", "!room:example.org", `quo"te`, `back\slash`, "tab\tnew\nline\x01",
		"<html>&amp;", "café ☕ 🎉", "line\u2028sep", "bad\xffutf8", "m.room.message"}
	orig := []byte(`{ "content": {"body": "secret <b>", "msgtype":"m.text"}, "type":"m.room.message", "event_id": "$orig" }`)
	store := originals{m: map[roomdag.EventID][]byte{"$orig": orig}}
	a := &Archiver{store: store}
	events := []storage.ComplianceEvent{
		{ID: "$a", Type: "m.room.message", JSON: []byte(`{"type":"m.room.message","content":{"body":"hé\u2028 \"x\" <y>","n":12}}`)},
		{ID: "$orig", Type: "m.room.message", JSON: []byte(`{"type":"m.room.message","content":{}}`), Redacted: true, Original: orig},
		{ID: "$lost", Type: "m.room.message", JSON: []byte(`{"type":"m.room.message","content":{}}`), Redacted: true},
		{ID: "$r", Type: roomdag.TypeRedaction, JSON: []byte(`{"type":"m.room.redaction","redacts":"$orig","content":{}}`)},
		{ID: "$r11", Type: roomdag.TypeRedaction, JSON: []byte(`{"type":"m.room.redaction","content":{"redacts":"$orig"}}`)},
		{ID: "$gone", Type: roomdag.TypeRedaction, JSON: []byte(`{"type":"m.room.redaction","content":{"redacts":"$unknown"}}`)},
		{ID: "$odd\"id\u2028", Type: "weird\ttype", JSON: []byte(`{"a":[1,2,{"z":null,"b":true}]}`)},
	}
	for _, e := range events {
		got, err := a.eventPayload(context.Background(), e)
		if err != nil {
			t.Fatalf("%s: %v", e.ID, err)
		}
		var removed []byte
		if e.Type == roomdag.TypeRedaction && redactsOf(e.JSON) == "$orig" {
			removed = orig
		}
		want, err := referencePayload(e, removed)
		if err != nil {
			t.Fatal(err)
		}
		if got != string(want) {
			t.Errorf("%s payload:\n got %s\nwant %s", e.ID, got, want)
		}
		for _, s := range strs {
			r := storage.ComplianceRecord{Seq: 42, TS: 1764720000123, Kind: s, Actor: s, Room: s, Payload: got}
			want, err := referenceCanonical(r)
			if err != nil {
				t.Fatal(err)
			}
			fast, err := canonicalRecord(r, []byte(got))
			if err != nil || string(fast) != string(want) {
				t.Errorf("record with %q: %v\n got %s\nwant %s", s, err, fast, want)
			}
			if c, err := Canonical(r); err != nil || string(c) != string(want) {
				t.Errorf("Canonical with %q: %v\n got %s\nwant %s", s, err, c, want)
			}
		}
	}
}
