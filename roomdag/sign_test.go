package roomdag

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"testing"
)

// Spec: appendices, "Cryptographic Test Vectors".
const specSeed = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1"

func specSigningKey(t testing.TB) SigningKey {
	t.Helper()
	k, err := ParseSigningKey("domain", []byte("ed25519 1 "+specSeed+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func mustCanonical(t testing.TB, s string) string {
	t.Helper()
	c, err := CanonicalJSON([]byte(s))
	if err != nil {
		t.Fatalf("CanonicalJSON(%s): %v", s, err)
	}
	return string(c)
}

func TestSignJSONSpecVectors(t *testing.T) {
	k := specSigningKey(t)
	for _, tc := range []struct{ in, want string }{
		{`{}`, `{
    "signatures": {
        "domain": {
            "ed25519:1": "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ"
        }
    }
}`},
		{`{
    "one": 1,
    "two": "Two"
}`, `{
    "one": 1,
    "signatures": {
        "domain": {
            "ed25519:1": "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw"
        }
    },
    "two": "Two"
}`},
	} {
		got, err := SignJSON(k, []byte(tc.in))
		if err != nil {
			t.Fatal(err)
		}
		if want := mustCanonical(t, tc.want); string(got) != want {
			t.Errorf("SignJSON(%s)\n got %s\nwant %s", tc.in, got, want)
		}
		if err := VerifyJSON("domain", "ed25519:1", k.Public(), got); err != nil {
			t.Errorf("VerifyJSON: %v", err)
		}
	}
}

// The event vectors predate v11 and keep the top-level "origin" when
// redacting, so they hold for room version 10 (and would for 1-9).
var specEventVectors = []struct{ name, in, want string }{
	{"minimal", `{
    "room_id": "!x:domain",
    "sender": "@a:domain",
    "origin": "domain",
    "origin_server_ts": 1000000,
    "signatures": {},
    "hashes": {},
    "type": "X",
    "content": {},
    "prev_events": [],
    "auth_events": [],
    "depth": 3,
    "unsigned": {
        "age_ts": 1000000
    }
}`, `{
    "auth_events": [],
    "content": {},
    "depth": 3,
    "hashes": {
        "sha256": "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"
    },
    "origin": "domain",
    "origin_server_ts": 1000000,
    "prev_events": [],
    "room_id": "!x:domain",
    "sender": "@a:domain",
    "signatures": {
        "domain": {
            "ed25519:1": "KxwGjPSDEtvnFgU00fwFz+l6d2pJM6XBIaMEn81SXPTRl16AqLAYqfIReFGZlHi5KLjAWbOoMszkwsQma+lYAg"
        }
    },
    "type": "X",
    "unsigned": {
        "age_ts": 1000000
    }
}`},
	{"redactable", `{
    "content": {
        "body": "Here is the message content"
    },
    "event_id": "$0:domain",
    "origin": "domain",
    "origin_server_ts": 1000000,
    "type": "m.room.message",
    "room_id": "!r:domain",
    "sender": "@u:domain",
    "signatures": {},
    "unsigned": {
        "age_ts": 1000000
    }
}`, `{
    "content": {
        "body": "Here is the message content"
    },
    "event_id": "$0:domain",
    "hashes": {
        "sha256": "onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g"
    },
    "origin": "domain",
    "origin_server_ts": 1000000,
    "type": "m.room.message",
    "room_id": "!r:domain",
    "sender": "@u:domain",
    "signatures": {
        "domain": {
            "ed25519:1": "Wm+VzmOUOz08Ds+0NTWb1d4CZrVsJSikkeRxh6aCcUwu6pNC78FunoD7KNWzqFn241eYHYMGCA5McEiVPdhzBA"
        }
    },
    "unsigned": {
        "age_ts": 1000000
    }
}`},
}

func TestSignEventSpecVectors(t *testing.T) {
	k := specSigningKey(t)
	v10, _ := LookupRoomVersion("10")
	for _, tc := range specEventVectors {
		t.Run(tc.name, func(t *testing.T) {
			hashed, err := AddContentHash(lookupVersionT(t, "11"), []byte(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			got, err := SignEvent(v10, k, hashed)
			if err != nil {
				t.Fatal(err)
			}
			if want := mustCanonical(t, tc.want); string(got) != want {
				t.Fatalf("\n got %s\nwant %s", got, want)
			}
			if err := CheckContentHash(lookupVersionT(t, "11"), got); err != nil {
				t.Errorf("CheckContentHash: %v", err)
			}
			if err := VerifyEventSignature(v10, "domain", "ed25519:1", k.Public(), got); err != nil {
				t.Errorf("VerifyEventSignature: %v", err)
			}
		})
	}
}

func TestSignJSONKeepsOtherSignaturesAndUnsigned(t *testing.T) {
	k := specSigningKey(t)
	in := `{"a":1,"unsigned":{"age":5},"signatures":{"other.org":{"ed25519:x":"abc"},"domain":{"ed25519:0":"old","ed25519:1":"stale"}}}`
	got, err := SignJSON(k, []byte(in))
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Unsigned   map[string]int
		Signatures map[string]map[string]string
	}
	if err := json.Unmarshal(got, &m); err != nil {
		t.Fatal(err)
	}
	if m.Unsigned["age"] != 5 {
		t.Errorf("unsigned lost: %s", got)
	}
	if m.Signatures["other.org"]["ed25519:x"] != "abc" || m.Signatures["domain"]["ed25519:0"] != "old" {
		t.Errorf("other signatures lost: %s", got)
	}
	if s := m.Signatures["domain"]["ed25519:1"]; s == "stale" || len(s) != 86 {
		t.Errorf("signature not replaced: %q", s)
	}
	if err := VerifyJSON("domain", "ed25519:1", k.Public(), got); err != nil {
		t.Error(err)
	}
	// Neither unsigned nor other signatures are covered.
	changed := strings.Replace(string(got), `"age":5`, `"age":6`, 1)
	changed = strings.Replace(changed, `"abc"`, `"abd"`, 1)
	if err := VerifyJSON("domain", "ed25519:1", k.Public(), []byte(changed)); err != nil {
		t.Errorf("unsigned or other signatures covered: %v", err)
	}
}

func TestSignJSONRejects(t *testing.T) {
	k := specSigningKey(t)
	for _, in := range []string{`[]`, `"x"`, `{"signatures":[]}`, `{"signatures":{"domain":"x"}}`, `{"a":1.5}`, `{`} {
		if got, err := SignJSON(k, []byte(in)); err == nil {
			t.Errorf("SignJSON(%s) = %s", in, got)
		}
	}
	if _, err := SignJSON(SigningKey{ServerName: "domain", KeyID: "ed25519:1"}, []byte(`{}`)); err == nil {
		t.Error("signed with the zero key")
	}
}

func TestSignVerifyJSON(t *testing.T) {
	k := specSigningKey(t)
	signed, err := SignJSON(k, []byte(`{"one":1,"two":"Two","unsigned":{"x":1}}`))
	if err != nil {
		t.Fatal(err)
	}
	sig := "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw"
	other, _ := GenerateSigningKey("domain", bytes.NewReader(bytes.Repeat([]byte{7}, 64)))
	tests := []struct {
		name   string
		server ServerName
		keyID  string
		pub    ed25519.PublicKey
		obj    string
		ok     bool
	}{
		{"good", "domain", "ed25519:1", k.Public(), string(signed), true},
		{"pretty and reordered", "domain", "ed25519:1", k.Public(), `{ "two": "Two", "signatures": {"domain": {"ed25519:1": "` + sig + `"}}, "one": 1 }`, true},
		{"padded base64", "domain", "ed25519:1", k.Public(), `{"one":1,"two":"Two","signatures":{"domain":{"ed25519:1":"` + sig + `=="}}}`, true},
		{"unsigned added", "domain", "ed25519:1", k.Public(), `{"one":1,"two":"Two","unsigned":{"y":2},"signatures":{"domain":{"ed25519:1":"` + sig + `"}}}`, true},
		{"content changed", "domain", "ed25519:1", k.Public(), `{"one":2,"two":"Two","signatures":{"domain":{"ed25519:1":"` + sig + `"}}}`, false},
		{"key added", "domain", "ed25519:1", k.Public(), `{"one":1,"two":"Two","three":3,"signatures":{"domain":{"ed25519:1":"` + sig + `"}}}`, false},
		{"wrong key", "domain", "ed25519:1", other.Public(), string(signed), false},
		{"wrong server", "other", "ed25519:1", k.Public(), string(signed), false},
		{"wrong key ID", "domain", "ed25519:2", k.Public(), string(signed), false},
		{"unknown algorithm", "domain", "curve25519:1", k.Public(), string(signed), false},
		{"short public key", "domain", "ed25519:1", k.Public()[:31], string(signed), false},
		{"nil public key", "domain", "ed25519:1", nil, string(signed), false},
		{"truncated signature", "domain", "ed25519:1", k.Public(), `{"one":1,"two":"Two","signatures":{"domain":{"ed25519:1":"` + sig[:80] + `"}}}`, false},
		{"not base64", "domain", "ed25519:1", k.Public(), `{"one":1,"two":"Two","signatures":{"domain":{"ed25519:1":"!` + sig[1:] + `"}}}`, false},
		{"signature not string", "domain", "ed25519:1", k.Public(), `{"one":1,"two":"Two","signatures":{"domain":{"ed25519:1":1}}}`, false},
		{"server entry not object", "domain", "ed25519:1", k.Public(), `{"one":1,"two":"Two","signatures":{"domain":"x"}}`, false},
		{"signatures not object", "domain", "ed25519:1", k.Public(), `{"one":1,"two":"Two","signatures":[]}`, false},
		{"no signatures", "domain", "ed25519:1", k.Public(), `{"one":1,"two":"Two"}`, false},
		{"not an object", "domain", "ed25519:1", k.Public(), `[]`, false},
		{"not JSON", "domain", "ed25519:1", k.Public(), `{`, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := VerifyJSON(tc.server, tc.keyID, tc.pub, []byte(tc.obj))
			if tc.ok && err != nil {
				t.Fatal(err)
			}
			if !tc.ok {
				if err == nil {
					t.Fatal("verified")
				}
				if !errors.Is(err, ErrSignature) && !errors.Is(err, ErrCanonicalJSON) {
					t.Fatalf("error %v wraps neither ErrSignature nor ErrCanonicalJSON", err)
				}
			}
		})
	}
}

func TestSignEventVerifiesAfterRedaction(t *testing.T) {
	k := specSigningKey(t)
	for _, id := range []string{"10", "11", "12"} {
		v, _ := LookupRoomVersion(id)
		hashed, err := AddContentHash(v, []byte(typicalEventPretty))
		if err != nil {
			t.Fatal(err)
		}
		signed, err := SignEvent(v, k, hashed)
		if err != nil {
			t.Fatal(err)
		}
		if err := VerifyEventSignature(v, "domain", "ed25519:1", k.Public(), signed); err != nil {
			t.Errorf("v%s: %v", id, err)
		}
		redacted, err := Redact(v, signed)
		if err != nil {
			t.Fatal(err)
		}
		if err := VerifyEventSignature(v, "domain", "ed25519:1", k.Public(), redacted); err != nil {
			t.Errorf("v%s redacted: %v", id, err)
		}
		// The signature covers what redaction keeps, not the body.
		edited := bytes.Replace(signed, []byte("Hello, world!"), []byte("Goodbye"), 1)
		if err := VerifyEventSignature(v, "domain", "ed25519:1", k.Public(), edited); err != nil {
			t.Errorf("v%s: content is covered by the signature: %v", id, err)
		}
		if err := CheckContentHash(lookupVersionT(t, "11"), edited); !errors.Is(err, ErrContentHash) {
			t.Errorf("v%s: edited content passes the hash check: %v", id, err)
		}
		moved := bytes.Replace(signed, []byte(`"depth":4242`), []byte(`"depth":4243`), 1)
		if err := VerifyEventSignature(v, "domain", "ed25519:1", k.Public(), moved); !errors.Is(err, ErrSignature) {
			t.Errorf("v%s: depth is not covered by the signature: %v", id, err)
		}
	}
}

func TestSigningKeyFile(t *testing.T) {
	k := specSigningKey(t)
	if k.ServerName != "domain" || k.KeyID != "ed25519:1" {
		t.Fatalf("parsed %v", k)
	}
	// The spec's seed has non-zero trailing bits in its last base64
	// character; our encoding is the canonical one of the same 32 bytes.
	seed, _ := base64.RawStdEncoding.DecodeString(specSeed)
	want := "ed25519 1 " + base64.RawStdEncoding.EncodeToString(seed) + "\n"
	if got := string(k.Marshal()); got != want {
		t.Fatalf("Marshal = %q, want %q", got, want)
	}
	again, err := ParseSigningKey("domain", k.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again.Public(), k.Public()) || again.KeyID != k.KeyID {
		t.Fatal("round trip changed the key")
	}
	// The public key of the spec's seed, as other implementations print it.
	if pub := base64.RawStdEncoding.EncodeToString(k.Public()); pub != "XGX0JRS2Af3be3knz2fBiRbApjm2Dh61gXDJA8kcJNI" {
		t.Fatalf("public key %q", pub)
	}
	if got := string(k.Marshal()); got != "ed25519 1 YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA0\n" {
		t.Fatalf("Marshal = %q", got)
	}

	for _, tc := range []struct{ name, text string }{
		{"empty", ""},
		{"blank lines", "\n  \n"},
		{"two fields", "ed25519 " + specSeed},
		{"four fields", "ed25519 1 " + specSeed + " x"},
		{"algorithm", "curve25519 1 " + specSeed},
		{"version chars", "ed25519 a:b " + specSeed},
		{"short seed", "ed25519 1 " + specSeed[:40]},
		{"not base64", "ed25519 1 " + strings.Repeat("*", 43)},
	} {
		if _, err := ParseSigningKey("domain", []byte(tc.text)); err == nil {
			t.Errorf("%s: accepted %q", tc.name, tc.text)
		}
	}
	// Synapse keeps older keys on further lines; the first one signs.
	multi := "\ned25519 a_new " + specSeed + "\ned25519 a_old " + strings.Repeat("A", 43) + "\n"
	if k2, err := ParseSigningKey("domain", []byte(multi)); err != nil || k2.KeyID != "ed25519:a_new" {
		t.Errorf("multi-line file: %v, %v", k2, err)
	}
	padded := "ed25519 1 " + base64.StdEncoding.EncodeToString(seed)
	if _, err := ParseSigningKey("domain", []byte(padded)); err != nil {
		t.Errorf("padded seed: %v", err)
	}
	if _, err := ParseSigningKey("bad name!", []byte(want)); err == nil {
		t.Error("bad server name accepted")
	}
}

func TestSigningKeyGenerate(t *testing.T) {
	rnd := bytes.NewReader(bytes.Repeat([]byte{0xff, 0x01, 0x3d, 0x3e, 0x80}, 20))
	k, err := GenerateSigningKey("example.org:8448", rnd)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^ed25519:a_[A-Za-z0-9]{4}$`).MatchString(k.KeyID) {
		t.Fatalf("key ID %q", k.KeyID)
	}
	// The seed takes the first 32 bytes; the ID then reads 0x3d (61) -> '9',
	// 0x3e (62 mod 62) -> 'a', 0x80 (128 mod 62 = 4) -> 'e', 0xff is
	// rejected (>= 248), 0x01 -> 'b'.
	if k.KeyID != "ed25519:a_9aeb" {
		t.Errorf("key ID %q", k.KeyID)
	}
	back, err := ParseSigningKey(k.ServerName, k.Marshal())
	if err != nil || !bytes.Equal(back.Public(), k.Public()) || back.KeyID != k.KeyID {
		t.Fatalf("round trip: %v, %v", back, err)
	}
	signed, err := SignJSON(k, []byte(`{"x":1}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyJSON(k.ServerName, k.KeyID, k.Public(), signed); err != nil {
		t.Fatal(err)
	}
	if _, err := GenerateSigningKey("example.org", bytes.NewReader(make([]byte, 10))); err == nil {
		t.Error("short random source accepted")
	}
	if _, err := GenerateSigningKey("", rnd); err == nil {
		t.Error("empty server name accepted")
	}
}

// TestSigningKeyNeverPrinted checks every way a key might be printed or
// logged, alone or inside a struct.
func TestSigningKeyNeverPrinted(t *testing.T) {
	k := specSigningKey(t)
	priv := k.privateKey()
	secrets := []string{
		specSeed[:20],
		base64.RawStdEncoding.EncodeToString(priv)[:20],
		fmt.Sprintf("%x", []byte(priv[:8])),
		fmt.Sprintf("%v", []byte(priv[:4])[1:]),
		fmt.Sprint(int(priv[0]), " ", int(priv[1])),
	}
	type holder struct {
		Name string
		key  SigningKey
		Key  SigningKey
		Ptr  *SigningKey
	}
	h := holder{Name: "h", key: k, Key: k, Ptr: &k}
	var outputs []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%T"} {
		outputs = append(outputs, fmt.Sprintf(verb, k), fmt.Sprintf(verb, &k), fmt.Sprintf(verb, h), fmt.Sprintf(verb, []SigningKey{k}))
	}
	outputs = append(outputs, k.String(), k.GoString(), fmt.Sprint(k), fmt.Sprintln(h))
	j, _ := json.Marshal(h)
	outputs = append(outputs, string(j))
	var logs bytes.Buffer
	slog.New(slog.NewTextHandler(&logs, nil)).Info("x", "key", k, "holder", h)
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("x", "key", k, "holder", h)
	outputs = append(outputs, logs.String())
	for _, out := range outputs {
		for _, s := range secrets {
			if strings.Contains(out, s) {
				t.Errorf("secret %q printed in %q", s, out)
			}
		}
	}
	if s := fmt.Sprint(k); s != "SigningKey(domain ed25519:1)" {
		t.Errorf("fmt.Sprint = %q", s)
	}
}

// Versions before v6 sign and verify events holding numbers canonical JSON
// refuses (kept by redaction in power levels).
func TestSignEventLenientNumbers(t *testing.T) {
	k := specSigningKey(t)
	in := []byte(`{"type":"m.room.power_levels","state_key":"","event_id":"$pl:domain","sender":"@a:domain","room_id":"!r:domain",
		"content":{"users":{"@a:domain":100.0},"ban":"50","users_default":12345678901234567890},
		"prev_events":[],"auth_events":[],"depth":1,"origin_server_ts":1}`)
	for _, id := range []string{"1", "3", "5"} {
		v := lookupVersionT(t, id)
		hashed, err := AddContentHash(v, in)
		if err != nil {
			t.Fatalf("v%s: %v", id, err)
		}
		signed, err := SignEvent(v, k, hashed)
		if err != nil {
			t.Fatalf("v%s: %v", id, err)
		}
		if !bytes.Contains(signed, []byte(`"@a:domain":100.0`)) {
			t.Errorf("v%s: number not kept as Synapse prints it: %s", id, signed)
		}
		if err := VerifyEventSignature(v, "domain", k.KeyID, k.Public(), signed); err != nil {
			t.Errorf("v%s: %v", id, err)
		}
		if err := CheckContentHash(v, signed); err != nil {
			t.Errorf("v%s: %v", id, err)
		}
		if _, err := NewEventFromJSON(v, signed); err != nil {
			t.Errorf("v%s: %v", id, err)
		}
	}
	if _, err := AddContentHash(lookupVersionT(t, "6"), in); !errors.Is(err, ErrEventFormat) {
		t.Errorf("v6 hashed a float: %v", err)
	}
}
