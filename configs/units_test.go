package configs

import (
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func TestParseByteSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want ByteSize
		err  string // part of the error; "" for success
	}{
		{"0", 0, ""},
		{"1234", 1234, ""},
		{"512K", 512 * KiB, ""},
		{"512k", 512 * KiB, ""},
		{"1M", 1 << 20, ""},
		{"50M", 50 << 20, ""},
		{"50MB", 50 << 20, ""},
		{"50MiB", 50 << 20, ""},
		{"50mib", 50 << 20, ""},
		{"2G", 2 << 30, ""},
		{"1T", 1 << 40, ""},
		{"100B", 100, ""},
		{" 1M ", 1 << 20, ""},
		{"8388607T", 8388607 << 40, ""},
		{"8388608T", 0, "too large"},
		{"99999999999999999999", 0, "want a size"},
		{"", 0, "want a size"},
		{"M", 0, "want a size"},
		{"-1M", 0, "want a size"},
		{"+1M", 0, "want a size"},
		{"1.5M", 0, "unknown unit"},
		{"1 M", 0, "unknown unit"},
		{"1P", 0, "unknown unit"},
		{"1Mi", 0, "unknown unit"},
		{"0x10", 0, "unknown unit"},
	} {
		got, err := ParseByteSize(tc.in)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("ParseByteSize(%q): %v", tc.in, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("ParseByteSize(%q) = %d, %v; want error containing %q", tc.in, got, err, tc.err)
		case got != tc.want:
			t.Errorf("ParseByteSize(%q) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

func TestByteSizeString(t *testing.T) {
	for _, tc := range []struct {
		in   ByteSize
		want string
	}{
		{0, "0"}, {1000, "1000"}, {1024, "1K"}, {1536 * KiB, "1536K"}, {50 * MiB, "50M"}, {3 * GiB, "3G"}, {TiB, "1T"},
	} {
		if got := tc.in.String(); got != tc.want {
			t.Errorf("ByteSize(%d).String() = %q, want %q", int64(tc.in), got, tc.want)
		}
	}
}

func TestByteSizeYAML(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want ByteSize
		ok   bool
	}{
		{"1048576", MiB, true},
		{"0x400", KiB, true},
		{`"1M"`, MiB, true},
		{"50M", 50 * MiB, true}, // a plain scalar that is not a number is a string
		{"-1", 0, false},
		{"1.5", 0, false},
		{"true", 0, false},
		{"[1]", 0, false},
		{"{a: 1}", 0, false},
	} {
		var got ByteSize
		err := yaml.Unmarshal([]byte(tc.in), &got)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("yaml %s: got %d, %v; want %d, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
	out, err := yaml.Marshal(struct{ S ByteSize }{50 * MiB})
	if err != nil || string(out) != "s: 50M\n" {
		t.Errorf("yaml.Marshal = %q, %v", out, err)
	}
}

func TestParseDuration(t *testing.T) {
	day := 24 * time.Hour
	for _, tc := range []struct {
		in   string
		want time.Duration
		err  string
	}{
		{"", 0, ""},
		{"0", 0, ""},
		{"1500", 1500 * time.Millisecond, ""},
		{"500ms", 500 * time.Millisecond, ""},
		{"30s", 30 * time.Second, ""},
		{"5m", 5 * time.Minute, ""},
		{"1h", time.Hour, ""},
		{"1h30m", 90 * time.Minute, ""},
		{"1.5h", 90 * time.Minute, ""},
		{"7d", 7 * day, ""},
		{"2w", 14 * day, ""},
		{"1y", 365 * day, ""},
		{" 5m ", 5 * time.Minute, ""},
		{"-5m", 0, "negative"},
		{"5", 5 * time.Millisecond, ""},
		{"5 m", 0, "want a duration"},
		{"1d12h", 0, "want a duration"},
		{"soon", 0, "want a duration"},
		{"5M", 0, "want a duration"},
		{"9999999999999999y", 0, "too long"},
		{"99999999999999999999", 0, "too long"},
		{"3000000h", 0, "want a duration"},
	} {
		got, err := ParseDuration(tc.in)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("ParseDuration(%q): %v", tc.in, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("ParseDuration(%q) = %v, %v; want error containing %q", tc.in, got.Std(), err, tc.err)
		case got.Std() != tc.want:
			t.Errorf("ParseDuration(%q) = %v, want %v", tc.in, got.Std(), tc.want)
		}
	}
}

func TestDurationString(t *testing.T) {
	for _, tc := range []struct {
		in   time.Duration
		want string
	}{
		{0, "0"}, {1500 * time.Millisecond, "1500ms"}, {90 * time.Second, "90s"}, {5 * time.Minute, "5m"},
		{90 * time.Minute, "90m"}, {36 * time.Hour, "36h"}, {14 * 24 * time.Hour, "14d"}, {1500 * time.Microsecond, "1.5ms"},
	} {
		if got := Duration(tc.in).String(); got != tc.want {
			t.Errorf("Duration(%v).String() = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestDurationYAML(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"300000", 5 * time.Minute, true}, // milliseconds, as in Synapse
		{"5m", 5 * time.Minute, true},
		{`"1h"`, time.Hour, true},
		{`""`, 0, true},
		{"-1", 0, false},
		{"1.5", 0, false},
		{"[5m]", 0, false},
		{"99999999999999999", 0, false},
	} {
		var got Duration
		err := yaml.Unmarshal([]byte(tc.in), &got)
		if (err == nil) != tc.ok || got.Std() != tc.want {
			t.Errorf("yaml %s: got %v, %v; want %v, ok=%v", tc.in, got.Std(), err, tc.want, tc.ok)
		}
	}
	out, err := yaml.Marshal(struct{ D Duration }{Duration(time.Hour)})
	if err != nil || string(out) != "d: 1h\n" {
		t.Errorf("yaml.Marshal = %q, %v", out, err)
	}
}

func FuzzParseByteSize(f *testing.F) {
	for _, s := range []string{"0", "1M", "512k", "50MiB", "8388607T", "-1", "1.5M"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b, err := ParseByteSize(s)
		if err != nil {
			return
		}
		if b < 0 {
			t.Fatalf("ParseByteSize(%q) = %d, negative", s, b)
		}
		if back, err := ParseByteSize(b.String()); err != nil || back != b {
			t.Fatalf("ParseByteSize(%q) = %d; its String %q reads back as %d, %v", s, b, b.String(), back, err)
		}
	})
}

func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"", "0", "1500", "5m", "1h30m", "7d", "2w", "1y", "-5m", "1.5ms"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDuration(s)
		if err != nil {
			return
		}
		if d < 0 {
			t.Fatalf("ParseDuration(%q) = %v, negative", s, d.Std())
		}
		if back, err := ParseDuration(d.String()); err != nil || back != d {
			t.Fatalf("ParseDuration(%q) = %v; its String %q reads back as %v, %v", s, d.Std(), d.String(), back.Std(), err)
		}
	})
}
