// Package retention deletes expired room history on a schedule and keeps
// legal holds, which suspend it (issue 13).
//
// A room's retention policy is its m.room.retention state event
// (max_lifetime, min_lifetime: milliseconds, MSC1763 as Synapse reads
// it), or the server's default policy where it has none, bounded by the
// server's allowed range (Policy.Effective). Purge jobs (Purger) run
// under the "retention" lease, each on its interval, over the rooms whose
// effective max_lifetime lies in the job's range; a purge deletes what
// storage's PurgeHistory describes (never state, never the newest event),
// the search index entries and relations of what it deletes, and the
// local media no remaining event refers to, then asks the archive, if
// there is one, to purge its records of the room before the same time.
//
// Legal holds (Holds) are on a user's events or on a room: a held room is
// not purged at all, a held user's events in any room are not purged, nor
// the media they uploaded, and a held user's account cannot be erased
// (CheckErasure). Holds are
// made and released by server administrators only, through the admin API
// (Routes) or the command line; every hold, release and purge is told to
// the AdminActionRecorder, if there is one, for the compliance archive.
package retention

import (
	"encoding/json"
	"time"

	"github.com/persistentchat/homeserver/httpapi"
)

// EventType is the room retention policy's state event type.
const EventType = "m.room.retention"

// Policy is the server's retention configuration (configs.Retention).
type Policy struct {
	// DefaultMin and DefaultMax are the policy of rooms without an
	// m.room.retention event; DefaultMax 0: kept for ever.
	DefaultMin, DefaultMax time.Duration
	// AllowedMin and AllowedMax bound a room's max_lifetime; 0: no bound.
	AllowedMin, AllowedMax time.Duration
}

// Lifetimes is a room's effective retention policy.
type Lifetimes struct {
	Min, Max time.Duration // Max 0: kept for ever
}

// Effective is the policy of a room whose m.room.retention content is
// content (nil: it has none). As in Synapse, a max_lifetime outside the
// allowed range is clamped to it, and an event without one (or with one
// that is not a non-negative integer) falls back to the default policy;
// min_lifetime never exceeds max_lifetime.
func (p Policy) Effective(content []byte) Lifetimes {
	l := Lifetimes{Min: p.DefaultMin, Max: p.DefaultMax}
	if content != nil {
		var c struct {
			Max json.RawMessage `json:"max_lifetime"`
			Min json.RawMessage `json:"min_lifetime"`
		}
		if json.Unmarshal(content, &c) == nil {
			if ms, ok := lifetimeMS(c.Max); ok {
				l.Max = clamp(time.Duration(ms)*time.Millisecond, p.AllowedMin, p.AllowedMax)
			}
			if ms, ok := lifetimeMS(c.Min); ok {
				l.Min = clamp(time.Duration(ms)*time.Millisecond, p.AllowedMin, p.AllowedMax)
			}
		}
	}
	if l.Max != 0 && l.Min > l.Max {
		l.Min = l.Max
	}
	return l
}

// lifetimeMS reads a lifetime: a non-negative integer of milliseconds,
// within what a time.Duration holds.
func lifetimeMS(raw json.RawMessage) (int64, bool) {
	if len(raw) == 0 {
		return 0, false
	}
	var ms int64
	if json.Unmarshal(raw, &ms) != nil || ms < 0 || ms > int64(time.Duration(1<<62)/time.Millisecond) {
		return 0, false
	}
	return ms, true
}

func clamp(d, lo, hi time.Duration) time.Duration {
	if lo != 0 && d < lo {
		d = lo
	}
	if hi != 0 && d > hi {
		d = hi
	}
	return d
}

// Job is one purge job: every Interval it purges the rooms whose
// effective max_lifetime lies in [Shortest, Longest] (0: unbounded).
type Job struct {
	Shortest, Longest time.Duration
	Interval          time.Duration
}

// covers reports whether the job purges rooms of max_lifetime max.
func (j Job) covers(max time.Duration) bool {
	return max != 0 && (j.Shortest == 0 || max >= j.Shortest) && (j.Longest == 0 || max <= j.Longest)
}

// ValidateContent checks the content of an m.room.retention event a
// local user sends, as Synapse does: max_lifetime and min_lifetime, where
// present and not null, are non-negative integers of milliseconds, and
// min_lifetime is at most max_lifetime. It returns 400 M_BAD_JSON
// otherwise. (Events from elsewhere that break it are read by Effective
// as if the bad field were absent.)
func ValidateContent(content []byte) error {
	var c map[string]json.RawMessage
	if json.Unmarshal(content, &c) != nil {
		return httpapi.BadJSON("m.room.retention content must be an object")
	}
	var got [2]int64
	for i, field := range []string{"max_lifetime", "min_lifetime"} {
		raw, ok := c[field]
		if !ok || string(raw) == "null" {
			got[i] = -1
			continue
		}
		ms, ok := lifetimeMS(raw)
		if !ok {
			return httpapi.BadJSON("'%s' must be a non-negative integer of milliseconds", field)
		}
		got[i] = ms
	}
	if got[0] >= 0 && got[1] > got[0] {
		return httpapi.BadJSON("'min_lifetime' can't be greater than 'max_lifetime'")
	}
	return nil
}
