package roomdag

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// ErrCanonicalJSON wraps every reason a document cannot be made canonical:
// invalid JSON or UTF-8, a float or out-of-range integer, a duplicate key, or
// nesting deeper than maxJSONDepth.
var ErrCanonicalJSON = errors.New("invalid canonical JSON")

// maxJSONDepth bounds object and array nesting. Python's json module, which
// Synapse uses, fails near 1000 levels; no real event comes close.
const maxJSONDepth = 512

// CanonicalJSON re-encodes a JSON document in Matrix canonical form.
// Spec: appendices, "Canonical JSON" (room versions 6+ rules):
//   - object keys sorted by Unicode code point (byte order of their UTF-8),
//     no insignificant whitespace;
//   - strings as raw UTF-8; only '"', '\' and control characters below 0x20
//     are escaped, \b \f \n \r \t in short form, the others as \u00xx;
//   - numbers must be integers in [-(2^53-1), 2^53-1] without fraction or
//     exponent; -0 becomes 0.
//
// It rejects invalid UTF-8 (including escaped lone surrogates), invalid JSON
// and duplicate keys (after unescaping). The spec's own example turns 1e10
// into 10000000000; we reject exponents instead, as Synapse rejects floats in
// events of room versions 6+.
//
// The result is a new slice; in is not modified. CanonicalJSON(out) == out.
func CanonicalJSON(in []byte) ([]byte, error) {
	return canonicalJSON(in, false)
}

// canonicalJSONFor is CanonicalJSON under the rules of room version v.
// Versions without StrictCanonicalJSON (v1-v5) must accept any JSON number
// and, like Synapse, which parses and re-encodes events with Python's json
// module, keep the last of duplicate keys (rooms/v1 "Canonical JSON":
// servers MUST NOT strictly enforce the format). Their output is what that
// module prints, so hashes and signatures match other servers:
//   - an integer literal keeps its digits, however large (-0 becomes 0);
//   - a number with a fraction or exponent becomes the float64 nearest to
//     it, printed as Python's repr does (shortest round-trip digits, "50.0",
//     "1e+16", "1e-05"); one beyond float64's range is an error.
func canonicalJSONFor(v *RoomVersion, in []byte) ([]byte, error) {
	return canonicalJSON(in, !v.StrictCanonicalJSON)
}

func canonicalJSON(in []byte, lenient bool) ([]byte, error) {
	if !utf8.Valid(in) {
		return nil, fmt.Errorf("%w: invalid UTF-8", ErrCanonicalJSON)
	}
	var stack [32]cjEntry // enough for typical events without allocating
	e := cjEncoder{in: in, out: make([]byte, 0, len(in)), stack: stack[:0], lenient: lenient}
	e.skipSpace()
	if err := e.value(); err != nil {
		return nil, err
	}
	e.skipSpace()
	if e.pos != len(e.in) {
		return nil, e.fail("data after the top-level value")
	}
	return e.out, nil
}

// CheckJSON reports whether doc may be part of an event of room version v,
// by the rules building the event applies (canonicalJSONFor): from v6 no
// floats, no integers beyond ±(2^53-1) and no duplicate keys; valid JSON
// and UTF-8 in every version. The error wraps ErrCanonicalJSON. A caller
// that takes client JSON apart before an event is built from it checks the
// client's document first: decoding turns 1.0 into 1 and keeps one of two
// duplicate keys, hiding what the event's own check would have refused.
func CheckJSON(v *RoomVersion, doc []byte) error {
	_, err := canonicalJSONFor(v, doc)
	return err
}

// marshalCanonical is json.Marshal followed by CanonicalJSON.
func marshalCanonical(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return CanonicalJSON(b)
}

// cjEncoder is a single-pass scanner that writes canonical output while it
// validates. Object members are written in input order; an object whose keys
// were not already sorted is rearranged in place when it closes, so already
// canonical input (the common case) is copied through without sorting.
type cjEncoder struct {
	in    []byte
	pos   int
	out   []byte
	depth int
	// stack holds the members of every object still open, innermost last.
	stack []cjEntry
	// keybuf holds unescaped keys that contained escapes; keys without
	// escapes point into in.
	keybuf []byte
	strbuf []byte // unescaped string values
	tmp    []byte // scratch for reordering an object's members
	// lenient applies the rules of versions without StrictCanonicalJSON
	// (canonicalJSONFor).
	lenient bool
}

// cjEntry is one member written to out[start:end] as `"key":value`.
type cjEntry struct {
	key        []byte // unescaped
	start, end int
}

// cjPlain marks bytes that may appear in a JSON string unescaped and need no
// escape in canonical output: everything but '"', '\' and controls < 0x20.
// It is a constant table, never written after initialisation.
var cjPlain = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

func (e *cjEncoder) fail(msg string) error {
	return fmt.Errorf("%w: %s at offset %d", ErrCanonicalJSON, msg, e.pos)
}

func (e *cjEncoder) skipSpace() {
	for e.pos < len(e.in) {
		switch e.in[e.pos] {
		case ' ', '\t', '\n', '\r':
			e.pos++
		default:
			return
		}
	}
}

func (e *cjEncoder) value() error {
	if e.pos >= len(e.in) {
		return e.fail("unexpected end of input")
	}
	switch c := e.in[e.pos]; {
	case c == '{':
		return e.object()
	case c == '[':
		return e.array()
	case c == '"':
		s, plain, err := e.str(&e.strbuf)
		if err != nil {
			return err
		}
		e.out = appendCanonicalString(e.out, s, plain)
		return nil
	case c == 't':
		return e.literal("true")
	case c == 'f':
		return e.literal("false")
	case c == 'n':
		return e.literal("null")
	case c == '-' || (c >= '0' && c <= '9'):
		return e.number()
	default:
		return e.fail("unexpected character")
	}
}

func (e *cjEncoder) literal(lit string) error {
	if !bytes.HasPrefix(e.in[e.pos:], []byte(lit)) {
		return e.fail("invalid literal")
	}
	e.pos += len(lit)
	e.out = append(e.out, lit...)
	return nil
}

func (e *cjEncoder) number() error {
	start := e.pos
	if e.in[e.pos] == '-' {
		e.pos++
	}
	digits := e.pos
	switch {
	case e.pos >= len(e.in):
		return e.fail("invalid number")
	case e.in[e.pos] == '0':
		e.pos++
	case e.in[e.pos] >= '1' && e.in[e.pos] <= '9':
		for e.pos < len(e.in) && e.in[e.pos] >= '0' && e.in[e.pos] <= '9' {
			e.pos++
		}
	default:
		return e.fail("invalid number")
	}
	if e.pos < len(e.in) {
		switch e.in[e.pos] {
		case '.', 'e', 'E':
			if e.lenient {
				return e.float(start)
			}
			return e.fail("number is not an integer")
		}
	}
	if e.lenient && !inCanonicalRange(e.in[digits:e.pos]) {
		// Python ints have no range; the digits are printed as they are.
		e.out = append(e.out, e.in[start:e.pos]...)
		return nil
	}
	if e.pos-digits > 16 {
		return e.fail("integer out of range")
	}
	var n uint64
	for _, d := range e.in[digits:e.pos] {
		n = n*10 + uint64(d-'0')
	}
	if n > maxCanonicalInt {
		return e.fail("integer out of range")
	}
	if n == 0 {
		e.out = append(e.out, '0') // never -0
	} else {
		e.out = append(e.out, e.in[start:e.pos]...)
	}
	return nil
}

// inCanonicalRange reports whether the decimal digits are at most 2^53-1.
func inCanonicalRange(digits []byte) bool {
	if len(digits) > 16 {
		return false
	}
	var n uint64
	for _, d := range digits {
		n = n*10 + uint64(d-'0')
	}
	return n <= maxCanonicalInt
}

// float reads the rest of the number that started at start and has a
// fraction or an exponent, for the lenient rules: it is written as Python's
// repr writes the float64 nearest to it.
func (e *cjEncoder) float(start int) error {
	if e.in[e.pos] == '.' {
		e.pos++
		d := e.pos
		for e.pos < len(e.in) && e.in[e.pos] >= '0' && e.in[e.pos] <= '9' {
			e.pos++
		}
		if e.pos == d {
			return e.fail("invalid number")
		}
	}
	if e.pos < len(e.in) && (e.in[e.pos] == 'e' || e.in[e.pos] == 'E') {
		e.pos++
		if e.pos < len(e.in) && (e.in[e.pos] == '+' || e.in[e.pos] == '-') {
			e.pos++
		}
		d := e.pos
		for e.pos < len(e.in) && e.in[e.pos] >= '0' && e.in[e.pos] <= '9' {
			e.pos++
		}
		if e.pos == d {
			return e.fail("invalid number")
		}
	}
	f, err := strconv.ParseFloat(string(e.in[start:e.pos]), 64)
	if err != nil || math.IsInf(f, 0) {
		return e.fail("number out of range")
	}
	e.out = appendPythonFloat(e.out, f)
	return nil
}

// appendPythonFloat appends f as Python's repr(float) prints it: the
// shortest digits that round-trip, in positional notation with at least one
// digit after the point when the decimal exponent is in [-4, 16), else as
// d.ddde+XX with a two-digit minimum exponent.
func appendPythonFloat(dst []byte, f float64) []byte {
	// 'e' with precision -1 gives the shortest round-trip digits as
	// "[-]d.ddde±XX".
	s := strconv.FormatFloat(f, 'e', -1, 64)
	if s[0] == '-' {
		dst = append(dst, '-')
		s = s[1:]
	}
	mant, exp, _ := strings.Cut(s, "e")
	digits := strings.Replace(mant, ".", "", 1)
	x, _ := strconv.Atoi(exp)
	point := x + 1 // digits[:point] precede the decimal point
	if point <= -4 || point > 16 {
		dst = append(dst, digits[0])
		if len(digits) > 1 {
			dst = append(dst, '.')
			dst = append(dst, digits[1:]...)
		}
		dst = append(dst, 'e')
		if x < 0 {
			dst = append(dst, '-')
			x = -x
		} else {
			dst = append(dst, '+')
		}
		if x < 10 {
			dst = append(dst, '0')
		}
		return strconv.AppendInt(dst, int64(x), 10)
	}
	switch {
	case point <= 0:
		dst = append(dst, "0."...)
		dst = append(dst, strings.Repeat("0", -point)...)
		dst = append(dst, digits...)
	case point < len(digits):
		dst = append(dst, digits[:point]...)
		dst = append(dst, '.')
		dst = append(dst, digits[point:]...)
	default:
		dst = append(dst, digits...)
		dst = append(dst, strings.Repeat("0", point-len(digits))...)
		dst = append(dst, ".0"...)
	}
	return dst
}

// str reads the string at e.pos (which is '"') and returns its unescaped
// bytes. plain reports that the input had no escapes, in which case s is a
// slice of the input and needs no escaping on output; otherwise s is written
// into *buf.
func (e *cjEncoder) str(buf *[]byte) (s []byte, plain bool, err error) {
	e.pos++
	start := e.pos
	for e.pos < len(e.in) && cjPlain[e.in[e.pos]] {
		e.pos++
	}
	if e.pos >= len(e.in) {
		return nil, false, e.fail("unterminated string")
	}
	if e.in[e.pos] == '"' {
		e.pos++
		return e.in[start : e.pos-1], true, nil
	}
	b := append((*buf)[:0], e.in[start:e.pos]...)
	for {
		if e.pos >= len(e.in) {
			return nil, false, e.fail("unterminated string")
		}
		c := e.in[e.pos]
		switch {
		case c == '"':
			e.pos++
			*buf = b
			return b, false, nil
		case c < 0x20:
			return nil, false, e.fail("control character in string")
		case c == '\\':
			if e.pos+1 >= len(e.in) {
				return nil, false, e.fail("unterminated string")
			}
			esc := e.in[e.pos+1]
			e.pos += 2
			switch esc {
			case '"', '\\', '/':
				b = append(b, esc)
			case 'b':
				b = append(b, '\b')
			case 'f':
				b = append(b, '\f')
			case 'n':
				b = append(b, '\n')
			case 'r':
				b = append(b, '\r')
			case 't':
				b = append(b, '\t')
			case 'u':
				r, ok := e.hex4()
				if !ok {
					return nil, false, e.fail("invalid \\u escape")
				}
				if utf16.IsSurrogate(r) {
					// Only a high surrogate followed by a low one is a
					// character; anything else cannot be UTF-8.
					if r >= 0xdc00 || e.pos+2 > len(e.in) || e.in[e.pos] != '\\' || e.in[e.pos+1] != 'u' {
						return nil, false, e.fail("unpaired surrogate")
					}
					e.pos += 2
					lo, ok := e.hex4()
					if !ok || lo < 0xdc00 || lo > 0xdfff {
						return nil, false, e.fail("unpaired surrogate")
					}
					r = utf16.DecodeRune(r, lo)
				}
				b = utf8.AppendRune(b, r)
			default:
				return nil, false, e.fail("invalid escape")
			}
		default:
			i := e.pos
			for i < len(e.in) && cjPlain[e.in[i]] {
				i++
			}
			b = append(b, e.in[e.pos:i]...)
			e.pos = i
		}
	}
}

func (e *cjEncoder) hex4() (rune, bool) {
	if e.pos+4 > len(e.in) {
		return 0, false
	}
	var r rune
	for _, c := range e.in[e.pos : e.pos+4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	e.pos += 4
	return r, true
}

func (e *cjEncoder) array() error {
	if e.depth++; e.depth > maxJSONDepth {
		return e.fail("nesting too deep")
	}
	e.pos++
	e.out = append(e.out, '[')
	e.skipSpace()
	if e.pos < len(e.in) && e.in[e.pos] == ']' {
		e.pos++
	} else {
		for {
			e.skipSpace()
			if err := e.value(); err != nil {
				return err
			}
			e.skipSpace()
			if e.pos >= len(e.in) {
				return e.fail("unterminated array")
			}
			if c := e.in[e.pos]; c == ',' {
				e.pos++
				e.out = append(e.out, ',')
				continue
			} else if c == ']' {
				e.pos++
				break
			}
			return e.fail("expected ',' or ']'")
		}
	}
	e.out = append(e.out, ']')
	e.depth--
	return nil
}

func (e *cjEncoder) object() error {
	if e.depth++; e.depth > maxJSONDepth {
		return e.fail("nesting too deep")
	}
	e.pos++
	open := len(e.out)
	e.out = append(e.out, '{')
	base, keyBase := len(e.stack), len(e.keybuf)
	sorted := true
	e.skipSpace()
	if e.pos < len(e.in) && e.in[e.pos] == '}' {
		e.pos++
	} else {
		for {
			e.skipSpace()
			if e.pos >= len(e.in) || e.in[e.pos] != '"' {
				return e.fail("expected a string key")
			}
			start := len(e.out)
			k, plain, err := e.str(&e.strbuf)
			if err != nil {
				return err
			}
			if !plain {
				// Keep the key: strbuf is reused by the value.
				n := len(e.keybuf)
				e.keybuf = append(e.keybuf, k...)
				k = e.keybuf[n:]
			}
			e.out = appendCanonicalString(e.out, k, plain)
			e.skipSpace()
			if e.pos >= len(e.in) || e.in[e.pos] != ':' {
				return e.fail("expected ':'")
			}
			e.pos++
			e.out = append(e.out, ':')
			e.skipSpace()
			if err := e.value(); err != nil {
				return err
			}
			if n := len(e.stack); n > base {
				switch bytes.Compare(e.stack[n-1].key, k) {
				case 0:
					if !e.lenient {
						return e.fail("duplicate key")
					}
					sorted = false
				case 1:
					sorted = false
				}
			}
			e.stack = append(e.stack, cjEntry{key: k, start: start, end: len(e.out)})
			e.skipSpace()
			if e.pos >= len(e.in) {
				return e.fail("unterminated object")
			}
			if c := e.in[e.pos]; c == ',' {
				e.pos++
				e.out = append(e.out, ',')
				continue
			} else if c == '}' {
				e.pos++
				break
			}
			return e.fail("expected ',' or '}'")
		}
	}
	if !sorted {
		ms := e.stack[base:]
		// UTF-8 byte order is code point order. The stable sort keeps
		// duplicates in input order, so the lenient rules keep the last.
		cmp := func(a, b cjEntry) int { return bytes.Compare(a.key, b.key) }
		if e.lenient {
			slices.SortStableFunc(ms, cmp)
		} else {
			slices.SortFunc(ms, cmp)
		}
		for i := 1; i < len(ms); i++ {
			if !e.lenient && bytes.Equal(ms[i-1].key, ms[i].key) {
				return e.fail("duplicate key")
			}
		}
		body := open + 1
		e.tmp = append(e.tmp[:0], e.out[body:]...)
		e.out = e.out[:body]
		written := 0
		for i, m := range ms {
			if i+1 < len(ms) && bytes.Equal(m.key, ms[i+1].key) {
				continue // a later duplicate replaces it (lenient only)
			}
			if written > 0 {
				e.out = append(e.out, ',')
			}
			written++
			e.out = append(e.out, e.tmp[m.start-body:m.end-body]...)
		}
	}
	e.out = append(e.out, '}')
	e.stack = e.stack[:base]
	e.keybuf = e.keybuf[:keyBase]
	e.depth--
	return nil
}

// appendCanonicalString appends s (unescaped, valid UTF-8) as a canonical
// JSON string. plain promises s holds no byte that needs escaping.
func appendCanonicalString(dst, s []byte, plain bool) []byte {
	dst = append(dst, '"')
	if plain {
		dst = append(dst, s...)
		return append(dst, '"')
	}
	const hex = "0123456789abcdef"
	start := 0
	for i, c := range s {
		if cjPlain[c] {
			continue
		}
		dst = append(dst, s[start:i]...)
		start = i + 1
		switch c {
		case '"', '\\':
			dst = append(dst, '\\', c)
		case '\b':
			dst = append(dst, '\\', 'b')
		case '\f':
			dst = append(dst, '\\', 'f')
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		}
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// The helpers below read and edit documents that CanonicalJSON produced.
// They rely on its exact form (no whitespace, valid, sorted) and must never
// be given anything else.

// cjIter walks the members of a canonical JSON object.
type cjIter struct {
	b []byte
	i int
}

func newCJIter(obj []byte) cjIter { return cjIter{b: obj, i: 1} }

// next returns the next member's key as written (still escaped, without
// quotes) and its value.
func (it *cjIter) next() (key, val []byte, ok bool) {
	if it.i >= len(it.b)-1 {
		return nil, nil, false
	}
	if it.b[it.i] == ',' {
		it.i++
	}
	end := cjStringEnd(it.b, it.i)
	key = it.b[it.i+1 : end]
	vs := end + 2 // past `":`
	ve := cjSkip(it.b, vs)
	it.i = ve
	return key, it.b[vs:ve], true
}

// cjStringEnd returns the index of the closing quote of the string at b[i].
func cjStringEnd(b []byte, i int) int {
	for j := i + 1; ; {
		switch b[j] {
		case '"':
			return j
		case '\\':
			j += 2
		default:
			j++
		}
	}
}

// cjSkip returns the index just past the value starting at b[i].
func cjSkip(b []byte, i int) int {
	switch b[i] {
	case '"':
		return cjStringEnd(b, i) + 1
	case '{', '[':
		depth := 0
		for j := i; ; j++ {
			switch b[j] {
			case '"':
				j = cjStringEnd(b, j)
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return j + 1
				}
			}
		}
	default:
		j := i
		for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ']' {
			j++
		}
		return j
	}
}

// cjKeyCompare compares a key as written in canonical JSON with key.
func cjKeyCompare(raw []byte, key string) int {
	if bytes.IndexByte(raw, '\\') >= 0 {
		return strings.Compare(cjUnquote(raw), key)
	}
	// Comparisons of string(raw) do not allocate; strings.Compare would.
	switch {
	case string(raw) == key:
		return 0
	case string(raw) < key:
		return -1
	}
	return 1
}

// cjUnquote unescapes the inside of a canonical JSON string.
func cjUnquote(raw []byte) string {
	in := make([]byte, 0, len(raw)+2)
	in = append(append(append(in, '"'), raw...), '"')
	e := cjEncoder{in: in}
	s, _, _ := e.str(&e.strbuf)
	return string(s)
}

// cjString returns the value of a canonical JSON string value.
func cjString(val []byte) (string, bool) {
	if len(val) < 2 || val[0] != '"' {
		return "", false
	}
	return cjUnquote(val[1 : len(val)-1]), true
}

func cjIsObject(val []byte) bool { return len(val) > 0 && val[0] == '{' }

// cjGet returns the value of key in a canonical object.
func cjGet(obj []byte, key string) ([]byte, bool) {
	it := newCJIter(obj)
	for k, v, ok := it.next(); ok; k, v, ok = it.next() {
		switch cjKeyCompare(k, key) {
		case 0:
			return v, true
		case 1:
			return nil, false // keys are sorted
		}
	}
	return nil, false
}

func cjAppendMember(dst, rawKey, val []byte) []byte {
	if dst[len(dst)-1] != '{' {
		dst = append(dst, ',')
	}
	dst = append(dst, '"')
	dst = append(dst, rawKey...)
	dst = append(dst, '"', ':')
	return append(dst, val...)
}

// cjWithout returns a canonical object without the given keys.
func cjWithout(obj []byte, keys ...string) []byte {
	out := make([]byte, 1, len(obj))
	out[0] = '{'
	it := newCJIter(obj)
next:
	for k, v, ok := it.next(); ok; k, v, ok = it.next() {
		for _, drop := range keys {
			if cjKeyCompare(k, drop) == 0 {
				continue next
			}
		}
		out = cjAppendMember(out, k, v)
	}
	return append(out, '}')
}

// cjWith returns a canonical object with key set to val, which must itself
// be canonical.
func cjWith(obj []byte, key string, val []byte) []byte {
	rawKey := appendCanonicalString(nil, []byte(key), false)
	rawKey = rawKey[1 : len(rawKey)-1]
	out := make([]byte, 1, len(obj)+len(rawKey)+len(val)+4)
	out[0] = '{'
	done := false
	it := newCJIter(obj)
	for k, v, ok := it.next(); ok; k, v, ok = it.next() {
		if !done {
			switch c := cjKeyCompare(k, key); {
			case c == 0:
				out = cjAppendMember(out, rawKey, val)
				done = true
				continue
			case c > 0:
				out = cjAppendMember(out, rawKey, val)
				done = true
			}
		}
		out = cjAppendMember(out, k, v)
	}
	if !done {
		out = cjAppendMember(out, rawKey, val)
	}
	return append(out, '}')
}
