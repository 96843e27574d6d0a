package pusher

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// The push gateway side (spec: push gateway API, POST
// /_matrix/push/v1/notify): what an http pusher's data holds, the body
// sent for one notification, and the request.

// NotifyPath is the path every push gateway URL ends in.
const NotifyPath = "/_matrix/push/v1/notify"

// FormatEventIDOnly is the one data.format the spec defines: the gateway
// gets the event and room IDs, the priority and the counts, but not the
// event's content, sender or room name.
const FormatEventIDOnly = "event_id_only"

// HTTPData is the data object of an http pusher, parsed.
type HTTPData struct {
	URL    string
	Format string
	// Rest is data without url: what the gateway gets back in
	// devices[].data.
	Rest map[string]json.RawMessage
}

// Errors of ParseHTTPData.
var (
	ErrDataNotObject = errors.New("data must be a JSON object")
	ErrMissingURL    = errors.New("data.url is required for http pushers")
	ErrBadURL        = errors.New("data.url must be an http or https URL whose path ends in " + NotifyPath)
	ErrBadFormat     = errors.New("data.format must be a string")
)

// ParseHTTPData checks and parses an http pusher's data. The spec asks
// for an HTTPS URL with the path /_matrix/push/v1/notify; like Synapse it
// leaves the scheme to the client (plain HTTP serves gateways on a private
// network), and it accepts a path prefix before the notify path, for
// gateways behind a reverse proxy.
func ParseHTTPData(data json.RawMessage) (HTTPData, error) {
	var d HTTPData
	if err := json.Unmarshal(data, &d.Rest); err != nil || d.Rest == nil {
		return d, ErrDataNotObject
	}
	raw, ok := d.Rest["url"]
	if !ok || string(raw) == "null" {
		return d, ErrMissingURL
	}
	if err := json.Unmarshal(raw, &d.URL); err != nil {
		return d, ErrBadURL
	}
	u, err := url.Parse(d.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Opaque != "" ||
		!strings.HasSuffix(u.Path, NotifyPath) {
		return d, ErrBadURL
	}
	if f, ok := d.Rest["format"]; ok {
		if err := json.Unmarshal(f, &d.Format); err != nil {
			return d, ErrBadFormat
		}
	}
	delete(d.Rest, "url")
	return d, nil
}

type notifyBody struct {
	Notification notification `json:"notification"`
}

// notification is the spec's Notification object. Empty fields are left
// out: the spec marks all but devices optional.
type notification struct {
	EventID           roomdag.EventID `json:"event_id,omitempty"`
	RoomID            roomdag.RoomID  `json:"room_id,omitempty"`
	Type              string          `json:"type,omitempty"`
	Sender            roomdag.UserID  `json:"sender,omitempty"`
	SenderDisplayName string          `json:"sender_display_name,omitempty"`
	RoomName          string          `json:"room_name,omitempty"`
	RoomAlias         string          `json:"room_alias,omitempty"`
	UserIsTarget      *bool           `json:"user_is_target,omitempty"`
	// Membership is not in the spec, but Synapse sends it for member
	// events and Sygnal passes it on to apps.
	Membership string          `json:"membership,omitempty"`
	Prio       string          `json:"prio"`
	Content    json.RawMessage `json:"content,omitempty"`
	Counts     counts          `json:"counts"`
	Devices    []device        `json:"devices"`
}

// counts leaves out zero counts, as the spec asks. Missed calls are not
// counted.
type counts struct {
	Unread int64 `json:"unread,omitempty"`
}

type device struct {
	AppID     string                     `json:"app_id"`
	PushKey   string                     `json:"pushkey"`
	PushKeyTS int64                      `json:"pushkey_ts"` // seconds
	Data      map[string]json.RawMessage `json:"data"`
	Tweaks    map[string]any             `json:"tweaks,omitempty"`
}

// tweaks collects the set_tweak actions (spec: "Actions"); a tweak
// without a value is true.
func tweaks(actions json.RawMessage) map[string]any {
	var list []any
	_ = json.Unmarshal(actions, &list)
	out := map[string]any{}
	for _, a := range list {
		m, ok := a.(map[string]any)
		if !ok {
			continue
		}
		name, ok := m["set_tweak"].(string)
		if !ok {
			continue
		}
		if v, ok := m["value"]; ok {
			out[name] = v
		} else {
			out[name] = true
		}
	}
	return out
}

// truthy is whether a tweak's value asks for attention: set, and not
// false, zero or empty.
func truthy(v any) bool {
	switch v := v.(type) {
	case nil:
		return false
	case bool:
		return v
	case string:
		return v != ""
	case float64:
		return v != 0
	}
	return true
}

// prio is the notification's priority. As Synapse does, it is high only
// when the notification makes a sound or highlights, or may (an encrypted
// event, whose rules the client evaluates): low priority lets gateways
// save the device's battery for plain messages in busy rooms.
func prio(evType string, tw map[string]any) string {
	if evType == roomdag.TypeEncrypted || truthy(tw["highlight"]) || truthy(tw["sound"]) {
		return "high"
	}
	return "low"
}

// roomContext is what the full format says about the room and sender,
// from the room's current state (spec: sender_display_name is "the
// current display name of the sender in the room").
func roomContext(n *notification, st *roomdag.RoomState) {
	if st == nil {
		return
	}
	var member struct {
		DisplayName string `json:"displayname"`
	}
	if ev := st.State.Get(roomdag.TypeMember, string(n.Sender)); ev != nil && json.Unmarshal(ev.Content(), &member) == nil {
		n.SenderDisplayName = member.DisplayName
	}
	var alias struct {
		Alias string `json:"alias"`
	}
	if ev := st.State.Get(roomdag.TypeCanonicalAlias, ""); ev != nil && json.Unmarshal(ev.Content(), &alias) == nil {
		n.RoomAlias = alias.Alias
	}
	var name struct {
		Name string `json:"name"`
	}
	if ev := st.State.Get(roomdag.TypeName, ""); ev != nil && json.Unmarshal(ev.Content(), &name) == nil {
		n.RoomName = name.Name
	}
	if n.RoomName == "" {
		n.RoomName = n.RoomAlias
	}
}

// body builds the request for one notification to one pusher. st is the
// room's current state, nil for the event_id_only format.
func body(p storage.Pusher, d HTTPData, n storage.Notification, ev *roomdag.StoredEvent, unread int64, st *roomdag.RoomState) notifyBody {
	tw := tweaks(n.Actions)
	out := notification{EventID: ev.ID(), RoomID: ev.RoomID(), Prio: prio(ev.Type(), tw), Counts: counts{Unread: unread}}
	dev := device{AppID: p.AppID, PushKey: p.PushKey, PushKeyTS: p.PushKeyTS / 1000, Data: d.Rest}
	if d.Format != FormatEventIDOnly {
		out.Type, out.Sender = ev.Type(), ev.Sender()
		if ev.Type() == roomdag.TypeMember && ev.StateKey() != nil {
			target := *ev.StateKey() == string(p.User)
			out.UserIsTarget, out.Membership = &target, ev.Membership()
		}
		if c := ev.Content(); len(c) > 0 && string(c) != "{}" {
			out.Content = c
		}
		roomContext(&out, st)
		if len(tw) > 0 {
			dev.Tweaks = tw
		}
	}
	out.Devices = []device{dev}
	return notifyBody{Notification: out}
}

// maxResponse bounds the gateway's answer that is read.
const maxResponse = 64 << 10

// errStatus is a gateway's answer other than 2xx.
type errStatus int

func (e errStatus) Error() string { return fmt.Sprintf("push gateway answered HTTP %d", int(e)) }

// post sends one notification and returns the pushkeys the gateway
// rejected, or an error when the gateway failed or could not be reached:
// anything but a 2xx answer. A 2xx answer that is not the spec's JSON
// counts as delivered with nothing rejected.
func post(ctx context.Context, client *http.Client, gateway string, b notifyBody) ([]string, error) {
	j, err := json.Marshal(b)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, gateway, bytes.NewReader(j))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if resp.StatusCode/100 != 2 {
		return nil, errStatus(resp.StatusCode)
	}
	if err != nil {
		return nil, err
	}
	var out struct {
		Rejected []string `json:"rejected"`
	}
	_ = json.Unmarshal(raw, &out)
	return out.Rejected, nil
}
