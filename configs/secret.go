package configs

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"log/slog"

	"gopkg.in/yaml.v3"
)

// Secret is a credential read from the configuration (a registration token,
// the registration shared secret). It cannot be printed, logged or
// marshalled by accident: fmt, slog, JSON and YAML all see "[redacted]" or
// nothing. It cannot be compared with == either (the [0]func() field makes
// the type incomparable); use Equal, which takes constant time.
type Secret struct {
	_     [0]func()
	value string
}

// NewSecret wraps s.
func NewSecret(s string) Secret { return Secret{value: s} }

// Reveal returns the secret itself. Call it only where the value must
// leave the program's memory in clear, such as computing an HMAC.
func (s Secret) Reveal() string { return s.value }

// IsZero reports whether the secret is empty (not set).
func (s Secret) IsZero() bool { return s.value == "" }

// Equal reports whether guess is the secret without leaking the secret
// through timing: both are hashed with SHA-256 and the hashes compared in
// constant time, so the comparison does not even depend on the lengths. An
// empty secret equals nothing, not even an empty guess.
func (s Secret) Equal(guess string) bool {
	if s.value == "" {
		return false
	}
	a := sha256.Sum256([]byte(s.value))
	b := sha256.Sum256([]byte(guess))
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

// redacted stands for a set secret wherever one is printed or marshalled.
// UnmarshalYAML refuses it, so a marshalled Config that is read back fails
// loudly instead of running with "[redacted]" as its secret.
const redacted = "[redacted]"

// String returns "[redacted]", or "" for an empty secret, so that printing
// a Config shows whether a secret is set but not what it is.
func (s Secret) String() string {
	if s.value == "" {
		return ""
	}
	return redacted
}

// GoString keeps %#v from printing the value.
func (s Secret) GoString() string { return "configs.Secret(" + s.String() + ")" }

// LogValue keeps slog from logging the value.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalText keeps encoding/json and similar encoders from writing the
// value. There is deliberately no UnmarshalText: only UnmarshalYAML reads
// secrets.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// MarshalYAML keeps yaml.Marshal from writing the value.
func (s Secret) MarshalYAML() (any, error) { return s.String(), nil }

// UnmarshalYAML reads a secret from a YAML string. Numbers and booleans
// are refused rather than converted, since "0123" and 0123 are different
// secrets.
func (s *Secret) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" {
		return errors.New("must be a string (quote it)")
	}
	if n.Value == redacted {
		return errors.New(`is "[redacted]", a placeholder written in place of a secret, not a secret`)
	}
	s.value = n.Value
	return nil
}
