package pusher

import (
	"encoding/json"
	"errors"
	"testing"
)

func TestParseHTTPData(t *testing.T) {
	cases := []struct {
		data   string
		err    error
		format string
		rest   string
	}{
		{`{"url":"https://gw.example/_matrix/push/v1/notify"}`, nil, "", `{}`},
		{`{"url":"http://10.0.0.1:5000/_matrix/push/v1/notify","format":"event_id_only","x":1}`, nil, "event_id_only", `{"format":"event_id_only","x":1}`},
		{`{"url":"https://gw.example/sygnal/_matrix/push/v1/notify"}`, nil, "", `{}`},
		{`[]`, ErrDataNotObject, "", ""},
		{`null`, ErrDataNotObject, "", ""},
		{`{}`, ErrMissingURL, "", ""},
		{`{"url":null}`, ErrMissingURL, "", ""},
		{`{"url":5}`, ErrBadURL, "", ""},
		{`{"url":"https://gw.example/_matrix/push/v1/notify/"}`, ErrBadURL, "", ""},
		{`{"url":"https://gw.example/"}`, ErrBadURL, "", ""},
		{`{"url":"gw.example/_matrix/push/v1/notify"}`, ErrBadURL, "", ""},
		{`{"url":"wss://gw.example/_matrix/push/v1/notify"}`, ErrBadURL, "", ""},
		{`{"url":"https:/_matrix/push/v1/notify"}`, ErrBadURL, "", ""},
		{`{"url":"https://gw.example/_matrix/push/v1/notify","format":true}`, ErrBadFormat, "", ""},
	}
	for _, tc := range cases {
		d, err := ParseHTTPData(json.RawMessage(tc.data))
		if !errors.Is(err, tc.err) {
			t.Errorf("%s: err %v, want %v", tc.data, err, tc.err)
			continue
		}
		if err != nil {
			continue
		}
		rest, _ := json.Marshal(d.Rest)
		if d.Format != tc.format || string(rest) != tc.rest {
			t.Errorf("%s: format %q rest %s, want %q %s", tc.data, d.Format, rest, tc.format, tc.rest)
		}
	}
}

// Tweaks come from set_tweak actions, a missing value meaning true; the
// priority is high only for sound, highlight or encrypted events.
func TestTweaksAndPrio(t *testing.T) {
	cases := []struct {
		evType, actions string
		tweaks          string
		prio            string
	}{
		{"m.room.message", `["notify"]`, `{}`, "low"},
		{"m.room.message", `["notify",{"set_tweak":"sound","value":"default"}]`, `{"sound":"default"}`, "high"},
		{"m.room.message", `["notify",{"set_tweak":"highlight"}]`, `{"highlight":true}`, "high"},
		{"m.room.message", `["notify",{"set_tweak":"highlight","value":false}]`, `{"highlight":false}`, "low"},
		{"m.room.message", `["notify",{"set_tweak":"sound","value":""},{"set_tweak":"custom","value":{"a":1}}]`, `{"custom":{"a":1},"sound":""}`, "low"},
		{"m.room.encrypted", `["notify"]`, `{}`, "high"},
	}
	for _, tc := range cases {
		tw := tweaks(json.RawMessage(tc.actions))
		got, _ := json.Marshal(tw)
		if string(got) != tc.tweaks {
			t.Errorf("tweaks(%s) = %s, want %s", tc.actions, got, tc.tweaks)
		}
		if p := prio(tc.evType, tw); p != tc.prio {
			t.Errorf("prio(%s, %s) = %s, want %s", tc.evType, tc.actions, p, tc.prio)
		}
	}
}
