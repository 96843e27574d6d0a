package media

import (
	"image"
	"strings"
	"testing"
)

func TestThumbGeometry(t *testing.T) {
	for _, tc := range []struct {
		ow, oh, w, h int
		m            Method
		out, src     image.Rectangle
	}{
		{1000, 500, 320, 240, Scale, image.Rect(0, 0, 320, 160), image.Rect(0, 0, 1000, 500)},
		{500, 1000, 320, 240, Scale, image.Rect(0, 0, 120, 240), image.Rect(0, 0, 500, 1000)},
		{100, 50, 320, 240, Scale, image.Rect(0, 0, 100, 50), image.Rect(0, 0, 100, 50)}, // never upscaled
		{1000, 500, 96, 96, Crop, image.Rect(0, 0, 96, 96), image.Rect(250, 0, 750, 500)},
		{500, 1000, 32, 64, Crop, image.Rect(0, 0, 32, 64), image.Rect(0, 0, 500, 1000)},
		// Wider than the source allows without upscaling: cut at source resolution.
		{100, 100, 200, 50, Crop, image.Rect(0, 0, 100, 25), image.Rect(0, 37, 100, 62)},
		{10, 10, 32, 32, Crop, image.Rect(0, 0, 10, 10), image.Rect(0, 0, 10, 10)},
		{10000, 1, 32, 32, Scale, image.Rect(0, 0, 32, 1), image.Rect(0, 0, 10000, 1)}, // at least 1 pixel
	} {
		out, src := thumbGeometry(tc.ow, tc.oh, tc.w, tc.h, tc.m)
		if out != tc.out || src != tc.src {
			t.Errorf("%dx%d as %dx%d %s: out %v src %v, want %v %v", tc.ow, tc.oh, tc.w, tc.h, tc.m, out, src, tc.out, tc.src)
		}
	}
}

func TestParseID(t *testing.T) {
	for _, ok := range []string{"abcXYZ019_-", strings.Repeat("a", 255)} {
		if _, err := ParseID(ok); err != nil {
			t.Errorf("ParseID(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", "..", "a/b", "a%2Fb", "a.b", "a b", "é", strings.Repeat("a", 256)} {
		if _, err := ParseID(bad); err == nil {
			t.Errorf("ParseID(%q) accepted", bad)
		}
	}
	server, id, err := ParseURI("mxc://localhost:8008/abc_-1")
	if err != nil || server != "localhost:8008" || id != "abc_-1" {
		t.Errorf("ParseURI: %q %q %v", server, id, err)
	}
}

// FuzzParseID: whatever ParseID accepts is safe as a single path element.
func FuzzParseID(f *testing.F) {
	for _, s := range []string{"abc", "..", "a/b", "%2e%2e", "a\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseID(s)
		if err != nil {
			return
		}
		if strings.ContainsAny(string(id), "./\\%\x00") || id == "" {
			t.Fatalf("ParseID accepted %q", s)
		}
	})
}
