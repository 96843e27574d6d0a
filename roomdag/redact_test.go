package roomdag

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
)

func lookupVersionT(t testing.TB, id string) *RoomVersion {
	t.Helper()
	v, ok := LookupRoomVersion(id)
	if !ok {
		t.Fatalf("no room version %s", id)
	}
	return v
}

// The top-level keys every version keeps, plus the three v11 drops.
const redactTop = `"auth_events":["$a"],"depth":5,"event_id":"$e","hashes":{"sha256":"h"},` +
	`"origin":"o.org","membership":"join","prev_state":[],"origin_server_ts":7,"prev_events":["$p"],` +
	`"room_id":"!r:o.org","sender":"@s:o.org","signatures":{"o.org":{"ed25519:1":"s"}},` +
	`"unsigned":{"age_ts":1},"extra":{"x":1},"redacts":"$top"`

const (
	keptTop10 = `"auth_events":["$a"],"depth":5,"event_id":"$e","hashes":{"sha256":"h"},"membership":"join",` +
		`"origin":"o.org","origin_server_ts":7,"prev_events":["$p"],"prev_state":[],"room_id":"!r:o.org",` +
		`"sender":"@s:o.org","signatures":{"o.org":{"ed25519:1":"s"}}`
	keptTop11 = `"auth_events":["$a"],"depth":5,"event_id":"$e","hashes":{"sha256":"h"},` +
		`"origin_server_ts":7,"prev_events":["$p"],"room_id":"!r:o.org",` +
		`"sender":"@s:o.org","signatures":{"o.org":{"ed25519:1":"s"}}`
)

// redactVariants are the redaction algorithms, each with a version that
// uses it: v1-v5 keep m.room.aliases' aliases, v6 drops that, v8 keeps
// join_rules' allow, v9 join_authorised_via_users_server, v11 is the
// updated algorithm.
var redactVariants = []struct{ name, from, to string }{
	{"original", "1", "5"}, {"no aliases", "6", "7"}, {"allow", "8", "8"}, {"authorised via", "9", "10"}, {"updated", "11", "12"},
}

func TestRedact(t *testing.T) {
	tests := []struct {
		name, typ, stateKey, content string
		// want is the redacted content per variant (redactVariants
		// order); a shorter list repeats its last entry.
		want []string
	}{
		{"message", "m.room.message", "", `{"body":"hi","msgtype":"m.text","m.relates_to":{"rel_type":"m.replace","event_id":"$x"}}`,
			[]string{`{}`}},
		{"member", TypeMember, "@s:o.org",
			`{"membership":"join","displayname":"S","avatar_url":"mxc://a/b","join_authorised_via_users_server":"@a:o.org","reason":"r","third_party_invite":{"display_name":"d","signed":{"mxid":"@s:o.org","token":"t","signatures":{}}}}`,
			[]string{`{"membership":"join"}`, `{"membership":"join"}`, `{"membership":"join"}`,
				`{"join_authorised_via_users_server":"@a:o.org","membership":"join"}`,
				`{"join_authorised_via_users_server":"@a:o.org","membership":"join","third_party_invite":{"signed":{"mxid":"@s:o.org","signatures":{},"token":"t"}}}`}},
		{"member third_party_invite without signed", TypeMember, "@s:o.org", `{"membership":"invite","third_party_invite":{"display_name":"d"}}`,
			[]string{`{"membership":"invite"}`, `{"membership":"invite"}`, `{"membership":"invite"}`, `{"membership":"invite"}`,
				`{"membership":"invite","third_party_invite":{}}`}},
		{"member third_party_invite not an object", TypeMember, "@s:o.org", `{"membership":"invite","third_party_invite":"x"}`,
			[]string{`{"membership":"invite"}`}},
		{"member any value types", TypeMember, "@s:o.org", `{"membership":5,"join_authorised_via_users_server":null}`,
			[]string{`{"membership":5}`, `{"membership":5}`, `{"membership":5}`, `{"join_authorised_via_users_server":null,"membership":5}`}},
		{"create", TypeCreate, "", `{"creator":"@s:o.org","room_version":"10","m.federate":false,"predecessor":{"room_id":"!old:o.org"},"type":"m.space"}`,
			[]string{`{"creator":"@s:o.org"}`, `{"creator":"@s:o.org"}`, `{"creator":"@s:o.org"}`, `{"creator":"@s:o.org"}`,
				`{"creator":"@s:o.org","m.federate":false,"predecessor":{"room_id":"!old:o.org"},"room_version":"10","type":"m.space"}`}},
		{"join rules", TypeJoinRules, "", `{"join_rule":"restricted","allow":[{"type":"m.room_membership","room_id":"!a:o.org"}],"other":1}`,
			[]string{`{"join_rule":"restricted"}`, `{"join_rule":"restricted"}`,
				`{"allow":[{"room_id":"!a:o.org","type":"m.room_membership"}],"join_rule":"restricted"}`}},
		{"power levels", TypePowerLevels, "", `{"ban":50,"events":{"m.room.name":50},"events_default":0,"invite":0,"kick":50,"redact":50,"state_default":50,"users":{"@s:o.org":100},"users_default":0,"notifications":{"room":50},"historical":100}`,
			[]string{`{"ban":50,"events":{"m.room.name":50},"events_default":0,"kick":50,"redact":50,"state_default":50,"users":{"@s:o.org":100},"users_default":0}`,
				`{"ban":50,"events":{"m.room.name":50},"events_default":0,"kick":50,"redact":50,"state_default":50,"users":{"@s:o.org":100},"users_default":0}`,
				`{"ban":50,"events":{"m.room.name":50},"events_default":0,"kick":50,"redact":50,"state_default":50,"users":{"@s:o.org":100},"users_default":0}`,
				`{"ban":50,"events":{"m.room.name":50},"events_default":0,"kick":50,"redact":50,"state_default":50,"users":{"@s:o.org":100},"users_default":0}`,
				`{"ban":50,"events":{"m.room.name":50},"events_default":0,"invite":0,"kick":50,"redact":50,"state_default":50,"users":{"@s:o.org":100},"users_default":0}`}},
		{"history visibility", TypeHistoryVisibility, "", `{"history_visibility":"shared","x":1}`,
			[]string{`{"history_visibility":"shared"}`}},
		{"redaction", TypeRedaction, "", `{"redacts":"$x","reason":"spam"}`,
			[]string{`{}`, `{}`, `{}`, `{}`, `{"redacts":"$x"}`}},
		{"aliases keep theirs before v6", "m.room.aliases", "o.org", `{"aliases":["#a:o.org"],"x":1}`,
			[]string{`{"aliases":["#a:o.org"]}`, `{}`}},
		{"topic", TypeTopic, "", `{"topic":"t"}`, []string{`{}`}},
		{"third party invite", TypeThirdPartyInvite, "tok", `{"display_name":"d","public_key":"k","public_keys":[],"key_validity_url":"u"}`, []string{`{}`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ev := `{` + redactTop + `,"type":"` + tc.typ + `","content":` + tc.content
			if tc.stateKey != "" || tc.typ != "m.room.message" {
				ev += `,"state_key":"` + tc.stateKey + `"`
			}
			ev += `}`
			for i, variant := range redactVariants {
				content := tc.want[min(i, len(tc.want)-1)]
				top := keptTop10
				if variant.name == "updated" {
					top = keptTop11
				}
				want := `{` + top + `,"type":"` + tc.typ + `","content":` + content
				if tc.stateKey != "" || tc.typ != "m.room.message" {
					want += `,"state_key":"` + tc.stateKey + `"`
				}
				want = mustCanonical(t, want+`}`)
				for _, id := range []string{variant.from, variant.to} {
					v := lookupVersionT(t, id)
					got, err := Redact(v, []byte(ev))
					if err != nil {
						t.Fatalf("v%s: %v", id, err)
					}
					if string(got) != want {
						t.Errorf("v%s (%s):\n got %s\nwant %s", id, variant.name, got, want)
					}
					again, err := Redact(v, got)
					if err != nil || !bytes.Equal(again, got) {
						t.Errorf("v%s: redacting twice changed the event: %s, %v", id, again, err)
					}
				}
			}
		})
	}
}

// The original algorithm (v1-v5) keeps numbers that canonical JSON refuses,
// printed as Synapse prints them.
func TestRedactLenientNumbers(t *testing.T) {
	in := `{"type":"m.room.power_levels","state_key":"","content":{"ban":50.0,"kick":"50","users":{"@a:b":1e2},"users_default":12345678901234567890,"x":1.5},"depth":1}`
	want := `{"content":{"ban":50.0,"kick":"50","users":{"@a:b":100.0},"users_default":12345678901234567890},"depth":1,"state_key":"","type":"m.room.power_levels"}`
	for _, id := range []string{"1", "5"} {
		got, err := Redact(lookupVersionT(t, id), []byte(in))
		if err != nil || string(got) != want {
			t.Errorf("v%s: got %s, %v\nwant %s", id, got, err, want)
		}
	}
	if _, err := Redact(lookupVersionT(t, "6"), []byte(in)); !errors.Is(err, ErrEventFormat) {
		t.Errorf("v6 accepted floats: %v", err)
	}
}

func TestRedactEdgeCases(t *testing.T) {
	v11 := lookupVersionT(t, "11")
	for _, tc := range []struct{ name, in, want string }{
		{"no content", `{"type":"m.room.message","sender":"@a:b"}`, `{"content":{},"sender":"@a:b","type":"m.room.message"}`},
		{"no content create v11", `{"type":"m.room.create","state_key":""}`, `{"content":{},"state_key":"","type":"m.room.create"}`},
		{"type not a string", `{"type":1,"content":{"membership":"join"}}`, `{"content":{},"type":1}`},
		{"no type", `{"content":{"membership":"join"}}`, `{"content":{}}`},
		{"escaped keys", `{"typ\u0065":"m.room.member","content":{"m\u0065mbership":"join","m\u00e9":1},"\u0065xtra":1}`,
			`{"content":{"membership":"join"},"type":"m.room.member"}`},
		{"key that only looks kept", `{"type":"m.room.message","content":{},"origin_server_ts ":1,"Type":2}`, `{"content":{},"type":"m.room.message"}`},
		{"unicode kept", `{"type":"m.room.create","content":{"日本":"語\u0001"}}`, "{\"content\":{\"日本\":\"語\\u0001\"},\"type\":\"m.room.create\"}"},
	} {
		got, err := Redact(v11, []byte(tc.in))
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if string(got) != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.name, got, tc.want)
		}
	}
	for _, in := range []string{`[]`, `"x"`, `{"type":"m.room.message","content":[]}`, `{"type":"m.room.create","content":"x"}`, `{"a":1.5}`, `{`, ``} {
		if got, err := Redact(v11, []byte(in)); err == nil {
			t.Errorf("Redact(%s) = %s", in, got)
		} else if !errors.Is(err, ErrEventFormat) {
			t.Errorf("Redact(%s): error %v does not wrap ErrEventFormat", in, err)
		}
	}
}

// naiveRedact is an independent, map-based statement of the algorithm, as
// an oracle for the fuzzer. ev is decoded with encoding/json.
func naiveRedact(v *RoomVersion, ev map[string]any) map[string]any {
	top := []string{"event_id", "type", "room_id", "sender", "state_key", "content", "hashes",
		"signatures", "depth", "prev_events", "auth_events", "origin_server_ts"}
	if !v.UpdatedRedaction {
		top = append(top, "prev_state", "origin", "membership")
	}
	out := map[string]any{}
	for _, k := range top {
		if x, ok := ev[k]; ok {
			out[k] = x
		}
	}
	content, _ := ev["content"].(map[string]any)
	typ, _ := ev["type"].(string)
	allowed := map[string][]string{
		TypeMember:            {"membership"},
		TypeCreate:            {"creator"},
		TypeJoinRules:         {"join_rule"},
		TypePowerLevels:       {"ban", "events", "events_default", "kick", "redact", "state_default", "users", "users_default"},
		TypeHistoryVisibility: {"history_visibility"},
	}
	if v.RedactAliases {
		allowed[TypeAliases] = []string{"aliases"}
	}
	if v.RedactJoinRulesAllow {
		allowed[TypeJoinRules] = append(allowed[TypeJoinRules], "allow")
	}
	if v.RedactAuthorisedVia {
		allowed[TypeMember] = append(allowed[TypeMember], "join_authorised_via_users_server")
	}
	if v.UpdatedRedaction {
		allowed[TypePowerLevels] = append(allowed[TypePowerLevels], "invite")
		allowed[TypeRedaction] = []string{"redacts"}
	}
	kept := map[string]any{}
	if typ == TypeCreate && v.UpdatedRedaction && content != nil {
		kept = content
	}
	for _, k := range allowed[typ] {
		if x, ok := content[k]; ok {
			kept[k] = x
		}
	}
	if tpi, ok := content["third_party_invite"].(map[string]any); ok && typ == TypeMember && v.UpdatedRedaction {
		m := map[string]any{}
		if s, ok := tpi["signed"]; ok {
			m["signed"] = s
		}
		kept["third_party_invite"] = m
	}
	out["content"] = kept
	return out
}

func FuzzRedact(f *testing.F) {
	for _, tc := range specEventVectors {
		f.Add([]byte(tc.in), uint8(0))
	}
	f.Add([]byte(typicalEventPretty), uint8(1))
	for i, c := range []string{
		`{"type":"m.room.member","content":{"membership":"join","third_party_invite":{"signed":{"a":1},"x":2}},"origin":"o"}`,
		`{"type":"m.room.create","content":{"creator":"@a:b","room_version":"11"},"membership":"join"}`,
		`{"type":"m.room.power_levels","content":{"invite":1,"users":{"@a:b":100},"x":1},"prev_state":[]}`,
		`{"type":"m.room.redaction","content":{"redacts":"$x","reason":"r"},"redacts":"$x"}`,
		`{"type":"m.room.join_rules","content":{"join_rule":"restricted","allow":[]}}`,
		`{"type":"m.room.aliases","state_key":"o","content":{"aliases":["#a:o"]},"event_id":"$e:o"}`,
		`{"type":"m.room.power_levels","content":{"ban":50.5,"users":{"@a:b":1e400}},"prev_events":[["$p:o",{"sha256":"x"}]]}`,
		`{"type":"m.room.member","content":{"membership":"join","membership":"leave"}}`,
		`{"typ\u0065":"m.room.history_visibility","content":{"history_visibility":"joined"}}`,
		`{"type":"x"}`, `{"content":[]}`, `[]`,
	} {
		f.Add([]byte(c), uint8(i))
	}
	versions := RoomVersions()
	f.Fuzz(func(t *testing.T, in []byte, which uint8) {
		v := versions[int(which)%len(versions)]
		out, err := Redact(v, in)
		if err != nil {
			if !errors.Is(err, ErrEventFormat) {
				t.Fatalf("error %v does not wrap ErrEventFormat", err)
			}
			return
		}
		if again, err := canonicalJSONFor(v, out); err != nil || !bytes.Equal(again, out) {
			t.Fatalf("output not canonical: %q, %v", out, err)
		}
		if again, err := Redact(v, out); err != nil || !bytes.Equal(again, out) {
			t.Fatalf("not idempotent:\n%q\n%q, %v", out, again, err)
		}
		var ev map[string]any
		if err := json.Unmarshal(in, &ev); err != nil {
			t.Fatalf("accepted input encoding/json rejects: %v", err)
		}
		var got any
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatal(err)
		}
		// Round-trip the oracle's result so both sides hold the same
		// dynamic types.
		b, _ := json.Marshal(naiveRedact(v, ev))
		var want any
		if err := json.Unmarshal(b, &want); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("v%s:\n  in %s\n got %s\nwant %s", v.ID, in, out, b)
		}
		if _, err := ReferenceHash(v, in); err != nil {
			t.Fatalf("ReferenceHash: %v", err)
		}
		// v1, v2 IDs are the event's event_id, which may be missing.
		if _, err := EventIDFromJSON(v, in); err != nil && v.EventFormat != EventFormatV1 {
			t.Fatalf("EventIDFromJSON: %v", err)
		}
	})
}
