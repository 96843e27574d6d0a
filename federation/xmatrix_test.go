package federation

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/persistentchat/homeserver/roomdag"
)

// specKey is the key of the spec's signing test vectors (appendices,
// "Cryptographic Test Vectors").
func specKey(t testing.TB, server roomdag.ServerName) roomdag.SigningKey {
	t.Helper()
	k, err := roomdag.ParseSigningKey(server, []byte("ed25519 1 YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1\n"))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestParseXMatrix(t *testing.T) {
	want := XMatrix{Origin: "origin.hs.example.com", Destination: "destination.hs.example.com", Key: "ed25519:key1", Sig: "ABCDEF"}
	ok := []struct{ name, h string }{
		{"spec example", `X-Matrix origin="origin.hs.example.com",destination="destination.hs.example.com",key="ed25519:key1",sig="ABCDEF"`},
		{"spaces and tabs around commas (v1.11)", "X-Matrix origin=\"origin.hs.example.com\" ,\tdestination=\"destination.hs.example.com\"\t, key=\"ed25519:key1\" , sig=\"ABCDEF\""},
		{"several spaces after the scheme", `X-Matrix    origin="origin.hs.example.com",destination="destination.hs.example.com",key="ed25519:key1",sig="ABCDEF"`},
		{"unquoted tokens, colons unquoted (older senders)", `X-Matrix origin=origin.hs.example.com,destination=destination.hs.example.com,key=ed25519:key1,sig=ABCDEF`},
		{"names and scheme in any case, any order", `x-matrix SIG="ABCDEF",Key="ed25519:key1",DESTINATION="destination.hs.example.com",Origin="origin.hs.example.com"`},
		{"backslash escapes", `X-Matrix origin="origin.hs.example.\com",destination="destination.hs.example.com",key="ed25519:\k\e\y1",sig="ABCDEF"`},
		{"unknown parameters ignored", `X-Matrix origin="origin.hs.example.com",foo="b\"a,r",destination="destination.hs.example.com",key="ed25519:key1",sig="ABCDEF",baz=1`},
		{"empty list elements", `X-Matrix origin="origin.hs.example.com",,destination="destination.hs.example.com",key="ed25519:key1",sig="ABCDEF",`},
		{"spaces around =", `X-Matrix origin = "origin.hs.example.com",destination= "destination.hs.example.com",key ="ed25519:key1",sig="ABCDEF"`},
	}
	for _, tc := range ok {
		got, err := ParseXMatrix(tc.h)
		if err != nil || got != want {
			t.Errorf("%s: got %+v, %v", tc.name, got, err)
		}
	}
	// destination is optional, for servers older than v1.3.
	got, err := ParseXMatrix(`X-Matrix origin=a.test:8448,key="ed25519:k",sig="s"`)
	if err != nil || got.Destination != "" || got.Origin != "a.test:8448" {
		t.Errorf("without destination: %+v, %v", got, err)
	}
	bad := []struct{ name, h string }{
		{"empty", ``},
		{"other scheme", `Bearer abc`},
		{"scheme only", `X-Matrix`},
		{"scheme glued", `X-Matrixorigin="a.test",key="ed25519:k",sig="s"`},
		{"no origin", `X-Matrix key="ed25519:k",sig="s"`},
		{"no key", `X-Matrix origin="a.test",sig="s"`},
		{"no sig", `X-Matrix origin="a.test",key="ed25519:k"`},
		{"origin not a server name", `X-Matrix origin="a test",key="ed25519:k",sig="s"`},
		{"destination not a server name", `X-Matrix origin="a.test",destination="b/c",key="ed25519:k",sig="s"`},
		{"duplicate parameter", `X-Matrix origin="a.test",origin="b.test",key="ed25519:k",sig="s"`},
		{"duplicate in another case", `X-Matrix origin="a.test",ORIGIN="b.test",key="ed25519:k",sig="s"`},
		{"unterminated quote", `X-Matrix origin="a.test,key="ed25519:k",sig="s`},
		{"no comma", `X-Matrix origin="a.test" key="ed25519:k",sig="s"`},
		{"no value", `X-Matrix origin=,key="ed25519:k",sig="s"`},
		{"no =", `X-Matrix origin,key="ed25519:k",sig="s"`},
		{"control character in quotes", "X-Matrix origin=\"a.test\x01\",key=\"ed25519:k\",sig=\"s\""},
		{"dangling escape", `X-Matrix origin="a.test",key="ed25519:k",sig="s\`},
		{"too long", `X-Matrix origin="a.test",key="ed25519:k",sig="` + strings.Repeat("A", maxAuthHeader) + `"`},
	}
	for _, tc := range bad {
		if got, err := ParseXMatrix(tc.h); !errors.Is(err, ErrAuthorization) {
			t.Errorf("%s: parsed as %+v, %v", tc.name, got, err)
		}
	}
}

// The header a request is sent with parses back to what was signed.
func TestXMatrixStringRoundTrip(t *testing.T) {
	for _, x := range []XMatrix{
		{Origin: "a.test", Destination: "[::1]:8448", Key: "ed25519:a_Bc", Sig: "c2ln"},
		{Origin: "127.0.0.1:8481", Key: `odd"key\`, Sig: "s"},
	} {
		got, err := ParseXMatrix(x.String())
		if err != nil || got != x {
			t.Errorf("%s parsed as %+v, %v", x, got, err)
		}
	}
}

// The signature covers the canonical JSON of {content, destination,
// method, origin, uri} (spec: "Request Authentication", step 1): signed
// here by hand from the spec's test key, it must match SignRequest's and
// verify with VerifyRequest.
func TestSignRequestMatchesSpec(t *testing.T) {
	key := specKey(t, "origin.hs.example.com")
	body := []byte(`{"b": [1, 2], "a": "é<>&"}`)
	x, err := SignRequest(key, "destination.hs.example.com", "POST", "/_matrix/federation/v1/send/1?x=1&y=2", body)
	if err != nil {
		t.Fatal(err)
	}
	canonical := `{"content":{"a":"é<>&","b":[1,2]},"destination":"destination.hs.example.com","method":"POST",` +
		`"origin":"origin.hs.example.com","uri":"/_matrix/federation/v1/send/1?x=1&y=2"}`
	seed, _ := base64.RawStdEncoding.DecodeString("YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1")
	wantSig := base64.RawStdEncoding.EncodeToString(ed25519.Sign(ed25519.NewKeyFromSeed(seed), []byte(canonical)))
	if x.Sig != wantSig || x.Key != "ed25519:1" || x.Origin != "origin.hs.example.com" || x.Destination != "destination.hs.example.com" {
		t.Fatalf("signed %+v, want sig %s", x, wantSig)
	}
	pub := key.Public()
	if err := VerifyRequest(x, pub, "destination.hs.example.com", "POST", "/_matrix/federation/v1/send/1?x=1&y=2", body); err != nil {
		t.Fatalf("verify: %v", err)
	}
	// Any part of the request changed breaks the signature.
	for _, tc := range []struct {
		name, dest, method, uri, body string
	}{
		{"destination", "other.example.com", "POST", "/_matrix/federation/v1/send/1?x=1&y=2", string(body)},
		{"method", "destination.hs.example.com", "PUT", "/_matrix/federation/v1/send/1?x=1&y=2", string(body)},
		{"uri", "destination.hs.example.com", "POST", "/_matrix/federation/v1/send/1?x=1", string(body)},
		{"body", "destination.hs.example.com", "POST", "/_matrix/federation/v1/send/1?x=1&y=2", `{"a":"é<>&","b":[1,3]}`},
		{"no body", "destination.hs.example.com", "POST", "/_matrix/federation/v1/send/1?x=1&y=2", ``},
	} {
		if err := VerifyRequest(x, pub, roomdag.ServerName(tc.dest), tc.method, tc.uri, []byte(tc.body)); !errors.Is(err, roomdag.ErrSignature) {
			t.Errorf("%s changed: %v", tc.name, err)
		}
	}
	// A request without a body has no content key.
	x, err = SignRequest(key, "destination.hs.example.com", "GET", "/_matrix/federation/v1/version", nil)
	if err != nil {
		t.Fatal(err)
	}
	canonical = `{"destination":"destination.hs.example.com","method":"GET","origin":"origin.hs.example.com","uri":"/_matrix/federation/v1/version"}`
	if want := base64.RawStdEncoding.EncodeToString(ed25519.Sign(ed25519.NewKeyFromSeed(seed), []byte(canonical))); x.Sig != want {
		t.Errorf("GET signed %s, want %s", x.Sig, want)
	}
}

// Bodies may carry events of room versions 1-5 with floats, which other
// servers sign as Python prints them: such a request still verifies.
func TestRequestWithFloatsVerifies(t *testing.T) {
	key := specKey(t, "a.test")
	body := []byte(`{"pdus":[{"content":{"n":1.50,"big":1e20}}]}`)
	x, err := SignRequest(key, "b.test", "PUT", "/_matrix/federation/v1/send/t", body)
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyRequest(x, key.Public(), "b.test", "PUT", "/_matrix/federation/v1/send/t", []byte(`{"pdus":[{"content":{"big":100000000000000000000.0,"n":1.5}}]}`)); err != nil {
		t.Errorf("same numbers written otherwise: %v", err)
	}
	if err := VerifyRequest(x, key.Public(), "b.test", "PUT", "/_matrix/federation/v1/send/t", []byte(`{"pdus":[{"content":{"n":1.6,"big":1e20}}]}`)); !errors.Is(err, roomdag.ErrSignature) {
		t.Errorf("other number: %v", err)
	}
}

// FuzzParseXMatrix: the parser never panics, and what it accepts it
// formats into a header that parses back to the same values.
func FuzzParseXMatrix(f *testing.F) {
	for _, s := range []string{
		`X-Matrix origin="origin.hs.example.com",destination="destination.hs.example.com",key="ed25519:key1",sig="ABCDEF"`,
		"X-Matrix origin=a.test:8448 ,\tkey=ed25519:k , sig=s",
		`x-matrix Key="a\"b",origin="[::1]:1",sig="\\"`,
		`X-Matrix origin="a`,
		`X-Matrix ,,,`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		x, err := ParseXMatrix(h)
		if err != nil {
			if !errors.Is(err, ErrAuthorization) {
				t.Fatalf("error does not wrap ErrAuthorization: %v", err)
			}
			return
		}
		if x.Origin == "" || x.Key == "" || x.Sig == "" {
			t.Fatalf("accepted %q without a required parameter: %+v", h, x)
		}
		if len(x.String()) > maxAuthHeader {
			return // quoting made it longer than the parser takes
		}
		again, err := ParseXMatrix(x.String())
		if err != nil || again != x {
			t.Fatalf("%q -> %+v -> %q -> %+v, %v", h, x, x.String(), again, err)
		}
	})
}
