package roomdag

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"testing"
)

func TestContentHash(t *testing.T) {
	// Spec: appendices, "Event Signing" vectors.
	for _, tc := range []struct{ name, in, want string }{
		{"minimal", specEventVectors[0].in, "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"},
		{"redactable", specEventVectors[1].in, "onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := AddContentHash(lookupVersionT(t, "11"), []byte(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			var ev struct {
				Hashes   map[string]string
				Unsigned map[string]int64
			}
			if err := json.Unmarshal(got, &ev); err != nil {
				t.Fatal(err)
			}
			if ev.Hashes["sha256"] != tc.want {
				t.Fatalf("sha256 = %q, want %q", ev.Hashes["sha256"], tc.want)
			}
			if ev.Unsigned["age_ts"] != 1000000 {
				t.Fatalf("unsigned lost: %s", got)
			}
			if c, _ := CanonicalJSON(got); !bytes.Equal(c, got) {
				t.Fatalf("not canonical: %s", got)
			}
			if err := CheckContentHash(lookupVersionT(t, "11"), got); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestContentHashCovers(t *testing.T) {
	base, err := AddContentHash(lookupVersionT(t, "11"), []byte(`{"type":"m.room.message","content":{"body":"a"},"sender":"@a:b","hashes":{"other":"x"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(base, []byte(`"other":"x"`)) {
		t.Fatalf("other hashes dropped: %s", base)
	}
	sum := func(b []byte) string {
		var ev struct{ Hashes map[string]string }
		if err := json.Unmarshal(b, &ev); err != nil {
			t.Fatal(err)
		}
		return ev.Hashes["sha256"]
	}
	// Hashing is stable: rehashing, adding signatures or unsigned, or a
	// different layout changes nothing.
	same := []string{
		string(base),
		strings.Replace(string(base), `{"body"`, `{ "body"`, 1),
		strings.Replace(string(base), `"content"`, `"unsigned":{"age":1},"signatures":{"b":{"ed25519:1":"s"}},"content"`, 1),
	}
	for _, s := range same {
		again, err := AddContentHash(lookupVersionT(t, "11"), []byte(s))
		if err != nil {
			t.Fatal(err)
		}
		if sum(again) != sum(base) {
			t.Errorf("hash changed for %s", s)
		}
		if err := CheckContentHash(lookupVersionT(t, "11"), []byte(s)); err != nil {
			t.Errorf("CheckContentHash(%s): %v", s, err)
		}
	}

	padded := sum(base) + "="
	bad := []struct{ name, ev string }{
		{"content", strings.Replace(string(base), `"a"`, `"b"`, 1)},
		{"top level", strings.Replace(string(base), `"@a:b"`, `"@a:c"`, 1)},
		{"key added", strings.Replace(string(base), `"content"`, `"origin":"b","content"`, 1)},
		{"no hashes", `{"type":"x"}`},
		{"hashes not object", `{"hashes":"x"}`},
		{"no sha256", `{"hashes":{}}`},
		{"sha256 not string", `{"hashes":{"sha256":1}}`},
		{"sha256 not base64", `{"hashes":{"sha256":"***"}}`},
		{"sha256 too short", `{"hashes":{"sha256":"` + sum(base)[:40] + `"}}`},
	}
	for _, tc := range bad {
		if err := CheckContentHash(lookupVersionT(t, "11"), []byte(tc.ev)); !errors.Is(err, ErrContentHash) {
			t.Errorf("%s: CheckContentHash = %v, want ErrContentHash", tc.name, err)
		}
	}
	if err := CheckContentHash(lookupVersionT(t, "11"), []byte(strings.Replace(string(base), sum(base), padded, 1))); err != nil {
		t.Errorf("padded base64 hash: %v", err)
	}
	for _, in := range []string{`[]`, `{`, `{"hashes":"x"}`, `{"a":1e5}`} {
		if got, err := AddContentHash(lookupVersionT(t, "11"), []byte(in)); !errors.Is(err, ErrEventFormat) {
			t.Errorf("AddContentHash(%s) = %s, %v", in, got, err)
		}
	}
	if err := CheckContentHash(lookupVersionT(t, "11"), []byte(`{"a":1e5}`)); !errors.Is(err, ErrEventFormat) {
		t.Errorf("CheckContentHash on bad JSON: %v", err)
	}
}

// stdlibCanonical encodes decoded JSON with encoding/json, which sorts map
// keys by byte order and, without HTML escaping, produces canonical JSON
// for ASCII documents with integers. It is the independent side of the
// cross-checks below.
func stdlibCanonical(t testing.TB, v any) []byte {
	t.Helper()
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

func TestReferenceHashEventID(t *testing.T) {
	k := specSigningKey(t)
	events := []string{
		typicalEventPretty,
		`{"type":"m.room.member","state_key":"@a:b","sender":"@a:b","room_id":"!r:b","content":{"membership":"join","displayname":"A <&>"},"origin":"b","depth":1,"prev_events":[],"auth_events":[],"origin_server_ts":1}`,
		`{"type":"m.room.create","state_key":"","sender":"@a:b","content":{"room_version":"12","additional_creators":["@c:d"]},"depth":1,"prev_events":[],"auth_events":[],"origin_server_ts":1}`,
	}
	for _, id := range []string{"3", "4", "5", "6", "7", "8", "9", "10", "11", "12"} {
		v := lookupVersionT(t, id)
		// rooms/v3: standard base64; rooms/v4 and later: URL-safe.
		enc, form := base64.RawURLEncoding, regexp.MustCompile(`^\$[A-Za-z0-9_-]{43}$`)
		if id == "3" {
			enc, form = base64.RawStdEncoding, regexp.MustCompile(`^\$[A-Za-z0-9+/]{43}$`)
		}
		for _, in := range events {
			hashed, err := AddContentHash(v, []byte(in))
			if err != nil {
				t.Fatal(err)
			}
			signed, err := SignEvent(v, k, hashed)
			if err != nil {
				t.Fatal(err)
			}
			h, err := ReferenceHash(v, signed)
			if err != nil {
				t.Fatal(err)
			}

			// Independent computation: decode, redact with the
			// map-based oracle, drop signatures and unsigned, encode
			// with encoding/json, hash.
			d := json.NewDecoder(bytes.NewReader(signed))
			d.UseNumber()
			var ev map[string]any
			if err := d.Decode(&ev); err != nil {
				t.Fatal(err)
			}
			red := naiveRedact(v, ev)
			delete(red, "signatures")
			delete(red, "unsigned")
			if want := sha256.Sum256(stdlibCanonical(t, red)); h != want {
				t.Errorf("v%s: reference hash differs from the independent computation for %s", id, in)
			}

			eid, err := EventIDFromJSON(v, signed)
			if err != nil {
				t.Fatal(err)
			}
			if want := "$" + enc.EncodeToString(h[:]); string(eid) != want {
				t.Errorf("event ID %s, want %s", eid, want)
			}
			if !form.MatchString(string(eid)) {
				t.Errorf("event ID %q is not the v%s format", eid, id)
			}
			// Neither signatures nor unsigned nor redactable content
			// affect the ID.
			for _, variant := range [][]byte{
				bytes.Replace(signed, []byte(`"signatures":{`), []byte(`"signatures":{"x":{"ed25519:1":"y"},`), 1),
				cjWith(signed, "unsigned", []byte(`{"age":1}`)),
				hashed,
			} {
				if other, err := EventIDFromJSON(v, variant); err != nil || other != eid {
					t.Errorf("v%s: ID changed to %s (%v) for %s", id, other, err, variant)
				}
			}
			if !bytes.Contains(signed, []byte(`"depth":`)) {
				t.Fatal("no depth")
			}
			moved := regexp.MustCompile(`"depth":\d+`).ReplaceAll(signed, []byte(`"depth":99`))
			if other, _ := EventIDFromJSON(v, moved); other == eid {
				t.Errorf("v%s: depth does not affect the ID", id)
			}
		}
	}
}

func TestReferenceHashVersionsDiffer(t *testing.T) {
	// origin is kept by v10's redaction and dropped by v11's, so the same
	// JSON has different IDs.
	ev := []byte(`{"type":"m.room.message","content":{},"origin":"b","sender":"@a:b"}`)
	id10, err10 := EventIDFromJSON(lookupVersionT(t, "10"), ev)
	id11, err11 := EventIDFromJSON(lookupVersionT(t, "11"), ev)
	id12, err12 := EventIDFromJSON(lookupVersionT(t, "12"), ev)
	if err10 != nil || err11 != nil || err12 != nil {
		t.Fatal(err10, err11, err12)
	}
	if id10 == id11 || id11 != id12 {
		t.Errorf("IDs v10 %s, v11 %s, v12 %s", id10, id11, id12)
	}
	if _, err := EventIDFromJSON(lookupVersionT(t, "11"), []byte(`{"content":"x"}`)); !errors.Is(err, ErrEventFormat) {
		t.Errorf("bad content: %v", err)
	}
}

func BenchmarkHashAndSignEvent(b *testing.B) {
	k := specSigningKey(b)
	v := lookupVersionT(b, "11")
	ev, err := CanonicalJSON([]byte(typicalEventPretty))
	if err != nil {
		b.Fatal(err)
	}
	ev = cjWithout(ev, "unsigned")
	b.SetBytes(int64(len(ev)))
	b.ReportAllocs()
	for b.Loop() {
		hashed, err := AddContentHash(v, ev)
		if err != nil {
			b.Fatal(err)
		}
		signed, err := SignEvent(v, k, hashed)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := EventIDFromJSON(v, signed); err != nil {
			b.Fatal(err)
		}
	}
}
