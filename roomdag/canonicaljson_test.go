package roomdag

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// Spec: appendices, "Canonical JSON", "Examples".
var specCanonicalVectors = []struct{ in, want string }{
	{`{}`, `{}`},
	{`{
    "one": 1,
    "two": "Two"
}`, `{"one":1,"two":"Two"}`},
	{`{
    "b": "2",
    "a": "1"
}`, `{"a":"1","b":"2"}`},
	{`{"b":"2","a":"1"}`, `{"a":"1","b":"2"}`},
	{`{
    "auth": {
        "success": true,
        "mxid": "@john.doe:example.com",
        "profile": {
            "display_name": "John Doe",
            "three_pids": [
                {
                    "medium": "email",
                    "address": "john.doe@example.org"
                },
                {
                    "medium": "msisdn",
                    "address": "123456789"
                }
            ]
        }
    }
}`, `{"auth":{"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe","three_pids":[{"address":"john.doe@example.org","medium":"email"},{"address":"123456789","medium":"msisdn"}]},"success":true}}`},
	{`{
    "a": "日本語"
}`, `{"a":"日本語"}`},
	{`{
    "本": 2,
    "日": 1
}`, `{"日":1,"本":2}`},
	{`{
    "a": "\u65E5"
}`, `{"a":"日"}`},
	{`{
    "a": null
}`, `{"a":null}`},
}

func TestCanonicalJSONSpecVectors(t *testing.T) {
	for _, tc := range specCanonicalVectors {
		got, err := CanonicalJSON([]byte(tc.in))
		if err != nil {
			t.Errorf("CanonicalJSON(%s): %v", tc.in, err)
			continue
		}
		if string(got) != tc.want {
			t.Errorf("CanonicalJSON(%s)\n got %s\nwant %s", tc.in, got, tc.want)
		}
	}
	// The spec's last example maps {"a": -0, "b": 1e10} to
	// {"a":0,"b":10000000000}. We keep -0 -> 0 but reject the exponent, as
	// room versions 6+ forbid anything but integers and Synapse rejects the
	// float that 1e10 parses to.
	if got, err := CanonicalJSON([]byte(`{"a": -0}`)); err != nil || string(got) != `{"a":0}` {
		t.Errorf(`CanonicalJSON({"a": -0}) = %s, %v; want {"a":0}`, got, err)
	}
	if _, err := CanonicalJSON([]byte(`{"a": -0, "b": 1e10}`)); !errors.Is(err, ErrCanonicalJSON) {
		t.Errorf("exponent accepted: %v", err)
	}
}

func TestCanonicalJSON(t *testing.T) {
	tests := []struct {
		name, in, want string // want "" means rejected
	}{
		{"scalar", ` 1 `, `1`},
		{"string top", `"x"`, `"x"`},
		{"literals", `[true,false,null]`, `[true,false,null]`},
		{"array order kept", `[3, 1, 2]`, `[3,1,2]`},
		{"empty array", `[ ]`, `[]`},
		{"empty object spaced", "{ \t\r\n}", `{}`},
		{"nested sort", `{"b":{"d":1,"c":[{"f":1,"e":2}]},"a":0}`, `{"a":0,"b":{"c":[{"e":2,"f":1}],"d":1}}`},
		{"max int", `9007199254740991`, `9007199254740991`},
		{"min int", `-9007199254740991`, `-9007199254740991`},
		{"zero", `0`, `0`},
		{"negative", `-12`, `-12`},
		{"too big", `9007199254740992`, ``},
		{"too small", `-9007199254740992`, ``},
		{"huge", `123456789012345678901234567890`, ``},
		{"float", `1.0`, ``},
		{"exponent", `1e2`, ``},
		{"Exponent", `1E2`, ``},
		{"leading zero", `01`, ``},
		{"minus alone", `-`, ``},
		{"minus letter", `-a`, ``},
		{"plus", `+1`, ``},
		{"short escapes", `"\b\f\n\r\t"`, `"\b\f\n\r\t"`},
		{"long forms of short escapes", `"\u0008\u000C\u000a\u000D\u0009"`, `"\b\f\n\r\t"`},
		{"other controls lowercase", `"\u0001\u001F\u0000"`, `"\u0001\u001f\u0000"`},
		{"quote and backslash", `"\"\\"`, `"\"\\"`},
		{"unescaped slash", `"\/"`, `"/"`},
		{"unicode escapes decoded", `"\u00e9\u2028\u007f"`, "\"é\u2028\x7f\""},
		{"html not escaped", `"<>&\u003c"`, `"<>&<"`},
		{"surrogate pair", `"\ud83d\ude00"`, `"😀"`},
		{"surrogate pair upper", `"\uD83D\uDE00"`, `"😀"`},
		{"lone high surrogate", `"\ud83d"`, ``},
		{"lone high surrogate then char", `"\ud83dx"`, ``},
		{"high then non-low", `"\ud83d\u0041"`, ``},
		{"lone low surrogate", `"\ude00"`, ``},
		{"bad hex", `"\u12g4"`, ``},
		{"short hex", `"\u12"`, ``},
		{"bad escape", `"\x"`, ``},
		{"raw control", "\"a\x01\"", ``},
		{"raw newline", "\"a\n\"", ``},
		{"raw DEL ok", "\"\x7f\"", "\"\x7f\""},
		{"invalid utf8", "\"\xff\"", ``},
		{"truncated utf8", "\"\xe6\x97\"", ``},
		{"utf8 surrogate", "\"\xed\xa0\x80\"", ``},
		{"unterminated string", `"abc`, ``},
		{"escape at end", `"abc\`, ``},
		{"keys by code point not UTF-16", `{"😀":1,"ﬁ":2}`, `{"ﬁ":2,"😀":1}`},
		{"escaped key sorted unescaped", `{"b":1,"\u0061":2}`, `{"a":2,"b":1}`},
		{"key needing escape", `{"\n":1," ":2}`, `{"\n":1," ":2}`},
		{"duplicate key", `{"a":1,"a":2}`, ``},
		{"duplicate key not adjacent", `{"a":1,"b":2,"a":3}`, ``},
		{"duplicate key via escape", `{"a":1,"\u0061":2}`, ``},
		{"duplicate nested", `{"x":{"a":1,"a":1}}`, ``},
		{"same key in sibling objects", `[{"a":1},{"a":2}]`, `[{"a":1},{"a":2}]`},
		{"trailing comma object", `{"a":1,}`, ``},
		{"trailing comma array", `[1,]`, ``},
		{"missing colon", `{"a" 1}`, ``},
		{"non-string key", `{1:1}`, ``},
		{"single quotes", `{'a':1}`, ``},
		{"unterminated object", `{"a":1`, ``},
		{"unterminated array", `[1`, ``},
		{"trailing data", `{} {}`, ``},
		{"empty", ``, ``},
		{"spaces only", `   `, ``},
		{"bad literal", `tru`, ``},
		{"NaN", `NaN`, ``},
		{"bom", "\ufeff{}", ``},
		{"deep ok", strings.Repeat("[", maxJSONDepth) + strings.Repeat("]", maxJSONDepth), strings.Repeat("[", maxJSONDepth) + strings.Repeat("]", maxJSONDepth)},
		{"too deep", strings.Repeat("[", maxJSONDepth+1) + strings.Repeat("]", maxJSONDepth+1), ``},
		{"too deep objects", strings.Repeat(`{"a":`, maxJSONDepth+1) + "1" + strings.Repeat("}", maxJSONDepth+1), ``},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := CanonicalJSON([]byte(tc.in))
			if tc.want == "" {
				if err == nil {
					t.Fatalf("accepted, gave %s", got)
				}
				if !errors.Is(err, ErrCanonicalJSON) {
					t.Fatalf("error %v does not wrap ErrCanonicalJSON", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Fatalf("got %s, want %s", got, tc.want)
			}
			again, err := CanonicalJSON(got)
			if err != nil || !bytes.Equal(again, got) {
				t.Fatalf("not idempotent: %s, %v", again, err)
			}
		})
	}
}

func TestCanonicalJSONDoesNotModifyInput(t *testing.T) {
	in := []byte(`{"b":1,"a":{"d":"\u0041","c":2}}`)
	orig := string(in)
	if _, err := CanonicalJSON(in); err != nil {
		t.Fatal(err)
	}
	if string(in) != orig {
		t.Fatalf("input changed to %s", in)
	}
}

func TestCanonicalJSONMarshal(t *testing.T) {
	got, err := marshalCanonical(map[string]any{"z": "<&>", "a": []int{1, 2}, "m": map[string]string{"y": "\u2028", "x": ""}})
	if err != nil {
		t.Fatal(err)
	}
	if want := "{\"a\":[1,2],\"m\":{\"x\":\"\",\"y\":\"\u2028\"},\"z\":\"<&>\"}"; string(got) != want {
		t.Fatalf("got %s, want %s", got, want)
	}
	if _, err := marshalCanonical(map[string]float64{"a": 1.5}); err == nil {
		t.Fatal("float accepted")
	}
}

// TestCanonicalJSONHelpers covers the editing helpers on canonical objects,
// including keys that are escaped in canonical form.
func TestCanonicalJSONHelpers(t *testing.T) {
	obj, err := CanonicalJSON([]byte(`{"b":{"x":[1,"}"]},"\n":"nl","d":"\"}","a":1}`))
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := cjGet(obj, "\n"); !ok || string(v) != `"nl"` {
		t.Errorf(`cjGet("\n") = %s, %v`, v, ok)
	}
	if v, ok := cjGet(obj, "b"); !ok || string(v) != `{"x":[1,"}"]}` {
		t.Errorf(`cjGet("b") = %s, %v`, v, ok)
	}
	if v, ok := cjGet(obj, "d"); !ok || string(v) != `"\"}"` {
		t.Errorf(`cjGet("d") = %s, %v`, v, ok)
	}
	if _, ok := cjGet(obj, "c"); ok {
		t.Error(`cjGet("c") found`)
	}
	if got := cjWithout(obj, "b", "\n"); string(got) != `{"a":1,"d":"\"}"}` {
		t.Errorf("cjWithout = %s", got)
	}
	for _, tc := range []struct{ key, val, want string }{
		{"c", `true`, `{"\n":"nl","a":1,"b":{"x":[1,"}"]},"c":true,"d":"\"}"}`},
		{"a", `2`, `{"\n":"nl","a":2,"b":{"x":[1,"}"]},"d":"\"}"}`},
		{"\t", `0`, `{"\t":0,"\n":"nl","a":1,"b":{"x":[1,"}"]},"d":"\"}"}`},
		{"\n", `0`, `{"\n":0,"a":1,"b":{"x":[1,"}"]},"d":"\"}"}`},
		{"z", `{}`, `{"\n":"nl","a":1,"b":{"x":[1,"}"]},"d":"\"}","z":{}}`},
	} {
		got := cjWith(obj, tc.key, []byte(tc.val))
		if string(got) != tc.want {
			t.Errorf("cjWith(%q) = %s, want %s", tc.key, got, tc.want)
		}
		if again, err := CanonicalJSON(got); err != nil || !bytes.Equal(again, got) {
			t.Errorf("cjWith(%q) is not canonical: %v", tc.key, err)
		}
	}
	if got := cjWith([]byte(`{}`), "k", []byte(`1`)); string(got) != `{"k":1}` {
		t.Errorf("cjWith on {} = %s", got)
	}
	if s, ok := cjString([]byte(`"a\"\\\n\u0001é"`)); !ok || s != "a\"\\\n\x01é" {
		t.Errorf("cjString = %q, %v", s, ok)
	}
}

func FuzzCanonicalJSON(f *testing.F) {
	for _, tc := range specCanonicalVectors {
		f.Add([]byte(tc.in))
	}
	for _, s := range []string{
		`{"a": -0, "b": 1e10}`, `"\ud83d\ude00"`, `{"b":1,"\u0061":2}`, `[1,{"x":"\u0000"}]`,
		`{"a":1,"a":2}`, "\"\xff\"", `{"😀":1,"ﬁ":2}`, `9007199254740992`, typicalEventPretty,
	} {
		f.Add([]byte(s))
	}
	f.Add([]byte(`{"a":1.5e300,"b":[0.1,-0.0,12345678901234567890],"a":2}`))
	v1 := lookupVersionT(f, "1")
	f.Fuzz(func(t *testing.T, in []byte) {
		// The lenient rules (v1-v5) accept more, agree where the strict
		// ones accept, and are stable.
		lenient, lerr := canonicalJSONFor(v1, in)
		if lerr == nil {
			if again, err := canonicalJSONFor(v1, lenient); err != nil || !bytes.Equal(again, lenient) {
				t.Fatalf("lenient not idempotent: %q, %q, %v", lenient, again, err)
			}
			var x, y any
			if json.Unmarshal(in, &x) != nil || json.Unmarshal(lenient, &y) != nil || !reflect.DeepEqual(x, y) {
				t.Fatalf("lenient meaning changed:\n in %q\nout %q", in, lenient)
			}
		} else if !errors.Is(lerr, ErrCanonicalJSON) {
			t.Fatalf("lenient error %v does not wrap ErrCanonicalJSON", lerr)
		}
		out, err := CanonicalJSON(in)
		if err != nil {
			if !errors.Is(err, ErrCanonicalJSON) {
				t.Fatalf("error %v does not wrap ErrCanonicalJSON", err)
			}
			return
		}
		if lerr != nil || !bytes.Equal(lenient, out) {
			t.Fatalf("strict %q, lenient %q, %v", out, lenient, lerr)
		}
		again, err := CanonicalJSON(out)
		if err != nil {
			t.Fatalf("output %q rejected: %v", out, err)
		}
		if !bytes.Equal(again, out) {
			t.Fatalf("not idempotent:\n%q\n%q", out, again)
		}
		var a, b any
		if err := json.Unmarshal(in, &a); err != nil {
			t.Fatalf("accepted input encoding/json rejects: %v", err)
		}
		if err := json.Unmarshal(out, &b); err != nil {
			t.Fatalf("output is not JSON: %v\n%q", err, out)
		}
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("meaning changed:\n in %q\nout %q", in, out)
		}
		inString := false
		for i := 0; i < len(out); i++ {
			switch c := out[i]; {
			case inString && c == '\\':
				i++
			case c == '"':
				inString = !inString
			case !inString && (c == ' ' || c == '\t' || c == '\r' || c == '\n'):
				t.Fatalf("whitespace outside strings: %q", out)
			}
		}
	})
}

// typicalEventPretty is a ~500-byte m.room.message PDU as another server
// might send it: indented, keys in no particular order.
const typicalEventPretty = `{
    "type": "m.room.message",
    "room_id": "!OGEhHVWSdvArJzumhm:matrix.org",
    "sender": "@alice:example.org",
    "content": {
        "msgtype": "m.text",
        "body": "Hello, world! Ça va? 日本語 \u2764",
        "format": "org.matrix.custom.html",
        "formatted_body": "<b>Hello</b>, world! Ça va? 日本語 \u2764",
        "m.mentions": {"user_ids": ["@bob:example.org"]}
    },
    "origin_server_ts": 1700000000000,
    "depth": 4242,
    "prev_events": ["$Bkr4fgfNyCEfLRBB2zeemZmNizBTpoCvsfJhQ2p39Jk"],
    "auth_events": [
        "$N2ZQqzQxvo8rbc7dfGe5ybsxb0Ul5lWG9MZDNSLOj-8",
        "$fOSjzBX8NNgJy48srAIK8IYj8AHkDW-kZGVW3ibbVts",
        "$pKdDxQWZTNzBycJ3aJfSzqpGJPeVBvB1gp0QN9tBCR4"
    ],
    "unsigned": {"age_ts": 1700000000000}
}`

func BenchmarkCanonicalJSON(b *testing.B) {
	canon, err := CanonicalJSON([]byte(typicalEventPretty))
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name string
		in   []byte
	}{{"pretty", []byte(typicalEventPretty)}, {"canonical", canon}} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(bc.in)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := CanonicalJSON(bc.in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// Versions before v6 hash what Synapse's Python json module prints: the
// outputs below were made with json.dumps(json.loads(in)) in CPython 3.
func TestCanonicalJSONLenient(t *testing.T) {
	v1, v6 := lookupVersionT(t, "1"), lookupVersionT(t, "6")
	for _, tc := range []struct{ in, want string }{
		{`50.5`, `50.5`}, {`1e2`, `100.0`}, {`1E2`, `100.0`}, {`-0.0`, `-0.0`}, {`0.0`, `0.0`},
		{`1e16`, `1e+16`}, {`1e15`, `1000000000000000.0`}, {`123456789012345678.0`, `1.2345678901234568e+17`},
		{`0.0001`, `0.0001`}, {`0.00001`, `1e-05`}, {`1.5e-7`, `1.5e-07`}, {`-2.5e+20`, `-2.5e+20`},
		{`5.114698E4`, `51146.98`}, {`3.141592653589793`, `3.141592653589793`}, {`0.1`, `0.1`}, {`1e22`, `1e+22`},
		{`9007199254740993`, `9007199254740993`}, {`-0`, `0`}, {`12345678901234567890`, `12345678901234567890`},
		{`-12345678901234567890`, `-12345678901234567890`},
		{`2.2250738585072014e-308`, `2.2250738585072014e-308`}, {`5e-324`, `5e-324`}, {`1e-400`, `0.0`},
		{`1.7976931348623157e308`, `1.7976931348623157e+308`}, {`0.30000000000000004`, `0.30000000000000004`},
		{`1234567.0`, `1234567.0`}, {`123e-2`, `1.23`}, {`7`, `7`},
		{`{"a":1,"b":2,"a":3}`, `{"a":3,"b":2}`},
		{`{"b":[1.5,{"x":2,"x":1e1}],"a":0}`, `{"a":0,"b":[1.5,{"x":10.0}]}`},
	} {
		got, err := canonicalJSONFor(v1, []byte(tc.in))
		if err != nil || string(got) != tc.want {
			t.Errorf("lenient %s = %s, %v; want %s", tc.in, got, err, tc.want)
			continue
		}
		if again, err := canonicalJSONFor(v1, got); err != nil || !bytes.Equal(again, got) {
			t.Errorf("lenient %s not stable: %s, %v", got, again, err)
		}
	}
	for _, in := range []string{`1e400`, `-1e400`, `1.`, `.5`, `1e`, `1e+`, `01`, `NaN`, `Infinity`, `"\ud800"`} {
		if got, err := canonicalJSONFor(v1, []byte(in)); err == nil {
			t.Errorf("lenient %s = %s, want an error", in, got)
		}
	}
	// From v6 the strict rules apply.
	for _, in := range []string{`1.5`, `9007199254740992`, `{"a":1,"a":2}`} {
		if got, err := canonicalJSONFor(v6, []byte(in)); !errors.Is(err, ErrCanonicalJSON) {
			t.Errorf("v6 %s = %s, %v", in, got, err)
		}
	}
}
