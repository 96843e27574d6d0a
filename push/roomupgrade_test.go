package push

import (
	"encoding/json"
	"slices"
	"testing"
)

func TestCopyRoomRules(t *testing.T) {
	const old, repl = "!old:x", "!new:x"
	roomIs := func(room string) []Condition { return []Condition{match("room_id", room)} }
	var u UserRules
	for _, r := range []struct {
		kind string
		rule Rule
	}{
		{"room", Rule{RuleID: old, Actions: []any{"notify"}}},
		{"room", Rule{RuleID: "!other:x", Actions: []any{"notify"}}},
		{"override", Rule{RuleID: old, Conditions: roomIs(old), Actions: []any{}}},                                   // Element's "mute"
		{"override", Rule{RuleID: "keyword", Conditions: []Condition{match("content.body", "x")}, Actions: []any{}}}, // not about a room
		{"underride", Rule{RuleID: "mine", Conditions: append(roomIs(old), memberCountIs("2")), Actions: []any{"notify"}}},
		{"underride", Rule{RuleID: "off-" + old, Conditions: roomIs(old), Actions: []any{"notify"}}},
		{"content", Rule{RuleID: "word", Pattern: old, Actions: []any{"notify"}}}, // content rules name no room
	} {
		if err := u.Put(r.kind, r.rule, "", ""); err != nil {
			t.Fatal(err)
		}
	}
	if err := u.SetEnabled("@a:x", "underride", "off-"+old, false); err != nil {
		t.Fatal(err)
	}
	before, _ := json.Marshal(u)

	if !u.CopyRoomRules(old, repl) {
		t.Fatal("nothing copied")
	}
	ids := func(kind string) []string {
		var out []string
		for _, r := range u.Rules[kind] {
			out = append(out, r.RuleID)
		}
		return out
	}
	for kind, want := range map[string][]string{
		// Each copy sits just before its original; disabled rules stay behind.
		"room":      {"!other:x", repl, old},
		"override":  {"keyword", repl, old},
		"underride": {"off-" + old, repl, "mine"},
		"content":   {"word"},
	} {
		if got := ids(kind); !slices.Equal(got, want) {
			t.Errorf("%s rules %v, want %v", kind, got, want)
		}
	}
	for _, kind := range []string{"override", "underride"} {
		for _, r := range u.Rules[kind] {
			if r.RuleID == repl && (r.Conditions[0].Pattern == nil || *r.Conditions[0].Pattern != repl) {
				t.Errorf("%s copy still matches %v", kind, r.Conditions[0].Pattern)
			}
		}
	}
	if c := u.Rules["underride"][1].Conditions; len(c) != 2 || c[1].Kind != "room_member_count" {
		t.Errorf("other conditions of the copy: %+v", c)
	}

	// Copying again changes nothing, and neither does a room with no rules.
	again, _ := json.Marshal(u)
	if u.CopyRoomRules(old, repl) || u.CopyRoomRules("!none:x", repl) {
		t.Error("a second copy reported a change")
	}
	if after, _ := json.Marshal(u); string(after) != string(again) || string(before) == string(again) {
		t.Errorf("rules changed on a second copy:\n%s\n%s", again, after)
	}
}

func TestCopyRoomRulesStopsAtLimit(t *testing.T) {
	var u UserRules
	for i := range MaxRules {
		room := "!r" + string(rune('a'+i%26)) + string(rune('a'+i/26)) + ":x"
		if err := u.Put("room", Rule{RuleID: room, Actions: []any{}}, "", ""); err != nil {
			t.Fatal(err)
		}
	}
	if u.CopyRoomRules("!raa:x", "!new:x") {
		t.Error("copied past MaxRules")
	}
}
