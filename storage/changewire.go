package storage

import (
	"encoding/json"
	"errors"

	"github.com/persistentchat/homeserver/roomdag"
)

// The wire form of a Change, as the payload of a PostgreSQL NOTIFY: compact
// JSON with one-letter keys, at most MaxChangePayload bytes.
//
//	{"o":"<origin>","f":FIRST,"l":LAST,            event stream range (absent: no events)
//	 "a":[{"u":"@u:hs","p":POS}],                  account data
//	 "r":[{"r":"!room","u":"@u:hs","p":POS,"v":1}], receipts ("v":1: private)
//	 "p":[{"u":"@u:hs","p":POS}],                  presence
//	 "n":{"p":POS,"u":["@u:hs"]},                  notification worker step
//	 "s":["@u:hs"], "x":["@u:hs"],                 sessions ended, users erased
//	 "t":[{"r":"!room","u":"@u:hs","e":MS,"p":POS}], typing ("e" absent: stopped)
//	 "d":[{"u":"@u:hs","p":POS}],                  to-device messages stored for users
//	 "dl":[{"u":"@u:hs","p":POS}]}                 device lists changed
//
// A change whose form would be longer is sent as {"o":..,"f":..,"l":..,"z":1}:
// "reload", the receiver re-reads every stream from the positions it knows
// and wakes everybody, as after a lost connection.

// MaxChangePayload is the longest payload sent: PostgreSQL refuses NOTIFY
// payloads of 8000 bytes or more.
const MaxChangePayload = 7999

type wireChange struct {
	Origin        string         `json:"o"`
	First         int64          `json:"f,omitempty"`
	Last          int64          `json:"l,omitempty"`
	AccountData   []wireUserPos  `json:"a,omitempty"`
	Receipts      []wireReceipt  `json:"r,omitempty"`
	Presence      []wireUserPos  `json:"p,omitempty"`
	Notifications *wireNotify    `json:"n,omitempty"`
	SessionsEnded []string       `json:"s,omitempty"`
	Erased        []string       `json:"x,omitempty"`
	Reload        int            `json:"z,omitempty"`
	Typing        []wireTyping   `json:"t,omitempty"`
	Activity      []wireActivity `json:"pa,omitempty"`
	ToDevice      []wireUserPos  `json:"d,omitempty"`
	DeviceLists   []wireUserPos  `json:"dl,omitempty"`
}

type wireActivity struct {
	User      string `json:"u"`
	Connected int    `json:"c,omitempty"`
}

// PresenceActivity is a change of whether a user has a client connected
// (syncing, or within the offline timeout of its last sync) to the
// process that announces it: not stored, sent on its own
// (EncodeActivity), so that no process takes a user offline while another
// still serves one of their clients.
type PresenceActivity struct {
	User      roomdag.UserID
	Connected bool
}

// EncodeActivity is the wire form of presence activity announced by
// origin: {"o":..,"pa":[{"u":"@u:hs","c":1}]} ("c" absent: disconnected).
// The caller keeps it short (one user's change).
func EncodeActivity(origin string, acts []PresenceActivity) string {
	w := wireChange{Origin: origin}
	for _, a := range acts {
		wa := wireActivity{User: string(a.User)}
		if a.Connected {
			wa.Connected = 1
		}
		w.Activity = append(w.Activity, wa)
	}
	b, _ := json.Marshal(w) // strings and numbers: cannot fail
	return string(b)
}

type wireUserPos struct {
	User string `json:"u"`
	Pos  int64  `json:"p"`
}

type wireReceipt struct {
	Room    string `json:"r"`
	User    string `json:"u"`
	Pos     int64  `json:"p"`
	Private int    `json:"v,omitempty"`
}

type wireNotify struct {
	Pos   int64    `json:"p"`
	Users []string `json:"u,omitempty"`
}

type wireTyping struct {
	Room      string `json:"r"`
	User      string `json:"u"`
	ExpiresMS int64  `json:"e,omitempty"`
	Pos       int64  `json:"p"`
}

// EncodeChange is c's wire form, sent by origin.
func EncodeChange(origin string, c *Change) string {
	w := wireChange{Origin: origin, First: int64(c.FirstEvent), Last: int64(c.LastEvent)}
	for _, a := range c.AccountData {
		w.AccountData = append(w.AccountData, wireUserPos{string(a.User), a.Pos})
	}
	for _, r := range c.Receipts {
		wr := wireReceipt{Room: string(r.Room), User: string(r.User), Pos: r.Pos}
		if r.Private {
			wr.Private = 1
		}
		w.Receipts = append(w.Receipts, wr)
	}
	for _, p := range c.Presence {
		w.Presence = append(w.Presence, wireUserPos{string(p.User), p.Pos})
	}
	if n := c.Notifications; n != nil {
		w.Notifications = &wireNotify{Pos: int64(n.Pos), Users: userStrings(n.Users)}
	}
	w.SessionsEnded = userStrings(c.SessionsEnded)
	w.Erased = userStrings(c.Erased)
	for _, t := range c.Typing {
		w.Typing = append(w.Typing, wireTyping{Room: string(t.Room), User: string(t.User), ExpiresMS: t.ExpiresMS, Pos: t.Pos})
	}
	for _, d := range c.ToDevice {
		w.ToDevice = append(w.ToDevice, wireUserPos{string(d.User), d.Pos})
	}
	for _, d := range c.DeviceLists {
		w.DeviceLists = append(w.DeviceLists, wireUserPos{string(d.User), d.Pos})
	}
	b, _ := json.Marshal(w) // strings and numbers: cannot fail
	if len(b) > MaxChangePayload {
		b, _ = json.Marshal(wireChange{Origin: origin, First: w.First, Last: w.Last, Reload: 1})
	}
	return string(b)
}

// Announcement is a decoded payload.
type Announcement struct {
	Origin string
	Change Change
	// Reload: the change was too long to send; only its event range is
	// known, and the receiver must re-read every stream.
	Reload bool
	// Activity is presence activity (EncodeActivity).
	Activity []PresenceActivity
}

// DecodeChange parses a payload that EncodeChange or EncodeActivity made.
func DecodeChange(payload string) (*Announcement, error) {
	var w wireChange
	if err := json.Unmarshal([]byte(payload), &w); err != nil {
		return nil, err
	}
	if w.Origin == "" {
		return nil, errors.New("storage: change payload without origin")
	}
	a := &Announcement{Origin: w.Origin, Reload: w.Reload != 0}
	for _, x := range w.Activity {
		a.Activity = append(a.Activity, PresenceActivity{User: roomdag.UserID(x.User), Connected: x.Connected != 0})
	}
	c := &a.Change
	c.FirstEvent, c.LastEvent = roomdag.StreamPos(w.First), roomdag.StreamPos(w.Last)
	for _, x := range w.AccountData {
		c.AccountData = append(c.AccountData, UserPos{roomdag.UserID(x.User), x.Pos})
	}
	for _, r := range w.Receipts {
		c.Receipts = append(c.Receipts, ReceiptChange{Room: roomdag.RoomID(r.Room), User: roomdag.UserID(r.User),
			Private: r.Private != 0, Pos: r.Pos})
	}
	for _, x := range w.Presence {
		c.Presence = append(c.Presence, UserPos{roomdag.UserID(x.User), x.Pos})
	}
	if n := w.Notifications; n != nil {
		c.Notifications = &NotificationsChange{Pos: roomdag.StreamPos(n.Pos), Users: userIDs(n.Users)}
	}
	c.SessionsEnded = userIDs(w.SessionsEnded)
	c.Erased = userIDs(w.Erased)
	for _, t := range w.Typing {
		c.Typing = append(c.Typing, TypingRow{Room: roomdag.RoomID(t.Room), User: roomdag.UserID(t.User), ExpiresMS: t.ExpiresMS, Pos: t.Pos})
	}
	for _, x := range w.ToDevice {
		c.ToDevice = append(c.ToDevice, UserPos{roomdag.UserID(x.User), x.Pos})
	}
	for _, x := range w.DeviceLists {
		c.DeviceLists = append(c.DeviceLists, UserPos{roomdag.UserID(x.User), x.Pos})
	}
	return a, nil
}

func userStrings(us []roomdag.UserID) []string {
	if len(us) == 0 {
		return nil
	}
	out := make([]string, len(us))
	for i, u := range us {
		out[i] = string(u)
	}
	return out
}

func userIDs(ss []string) []roomdag.UserID {
	if len(ss) == 0 {
		return nil
	}
	out := make([]roomdag.UserID, len(ss))
	for i, s := range ss {
		out[i] = roomdag.UserID(s)
	}
	return out
}
