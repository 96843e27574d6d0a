package configs

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// ByteSize is a size in bytes. In YAML it is a plain integer (bytes) or a
// string of a whole number with a binary unit, as in Synapse: "512K",
// "1M", "50M", "2G", "1T". Units are case-insensitive and may be followed
// by "B" or "iB" ("50MB", "50MiB"); all are powers of 1024.
type ByteSize int64

// Binary size units.
const (
	KiB ByteSize = 1 << (10 * (iota + 1))
	MiB
	GiB
	TiB
)

var errByteSize = errors.New(`want a size such as "512K", "50M" or a number of bytes`)

// ParseByteSize parses the string form of a ByteSize. Negative sizes and
// sizes that overflow int64 are errors.
func ParseByteSize(s string) (ByteSize, error) {
	num, unit := splitNumber(strings.TrimSpace(s))
	if num == "" {
		return 0, fmt.Errorf("%q: %w", s, errByteSize)
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q: %w", s, errByteSize)
	}
	var mult ByteSize
	switch strings.ToLower(unit) {
	case "", "b":
		mult = 1
	case "k", "kb", "kib":
		mult = KiB
	case "m", "mb", "mib":
		mult = MiB
	case "g", "gb", "gib":
		mult = GiB
	case "t", "tb", "tib":
		mult = TiB
	default:
		return 0, fmt.Errorf("%q: unknown unit %q: %w", s, unit, errByteSize)
	}
	if n > math.MaxInt64/int64(mult) {
		return 0, fmt.Errorf("%q: too large", s)
	}
	return ByteSize(n) * mult, nil
}

// String returns the size in the largest unit that divides it exactly
// ("50M", "1536K", "1000"), which ParseByteSize reads back.
func (b ByteSize) String() string {
	for _, u := range []struct {
		size ByteSize
		name string
	}{{TiB, "T"}, {GiB, "G"}, {MiB, "M"}, {KiB, "K"}} {
		if b != 0 && b%u.size == 0 {
			return strconv.FormatInt(int64(b/u.size), 10) + u.name
		}
	}
	return strconv.FormatInt(int64(b), 10)
}

// MarshalYAML writes the size as String does.
func (b ByteSize) MarshalYAML() (any, error) { return b.String(), nil }

// UnmarshalYAML reads a YAML integer (bytes) or a string with a unit.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return errByteSize
	}
	switch n.ShortTag() {
	case "!!int":
		var v int64
		if err := n.Decode(&v); err != nil || v < 0 {
			return fmt.Errorf("%s: %w", n.Value, errByteSize)
		}
		*b = ByteSize(v)
		return nil
	case "!!str":
		v, err := ParseByteSize(n.Value)
		if err != nil {
			return err
		}
		*b = v
		return nil
	}
	return fmt.Errorf("%s: %w", n.Value, errByteSize)
}

// Duration is a length of time. In YAML it is a plain integer, meaning
// milliseconds as in Synapse, or a string: a whole number with one of the
// units "d" (24h), "w" (7d) or "y" (365d), as in Synapse, or anything
// time.ParseDuration accepts ("500ms", "5m", "1h30m"). The empty string
// and 0 mean zero. Negative durations are errors.
type Duration time.Duration

var errDuration = errors.New(`want a duration such as "30s", "5m", "1h30m", "7d" or a number of milliseconds`)

// ParseDuration parses the string form of a Duration.
func ParseDuration(s string) (Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	num, unit := splitNumber(s)
	if num != "" {
		var mult time.Duration
		switch unit {
		case "":
			mult = time.Millisecond
		case "d":
			mult = 24 * time.Hour
		case "w":
			mult = 7 * 24 * time.Hour
		case "y":
			mult = 365 * 24 * time.Hour
		}
		if mult != 0 {
			n, err := strconv.ParseInt(num, 10, 64)
			if err != nil || n > math.MaxInt64/int64(mult) {
				return 0, fmt.Errorf("%q: too long", s)
			}
			return Duration(time.Duration(n) * mult), nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q: %w", s, errDuration)
	}
	if d < 0 {
		return 0, fmt.Errorf("%q: must not be negative", s)
	}
	return Duration(d), nil
}

// Std returns d as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// String returns the duration in the largest unit that divides it exactly
// ("0", "7d", "5m", "1500ms"), or time.Duration's form if none does. Its
// output reads back through ParseDuration.
func (d Duration) String() string {
	if d == 0 {
		return "0"
	}
	for _, u := range []struct {
		size time.Duration
		name string
	}{{24 * time.Hour, "d"}, {time.Hour, "h"}, {time.Minute, "m"}, {time.Second, "s"}, {time.Millisecond, "ms"}} {
		if time.Duration(d)%u.size == 0 {
			return strconv.FormatInt(int64(time.Duration(d)/u.size), 10) + u.name
		}
	}
	return time.Duration(d).String()
}

// MarshalYAML writes the duration as String does.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// UnmarshalYAML reads a YAML integer (milliseconds) or a duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return errDuration
	}
	switch n.ShortTag() {
	case "!!int":
		var v int64
		if err := n.Decode(&v); err != nil || v < 0 || v > math.MaxInt64/int64(time.Millisecond) {
			return fmt.Errorf("%s: %w", n.Value, errDuration)
		}
		*d = Duration(time.Duration(v) * time.Millisecond)
		return nil
	case "!!str":
		v, err := ParseDuration(n.Value)
		if err != nil {
			return err
		}
		*d = v
		return nil
	}
	return fmt.Errorf("%s: %w", n.Value, errDuration)
}

// splitNumber splits s into its leading ASCII digits and the rest.
func splitNumber(s string) (num, rest string) {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	return s[:i], s[i:]
}
