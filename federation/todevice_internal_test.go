package federation

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/persistentchat/homeserver/roomdag"
)

func TestSplitToDevice(t *testing.T) {
	msg := func(n int) json.RawMessage { return json.RawMessage(`{"p":"` + strings.Repeat("x", n) + `"}`) }
	type msgs = map[roomdag.UserID]map[string]json.RawMessage
	for _, tc := range []struct {
		name  string
		in    msgs
		parts int
	}{
		{"one small", msgs{"@a:x": {"D": msg(10)}}, 1},
		{"several small", msgs{"@a:x": {"D": msg(10), "E": msg(10)}, "@b:x": {"*": msg(10)}}, 1},
		{"between users", msgs{"@a:x": {"D": msg(40_000)}, "@b:x": {"*": msg(40_000)}}, 2},
		{"between one user's devices", msgs{"@a:x": {"D": msg(30_000), "E": msg(30_000), "F": msg(30_000)}}, 2},
		{"one too large alone", msgs{"@a:x": {"D": msg(70_000), "E": msg(10)}}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			parts := splitToDevice(tc.in, SoftMaxToDeviceEDU)
			if len(parts) != tc.parts {
				t.Fatalf("%d parts, want %d", len(parts), tc.parts)
			}
			seen := 0
			for _, p := range parts {
				size, n := 0, 0
				for u, ds := range p {
					for d, c := range ds {
						seen++
						n++
						size += len(c)
						if string(tc.in[u][d]) != string(c) {
							t.Fatalf("%s/%s changed", u, d)
						}
					}
				}
				if size > SoftMaxToDeviceEDU && n > 1 {
					t.Fatalf("a part of %d bytes with more than one message", size)
				}
			}
			want := 0
			for _, ds := range tc.in {
				want += len(ds)
			}
			if seen != want {
				t.Fatalf("%d messages in the parts, want %d", seen, want)
			}
		})
	}
}
