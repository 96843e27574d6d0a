package federation

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/persistentchat/homeserver/roomdag"
)

// Request authentication: every federation request carries an
// "Authorization: X-Matrix ..." header with the origin's signature over
// the canonical JSON of {method, uri, origin, destination, content}
// (server-server API, "Request Authentication").

// ErrAuthorization wraps every reason an Authorization header is not a
// usable X-Matrix header.
var ErrAuthorization = errors.New("bad X-Matrix authorization")

// XMatrix is a parsed X-Matrix Authorization header.
type XMatrix struct {
	Origin roomdag.ServerName
	// Destination is empty when the sender left it out, which the spec
	// lets receivers accept from servers older than v1.3.
	Destination roomdag.ServerName
	// Key is the key ID, with its algorithm: "ed25519:abc".
	Key string
	// Sig is the signature, unpadded base64 as sent.
	Sig string
}

// maxAuthHeader bounds the header parsed: real ones are a few hundred
// bytes (two server names of at most 255, a key ID and 86 bytes of
// signature).
const maxAuthHeader = 4096

// ParseXMatrix parses an Authorization header value with the X-Matrix
// scheme. The grammar is RFC 9110 section 11.4's, as the spec asks: the
// scheme (case-insensitive), one or more spaces, then name=value pairs
// separated by commas with optional spaces and tabs around them; names
// are case-insensitive; values are tokens or quoted strings with
// backslash escapes; for older senders, unquoted values may hold colons.
// Unknown parameters are ignored; a parameter given twice is an error
// (which one counts would be ambiguous). origin, key and sig are
// required; destination is optional (v1.3).
func ParseXMatrix(h string) (XMatrix, error) {
	var x XMatrix
	if len(h) > maxAuthHeader {
		return x, fmt.Errorf("%w: header too long", ErrAuthorization)
	}
	scheme, rest, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "X-Matrix") {
		return x, fmt.Errorf("%w: not the X-Matrix scheme", ErrAuthorization)
	}
	params := map[string]string{}
	p := authParser{s: rest}
	p.skip(" ")
	for {
		p.skip(" \t")
		if p.done() {
			break
		}
		if p.peek() == ',' { // empty list elements are allowed (RFC 9110, 5.6.1)
			p.i++
			continue
		}
		name := strings.ToLower(p.token(false))
		if name == "" {
			return x, fmt.Errorf("%w: expected a parameter name at %d", ErrAuthorization, p.i)
		}
		p.skip(" \t")
		if p.done() || p.peek() != '=' {
			return x, fmt.Errorf("%w: parameter %q has no value", ErrAuthorization, name)
		}
		p.i++
		p.skip(" \t")
		var val string
		if !p.done() && p.peek() == '"' {
			v, err := p.quoted()
			if err != nil {
				return x, err
			}
			val = v
		} else {
			val = p.token(true)
			if val == "" {
				return x, fmt.Errorf("%w: parameter %q has no value", ErrAuthorization, name)
			}
		}
		if _, dup := params[name]; dup {
			return x, fmt.Errorf("%w: parameter %q given twice", ErrAuthorization, name)
		}
		params[name] = val
		p.skip(" \t")
		if p.done() {
			break
		}
		if p.peek() != ',' {
			return x, fmt.Errorf("%w: expected a comma at %d", ErrAuthorization, p.i)
		}
		p.i++
	}
	origin, err := roomdag.ParseServerName(params["origin"])
	if err != nil {
		return x, fmt.Errorf("%w: origin %q is not a server name", ErrAuthorization, params["origin"])
	}
	x.Origin = origin
	if d, ok := params["destination"]; ok {
		dest, err := roomdag.ParseServerName(d)
		if err != nil {
			return x, fmt.Errorf("%w: destination %q is not a server name", ErrAuthorization, d)
		}
		x.Destination = dest
	}
	x.Key = params["key"]
	if x.Key == "" {
		return x, fmt.Errorf("%w: no key", ErrAuthorization)
	}
	// The spec's list calls it "signature" but every implementation, and
	// the spec's own example, sends "sig".
	x.Sig = params["sig"]
	if x.Sig == "" {
		return x, fmt.Errorf("%w: no sig", ErrAuthorization)
	}
	return x, nil
}

// authParser walks an Authorization header.
type authParser struct {
	s string
	i int
}

func (p *authParser) done() bool { return p.i >= len(p.s) }
func (p *authParser) peek() byte { return p.s[p.i] }

func (p *authParser) skip(set string) {
	for p.i < len(p.s) && strings.IndexByte(set, p.s[p.i]) >= 0 {
		p.i++
	}
}

// token reads an RFC 9110 token; value also allows ':' (older senders
// leave server names with ports unquoted).
func (p *authParser) token(value bool) string {
	start := p.i
	for p.i < len(p.s) && (isTChar(p.s[p.i]) || value && p.s[p.i] == ':') {
		p.i++
	}
	return p.s[start:p.i]
}

// quoted reads a quoted-string from its opening quote, unescaping
// backslash pairs.
func (p *authParser) quoted() (string, error) {
	p.i++ // the opening quote
	var b strings.Builder
	for p.i < len(p.s) {
		c := p.s[p.i]
		switch {
		case c == '"':
			p.i++
			return b.String(), nil
		case c == '\\':
			if p.i+1 >= len(p.s) || !isQuotedPairChar(p.s[p.i+1]) {
				return "", fmt.Errorf("%w: bad escape in a quoted value", ErrAuthorization)
			}
			b.WriteByte(p.s[p.i+1])
			p.i += 2
		case c == '\t' || c >= 0x20 && c != 0x7f:
			b.WriteByte(c)
			p.i++
		default:
			return "", fmt.Errorf("%w: control character in a quoted value", ErrAuthorization)
		}
	}
	return "", fmt.Errorf("%w: unterminated quoted value", ErrAuthorization)
}

// isTChar: RFC 9110 section 5.6.2.
func isTChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// isQuotedPairChar: what may follow a backslash (RFC 9110 section 5.6.4).
func isQuotedPairChar(c byte) bool { return c == '\t' || c >= 0x20 && c != 0x7f }

// String formats the header as the spec asks senders to for older
// servers: one space after the scheme, lower-case names, quoted values,
// no spaces around commas. Server names, key IDs and base64 hold neither
// quotes nor backslashes; should a value hold one, it is escaped.
func (x XMatrix) String() string {
	var b strings.Builder
	b.WriteString("X-Matrix ")
	param := func(name, val string) {
		if b.Len() > len("X-Matrix ") {
			b.WriteByte(',')
		}
		b.WriteString(name)
		b.WriteString(`="`)
		for i := 0; i < len(val); i++ {
			if val[i] == '"' || val[i] == '\\' {
				b.WriteByte('\\')
			}
			b.WriteByte(val[i])
		}
		b.WriteByte('"')
	}
	param("origin", string(x.Origin))
	if x.Destination != "" {
		param("destination", string(x.Destination))
	}
	param("key", x.Key)
	param("sig", x.Sig)
	return b.String()
}

// requestObject is the object a request signature covers. content is
// the request body, nil for a request without one.
func requestObject(method, uri string, origin, dest roomdag.ServerName, content []byte) (map[string]any, error) {
	obj := map[string]any{"method": method, "uri": uri, "origin": origin, "destination": dest}
	if len(content) > 0 {
		if !json.Valid(content) {
			return nil, fmt.Errorf("%w: request body is not JSON", roomdag.ErrCanonicalJSON)
		}
		obj["content"] = json.RawMessage(content)
	}
	return obj, nil
}

// SignRequest returns the X-Matrix header with which key's server sends
// a request to dest. uri is the request target: the path from /_matrix
// with its query string, as sent. content is the JSON body, nil for none.
func SignRequest(key roomdag.SigningKey, dest roomdag.ServerName, method, uri string, content []byte) (XMatrix, error) {
	obj, err := requestObject(method, uri, key.ServerName, dest, content)
	if err != nil {
		return XMatrix{}, err
	}
	raw, err := json.Marshal(obj)
	if err != nil {
		return XMatrix{}, err
	}
	signed, err := roomdag.SignJSONLenient(key, raw)
	if err != nil {
		return XMatrix{}, err
	}
	var out struct {
		Signatures map[roomdag.ServerName]map[string]string `json:"signatures"`
	}
	if err := json.Unmarshal(signed, &out); err != nil {
		return XMatrix{}, err
	}
	return XMatrix{Origin: key.ServerName, Destination: dest, Key: key.KeyID, Sig: out.Signatures[key.ServerName][key.KeyID]}, nil
}

// VerifyRequest checks x's signature over a request received by dest
// with pub, the public key x.Key of x.Origin. It does not check that
// x.Destination is dest (the caller answers that with its own error) but
// covers dest in the signed object, as the sender did. The error wraps
// roomdag.ErrSignature, or roomdag.ErrCanonicalJSON for a body that
// cannot be made canonical.
func VerifyRequest(x XMatrix, pub ed25519.PublicKey, dest roomdag.ServerName, method, uri string, content []byte) error {
	if _, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(x.Sig, "=")); err != nil {
		return fmt.Errorf("%w: sig is not base64", roomdag.ErrSignature)
	}
	obj, err := requestObject(method, uri, x.Origin, dest, content)
	if err != nil {
		return err
	}
	obj["signatures"] = map[roomdag.ServerName]map[string]string{x.Origin: {x.Key: x.Sig}}
	b, err := json.Marshal(obj)
	if err != nil {
		return err
	}
	return roomdag.VerifyJSONLenient(x.Origin, x.Key, pub, b)
}
