package sync

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"time"

	"github.com/tidwall/gjson"

	"github.com/persistentchat/homeserver/push"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// Topic feeds: follow rooms without joining them and get the messages
// that match one's conditions as a stream (README, "Topic feeds"). Built
// only on what clients can already write, account data and room tags:
//
//   - a joined room is followed when tagged m.favourite or TagFollow;
//   - a room not joined is followed when listed in the TypeFollows
//     account data; only its world_readable history matches;
//   - TypeFeeds account data defines named feeds over followed or listed
//     rooms, with keyword and sender conditions.
//
// Matches are computed when read, so a changed feed applies to the past
// as well; they are delivered by the feed endpoint (api/feeds.go), which
// long-polls like /sync, and in /sync's TypeFeeds section.
const (
	TypeFeeds   = "org.persistentchat.feeds"
	TypeFollows = "org.persistentchat.follows"
	TagFollow   = "org.persistentchat.follow"
)

// Feed is one feed: messages in its rooms (Rooms, plus every followed
// room when Followed is set or Rooms is empty) that match any of Keywords
// (content-rule patterns over the body) and come from one of Senders;
// an empty condition matches everything.
type Feed struct {
	Keywords []string         `json:"keywords,omitempty"`
	Senders  []roomdag.UserID `json:"senders,omitempty"`
	Rooms    []roomdag.RoomID `json:"rooms,omitempty"`
	Followed bool             `json:"followed,omitempty"`
}

// Limits on a feed definition, so that matching stays cheap.
const (
	maxFeeds        = 50
	maxFeedKeywords = 50
	maxFeedSenders  = 100
	maxFeedRooms    = 200
	maxKeywordLen   = 128
	maxFollows      = 1000
)

var feedIDPattern = regexp.MustCompile(`^[A-Za-z0-9._~-]{1,64}$`)

// ParseFeeds reads TypeFeeds account data content, {"feeds": {id: Feed}},
// and says what is wrong with it.
func ParseFeeds(content json.RawMessage) (map[string]Feed, error) {
	var doc struct {
		Feeds map[string]Feed `json:"feeds"`
	}
	if err := json.Unmarshal(content, &doc); err != nil {
		return nil, fmt.Errorf("%s: %v", TypeFeeds, err)
	}
	if len(doc.Feeds) > maxFeeds {
		return nil, fmt.Errorf("%s: at most %d feeds", TypeFeeds, maxFeeds)
	}
	for id, f := range doc.Feeds {
		if !feedIDPattern.MatchString(id) {
			return nil, fmt.Errorf("%s: feed ID %q must be 1 to 64 of A-Z a-z 0-9 . _ ~ -", TypeFeeds, id)
		}
		if len(f.Keywords) > maxFeedKeywords || len(f.Senders) > maxFeedSenders || len(f.Rooms) > maxFeedRooms {
			return nil, fmt.Errorf("%s: feed %q: at most %d keywords, %d senders and %d rooms", TypeFeeds, id, maxFeedKeywords, maxFeedSenders, maxFeedRooms)
		}
		for _, k := range f.Keywords {
			if k == "" || len(k) > maxKeywordLen {
				return nil, fmt.Errorf("%s: feed %q: keywords must be 1 to %d bytes", TypeFeeds, id, maxKeywordLen)
			}
		}
		for _, u := range f.Senders {
			if _, err := roomdag.ParseUserID(string(u)); err != nil {
				return nil, fmt.Errorf("%s: feed %q: sender %q: %v", TypeFeeds, id, u, err)
			}
		}
		for _, r := range f.Rooms {
			if _, err := roomdag.ParseRoomID(string(r)); err != nil {
				return nil, fmt.Errorf("%s: feed %q: room %q: %v", TypeFeeds, id, r, err)
			}
		}
	}
	return doc.Feeds, nil
}

// ParseFollows reads TypeFollows account data content, {"rooms": [...]}.
func ParseFollows(content json.RawMessage) ([]roomdag.RoomID, error) {
	var doc struct {
		Rooms []roomdag.RoomID `json:"rooms"`
	}
	if err := json.Unmarshal(content, &doc); err != nil {
		return nil, fmt.Errorf("%s: %v", TypeFollows, err)
	}
	if len(doc.Rooms) > maxFollows {
		return nil, fmt.Errorf("%s: at most %d rooms", TypeFollows, maxFollows)
	}
	for _, r := range doc.Rooms {
		if _, err := roomdag.ParseRoomID(string(r)); err != nil {
			return nil, fmt.Errorf("%s: room %q: %v", TypeFollows, r, err)
		}
	}
	return doc.Rooms, nil
}

// ErrNoFeed: the user has no feed of that ID.
var ErrNoFeed = errors.New("sync: no such feed")

// feedsOf reads the user's feeds; a broken document (written before
// validation, or by hand) is treated as no feeds rather than failing
// every sync.
func (s *Syncer) feedsOf(ctx context.Context, user roomdag.UserID) (map[string]Feed, error) {
	content, err := s.store.AccountData(ctx, user, "", TypeFeeds)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	feeds, err := ParseFeeds(content)
	if err != nil {
		s.log.Warn("ignoring unreadable feeds", "user", user, "err", err)
		return nil, nil
	}
	return feeds, nil
}

// feedRoom is a room a feed reads, with the reader's membership there.
type feedRoom struct {
	id         roomdag.RoomID
	membership string // "" when the user never had one
}

// feedScope resolves the rooms of the user's feeds: each feed's rooms,
// and the followed rooms (tagged joined rooms and the follow list).
type feedScope struct {
	membership map[roomdag.RoomID]string
	followed   []roomdag.RoomID
	// known: the user's memberships, for unsigned.membership.
	known map[roomdag.RoomID]storage.RoomMembership
}

func (s *Syncer) scope(ctx context.Context, user roomdag.UserID) (*feedScope, error) {
	ms, err := s.store.UserRooms(ctx, user)
	if err != nil {
		return nil, err
	}
	tagged, err := s.store.RoomAccountData(ctx, user, "m.tag")
	if err != nil {
		return nil, err
	}
	sc := &feedScope{membership: map[roomdag.RoomID]string{}, known: MembershipsByRoom(ms)}
	seen := map[roomdag.RoomID]bool{}
	for _, m := range ms {
		sc.membership[m.RoomID] = m.Membership
		tags, ok := tagged[m.RoomID]
		if m.Membership != roomdag.MembershipJoin || !ok {
			continue
		}
		var doc struct {
			Tags map[string]json.RawMessage `json:"tags"`
		}
		if json.Unmarshal(tags, &doc) == nil && (doc.Tags["m.favourite"] != nil || doc.Tags[TagFollow] != nil) {
			sc.followed, seen[m.RoomID] = append(sc.followed, m.RoomID), true
		}
	}
	content, err := s.store.AccountData(ctx, user, "", TypeFollows)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	if err == nil {
		follows, err := ParseFollows(content)
		if err != nil {
			s.log.Warn("ignoring unreadable follow list", "user", user, "err", err)
		}
		for _, r := range follows {
			if !seen[r] {
				sc.followed, seen[r] = append(sc.followed, r), true
			}
		}
	}
	return sc, nil
}

func (sc *feedScope) rooms(f Feed) []feedRoom {
	ids := slices.Clone(f.Rooms)
	if f.Followed || len(f.Rooms) == 0 {
		ids = append(ids, sc.followed...)
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	out := make([]feedRoom, len(ids))
	for i, id := range ids {
		out[i] = feedRoom{id: id, membership: sc.membership[id]}
	}
	return out
}

// unjoined lists the rooms of feeds the user is not joined to: their
// events do not wake the user's requests unless watched.
func (sc *feedScope) unjoined(feeds map[string]Feed) []roomdag.RoomID {
	var out []roomdag.RoomID
	for _, f := range feeds {
		for _, r := range sc.rooms(f) {
			if r.membership != roomdag.MembershipJoin {
				out = append(out, r.id)
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// feedScan bounds the events read per room for one answer: a feed over a
// busy room reports limited rather than reading without end.
const feedScan = 1000

// FeedMatches is a feed's matches in (after, upTo], oldest first.
type FeedMatches struct {
	Events []*roomdag.StoredEvent
	// Limited: there may be older matches in the range than Events holds.
	Limited bool
}

// matches finds the feed's newest matches in (after, upTo], at most limit.
func (s *Syncer) matches(ctx context.Context, user roomdag.UserID, f Feed, rooms []feedRoom, after, upTo roomdag.StreamPos, limit int) (*FeedMatches, error) {
	out := &FeedMatches{}
	for _, r := range rooms {
		evs, limited, err := s.store.RecentEvents(ctx, r.id, after, upTo, feedScan)
		if errors.Is(err, storage.ErrNotFound) {
			continue // a followed room this server does not know
		}
		if err != nil {
			return nil, err
		}
		out.Limited = out.Limited || limited
		var hits []*roomdag.StoredEvent
		for _, ev := range evs {
			// A redacted message has no body left, and matches nothing.
			body := gjson.GetBytes(ev.Content(), "body")
			if ev.Type() != roomdag.TypeMessage || body.Type != gjson.String {
				continue
			}
			if len(f.Senders) > 0 && !slices.Contains(f.Senders, ev.Sender()) {
				continue
			}
			if len(f.Keywords) > 0 && !push.AnyKeyword(f.Keywords, body.Str) {
				continue
			}
			hits = append(hits, ev)
		}
		if len(hits) == 0 {
			continue
		}
		// History visibility: a room not joined shows only what is world
		// readable, a joined one what the user's membership allows.
		current := r.membership
		if current == "" {
			current = roomdag.MembershipLeave
		}
		if hits, err = FilterVisible(ctx, s.store, user, current, hits); err != nil {
			return nil, err
		}
		out.Events = append(out.Events, hits...)
	}
	sort.Slice(out.Events, func(i, j int) bool { return out.Events[i].Pos < out.Events[j].Pos })
	if len(out.Events) > limit {
		out.Events, out.Limited = out.Events[len(out.Events)-limit:], true
	}
	return out, nil
}

// FeedResponse is the feed endpoint's answer.
type FeedResponse struct {
	Chunk     []json.RawMessage `json:"chunk"`
	NextBatch string            `json:"next_batch"`
	Limited   bool              `json:"limited"`
}

// Feed answers the feed endpoint: the feed's matches after since (the
// newest ones when since is nil), long-polling up to timeout when there
// are none yet. The token is the event stream position. If session (nil:
// never) ends meanwhile, Feed answers ErrSessionEnded (sessions.go).
func (s *Syncer) Feed(ctx context.Context, user roomdag.UserID, device string, session *SessionCheck, id string, since *roomdag.StreamPos, timeout time.Duration, limit int) (*FeedResponse, error) {
	feeds, err := s.feedsOf(ctx, user)
	if err != nil {
		return nil, err
	}
	f, ok := feeds[id]
	if !ok {
		return nil, ErrNoFeed
	}
	sc, err := s.scope(ctx, user)
	if err != nil {
		return nil, err
	}
	rooms := sc.rooms(f)
	stop := s.notifier.Watch(user, sc.unjoined(map[string]Feed{id: f}))
	defer stop()
	var deadline <-chan time.Time
	for {
		wake, cur := s.notifier.wakeup(user)
		if err := s.notifier.checkSession(ctx, user, session); err != nil {
			return nil, err
		}
		after := roomdag.StreamPos(0)
		if since != nil {
			after = min(*since, cur.Events)
		}
		m, err := s.matches(ctx, user, f, rooms, after, cur.Events, limit)
		if err != nil {
			return nil, err
		}
		if len(m.Events) > 0 || since == nil || timeout <= 0 {
			view, err := MembershipTrails(ctx, s.store, roomdag.ClientView{NowMS: s.clock.Now().UnixMilli(), UserID: user, DeviceID: device}, sc.known, m.Events)
			if err != nil {
				return nil, err
			}
			resp := &FeedResponse{Chunk: make([]json.RawMessage, 0, len(m.Events)), NextBatch: fmt.Sprint(int64(cur.Events)), Limited: m.Limited}
			for _, ev := range m.Events {
				resp.Chunk = append(resp.Chunk, ev.ClientJSON(view))
			}
			return resp, nil
		}
		if deadline == nil {
			deadline = s.clock.After(timeout)
		}
		s.parked.Add(1)
		select {
		case <-wake:
		case <-deadline:
			timeout = 0
		case <-s.closing:
			timeout = 0
		case <-ctx.Done():
			s.parked.Add(-1)
			return nil, ctx.Err()
		}
		s.parked.Add(-1)
	}
}

// FeedSection is one feed's part of /sync's TypeFeeds section.
type FeedSection struct {
	Events  []json.RawMessage `json:"events"`
	Limited bool              `json:"limited,omitempty"`
}

// feedLimit bounds one feed's events in one /sync.
const feedLimit = 100

// feedSections fills /sync's TypeFeeds section for an incremental sync:
// each feed's matches between the two tokens. Feeds without new matches
// are absent.
func (s *Syncer) feedSections(ctx context.Context, req Request, since, cur Token) (map[string]*FeedSection, error) {
	if req.Since == nil || cur.Events <= since.Events {
		return nil, nil
	}
	feeds, err := s.feedsOf(ctx, req.User)
	if err != nil || len(feeds) == 0 {
		return nil, err
	}
	sc, err := s.scope(ctx, req.User)
	if err != nil {
		return nil, err
	}
	view := roomdag.ClientView{NowMS: s.clock.Now().UnixMilli(), UserID: req.User, DeviceID: req.Device}
	var out map[string]*FeedSection
	for id, f := range feeds {
		m, err := s.matches(ctx, req.User, f, sc.rooms(f), since.Events, cur.Events, feedLimit)
		if err != nil {
			return nil, err
		}
		if len(m.Events) == 0 {
			continue
		}
		sec := &FeedSection{Limited: m.Limited}
		// One lookup per room at most, shared by the feeds.
		if view, err = MembershipTrails(ctx, s.store, view, sc.known, m.Events); err != nil {
			return nil, err
		}
		for _, ev := range m.Events {
			sec.Events = append(sec.Events, ev.ClientJSON(view))
		}
		if out == nil {
			out = map[string]*FeedSection{}
		}
		out[id] = sec
	}
	return out, nil
}

// feedWatch is the rooms a long-polling /sync must also hear of: the
// user's followed rooms that they are not joined to.
func (s *Syncer) feedWatch(ctx context.Context, user roomdag.UserID) ([]roomdag.RoomID, error) {
	feeds, err := s.feedsOf(ctx, user)
	if err != nil || len(feeds) == 0 {
		return nil, err
	}
	sc, err := s.scope(ctx, user)
	if err != nil {
		return nil, err
	}
	return sc.unjoined(feeds), nil
}
