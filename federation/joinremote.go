package federation

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	gosync "sync"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/roomdag"
)

// Joining a room on other servers (server-server API, "Joining Rooms", the
// joining server's side): make_join on a server in the room, the template
// filled in, hashed and signed, send_join, and the answer verified and
// taken in: every state and auth chain event checked (format, hashes,
// signatures, auth rules against its own auth events) and stored as an
// outlier, auth events first, then the join itself with the returned
// state before it.

// RoomReceiver is what a remote join needs of the write path
// (roomdag.Rooms).
type RoomReceiver interface {
	Receive(ctx context.Context, ev *roomdag.Event, opts roomdag.ReceiveOptions) (*roomdag.ReceiveResult, error)
	ReceiveOutliers(ctx context.Context, evs []*roomdag.Event, verifier roomdag.SignatureVerifier) ([]roomdag.OutlierResult, error)
}

// RemoteJoiner joins local users to rooms on other servers.
type RemoteJoiner struct {
	Server   roomdag.ServerName
	Key      roomdag.SigningKey
	Client   Client
	Verifier roomdag.SignatureVerifier
	Rooms    RoomReceiver
	Clock    clock.Clock
	Log      *slog.Logger
	// Parallel bounds the signatures of a send_join answer's events
	// checked at once; 0 is 8.
	Parallel int

	mu      gosync.Mutex
	joining map[roomdag.RoomID]*roomJoin
}

// roomJoin serialises the joins of one room: a second would take in the
// same answer while the first does.
type roomJoin struct {
	mu   gosync.Mutex
	refs int
}

// lockRoom waits for the other joins of room to end, and returns the
// unlock.
func (j *RemoteJoiner) lockRoom(room roomdag.RoomID) func() {
	j.mu.Lock()
	if j.joining == nil {
		j.joining = map[roomdag.RoomID]*roomJoin{}
	}
	l := j.joining[room]
	if l == nil {
		l = &roomJoin{}
		j.joining[room] = l
	}
	l.refs++
	j.mu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		j.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(j.joining, room)
		}
		j.mu.Unlock()
	}
}

// ResolveAlias asks the alias's server which room it names and which
// servers are in it (GET /_matrix/federation/v1/query/directory).
func (j *RemoteJoiner) ResolveAlias(ctx context.Context, alias roomdag.RoomAlias) (roomdag.RoomID, []roomdag.ServerName, error) {
	path := "/_matrix/federation/v1/query/directory?room_alias=" + url.QueryEscape(string(alias))
	var out struct {
		RoomID  string   `json:"room_id"`
		Servers []string `json:"servers"`
	}
	if err := j.call(ctx, alias.Server(), http.MethodGet, path, nil, &out); err != nil {
		return "", nil, err
	}
	room, err := roomdag.ParseRoomID(out.RoomID)
	if err != nil {
		return "", nil, fmt.Errorf("%s answered the alias %s with %q, not a room ID", alias.Server(), alias, out.RoomID)
	}
	servers := []roomdag.ServerName{alias.Server()}
	for _, s := range out.Servers {
		if sn := roomdag.ServerName(s); sn != "" && !slices.Contains(servers, sn) {
			servers = append(servers, sn)
		}
	}
	return room, servers, nil
}

// Join joins user to room through the first of servers that lets it in,
// content adding to the join's content (display name, avatar; membership
// stays "join"). The error of a server that refused the join (a 4xx
// other than 404 and 429) ends the attempt; unreachable or failing
// servers are skipped for the next, and the last error is returned.
func (j *RemoteJoiner) Join(ctx context.Context, room roomdag.RoomID, user roomdag.UserID, servers []roomdag.ServerName, content map[string]json.RawMessage) (*roomdag.Event, error) {
	if len(servers) == 0 {
		return nil, httpapi.NotFound("no server to join %s through is known", room)
	}
	defer j.lockRoom(room)()
	var last error
	for _, s := range servers {
		if s == j.Server {
			continue
		}
		ev, err := j.joinVia(ctx, s, room, user, content)
		if err == nil {
			return ev, nil
		}
		j.Log.Info("remote join failed", "room", room, "user", user, "server", s, "err", err)
		last = err
		var re *remoteError
		if errors.As(err, &re) && re.status >= 400 && re.status < 500 && re.status != http.StatusNotFound && re.status != http.StatusTooManyRequests {
			return nil, re.matrix()
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
	var re *remoteError
	if errors.As(last, &re) {
		return nil, re.matrix()
	}
	return nil, httpapi.Errorf(http.StatusBadGateway, httpapi.CodeUnknown, "no server in the room could be joined through: %v", last)
}

// makeJoinAnswer is make_join's answer.
type makeJoinAnswer struct {
	RoomVersion string `json:"room_version"`
	Event       struct {
		RoomID     roomdag.RoomID             `json:"room_id"`
		Sender     roomdag.UserID             `json:"sender"`
		Type       string                     `json:"type"`
		StateKey   *string                    `json:"state_key"`
		Content    map[string]json.RawMessage `json:"content"`
		PrevEvents json.RawMessage            `json:"prev_events"`
		AuthEvents json.RawMessage            `json:"auth_events"`
		Depth      int64                      `json:"depth"`
	} `json:"event"`
}

// SendJoinAnswer is send_join's answer (v2; v1 wraps it in [200, ...]).
type SendJoinAnswer struct {
	State     []json.RawMessage `json:"state"`
	AuthChain []json.RawMessage `json:"auth_chain"`
	Event     json.RawMessage   `json:"event,omitempty"`
	Origin    string            `json:"origin"`
}

func (j *RemoteJoiner) joinVia(ctx context.Context, server roomdag.ServerName, room roomdag.RoomID, user roomdag.UserID, content map[string]json.RawMessage) (*roomdag.Event, error) {
	q := url.Values{}
	for _, v := range roomdag.RoomVersions() {
		q.Add("ver", v.ID)
	}
	var mj makeJoinAnswer
	path := "/_matrix/federation/v1/make_join/" + url.PathEscape(string(room)) + "/" + url.PathEscape(string(user)) + "?" + q.Encode()
	if err := j.call(ctx, server, http.MethodGet, path, nil, &mj); err != nil {
		return nil, err
	}
	if mj.RoomVersion == "" {
		mj.RoomVersion = "1"
	}
	v, ok := roomdag.LookupRoomVersion(mj.RoomVersion)
	if !ok {
		return nil, fmt.Errorf("%s offers a join to a room of version %q, which this server cannot join", server, mj.RoomVersion)
	}
	t := mj.Event
	if t.RoomID != room || t.Sender != user || t.Type != roomdag.TypeMember || t.StateKey == nil || *t.StateKey != string(user) {
		return nil, fmt.Errorf("%s answered make_join with a template that is not %s's join to %s", server, user, room)
	}
	c := map[string]json.RawMessage{}
	for k, val := range content {
		c[k] = val
	}
	// The resident server's choice of authorising user stands.
	if via, ok := t.Content[keyAuthorisedVia]; ok {
		c[keyAuthorisedVia] = via
	}
	c["membership"] = jsonString(roomdag.MembershipJoin)
	rawContent, _ := json.Marshal(c)
	join, err := roomdag.BuildEvent(v, j.Key, roomdag.EventTemplate{RoomID: room, Sender: user, Type: roomdag.TypeMember,
		EventID: newEventID(v, j.Server), StateKey: t.StateKey, Content: rawContent, PrevRefs: t.PrevEvents, AuthRefs: t.AuthEvents,
		Depth: t.Depth, OriginServerTS: j.Clock.Now().UnixMilli()})
	if err != nil {
		return nil, fmt.Errorf("building the join from %s's template: %w", server, err)
	}
	answer, err := j.sendJoin(ctx, server, join)
	if err != nil {
		return nil, err
	}
	if len(answer.Event) > 0 {
		// The resident server's copy, co-signed for a restricted join.
		if ev, err := roomdag.NewEventFromJSON(v, answer.Event); err == nil && ev.ID() == join.ID() {
			join = ev
		}
	}
	return j.TakeJoin(ctx, v, join, answer)
}

// sendJoin PUTs the join to server: v2, or v1 where v2 is not served.
func (j *RemoteJoiner) sendJoin(ctx context.Context, server roomdag.ServerName, join *roomdag.Event) (*SendJoinAnswer, error) {
	tail := url.PathEscape(string(join.RoomID())) + "/" + url.PathEscape(string(join.ID()))
	var answer SendJoinAnswer
	err := j.call(ctx, server, http.MethodPut, "/_matrix/federation/v2/send_join/"+tail, join.JSON(), &answer)
	var re *remoteError
	if errors.As(err, &re) && (re.status == http.StatusNotFound && re.code != httpapi.CodeNotFound || re.code == httpapi.CodeUnrecognized) {
		var v1 [2]json.RawMessage
		if err := j.call(ctx, server, http.MethodPut, "/_matrix/federation/v1/send_join/"+tail, join.JSON(), &v1); err != nil {
			return nil, err
		}
		if err := json.Unmarshal(v1[1], &answer); err != nil {
			return nil, fmt.Errorf("%s's send_join answer: %w", server, err)
		}
		return &answer, nil
	}
	return &answer, err
}

// TakeJoin takes in a send_join answer for join, an event of room version
// v: every state and auth chain event is received as an outlier (checked,
// stored), each after its auth events, and the join then live, with the
// returned state (what of it was accepted) before it. Events that fail
// their checks are left out; the join's own auth checks then decide.
func (j *RemoteJoiner) TakeJoin(ctx context.Context, v *roomdag.RoomVersion, join *roomdag.Event, answer *SendJoinAnswer) (*roomdag.Event, error) {
	room := join.RoomID()
	evs := map[roomdag.EventID]*roomdag.Event{}
	var stateIDs []roomdag.EventID
	parse := func(raws []json.RawMessage, state bool) {
		for _, raw := range raws {
			ev, err := roomdag.NewEventFromJSON(v, raw)
			if err != nil || ev.RoomID() != room || ev.ID() == join.ID() {
				continue
			}
			if state {
				if !ev.IsState() {
					continue
				}
				stateIDs = append(stateIDs, ev.ID())
			}
			evs[ev.ID()] = ev
		}
	}
	parse(answer.State, true)
	parse(answer.AuthChain, false)
	var create *roomdag.Event
	for _, id := range stateIDs {
		if evs[id].IsCreate() {
			create = evs[id]
		}
	}
	if create == nil {
		return nil, fmt.Errorf("the send_join answer's state has no create event")
	}
	var cc struct {
		RoomVersion string `json:"room_version"`
	}
	_ = json.Unmarshal(create.Content(), &cc)
	if cc.RoomVersion == "" {
		cc.RoomVersion = "1"
	}
	if cc.RoomVersion != v.ID {
		return nil, fmt.Errorf("the room's create event says version %s, make_join said %s", cc.RoomVersion, v.ID)
	}
	ok, err := j.receiveOutliers(ctx, evs)
	if err != nil {
		return nil, err
	}
	before := make([]roomdag.EventID, 0, len(stateIDs))
	for _, id := range stateIDs {
		if ok[id] {
			before = append(before, id)
		}
	}
	slices.Sort(before)
	before = slices.Compact(before)
	res, err := j.Rooms.Receive(ctx, join, roomdag.ReceiveOptions{Kind: roomdag.KindLive, Verifier: j.Verifier, StateBefore: before, NoSoftFail: true})
	if err != nil {
		return nil, fmt.Errorf("taking in the join: %w", err)
	}
	if res.Status != roomdag.StatusTimeline {
		return nil, httpapi.Forbidden("the join is not allowed by the room's state: %v", res.Rejection)
	}
	return res.Event, nil
}

// receiveOutliers receives evs as outliers, each after its auth events
// among evs (ordered by level: one more than the highest of its auth
// events'), all in one roomdag.Rooms.ReceiveOutliers so that they share
// commits. Their signatures, the costly part, are checked first,
// Parallel at once. It reports which were stored and not rejected.
func (j *RemoteJoiner) receiveOutliers(ctx context.Context, evs map[roomdag.EventID]*roomdag.Event) (map[roomdag.EventID]bool, error) {
	level := make(map[roomdag.EventID]int, len(evs))
	// The create event comes first: from v12 no event cites it among its
	// auth events, which the room ID implies.
	var create roomdag.EventID
	for id, ev := range evs {
		if ev.IsCreate() {
			create = id
		}
	}
	var depthOf func(id roomdag.EventID) int
	depthOf = func(id roomdag.EventID) int {
		if l, ok := level[id]; ok {
			return l
		}
		level[id] = 0 // cuts cycles, which no valid auth chain has
		l := 0
		if create != "" && id != create {
			l = 1
		}
		for _, a := range evs[id].AuthEvents() {
			if evs[a] != nil {
				l = max(l, depthOf(a)+1)
			}
		}
		level[id] = l
		return l
	}
	order := make([]*roomdag.Event, 0, len(evs))
	for id, ev := range evs {
		depthOf(id)
		order = append(order, ev)
	}
	slices.SortFunc(order, func(a, b *roomdag.Event) int {
		return cmp.Or(cmp.Compare(level[a.ID()], level[b.ID()]), strings.Compare(string(a.ID()), string(b.ID())))
	})

	par := j.Parallel
	if par <= 0 {
		par = 8
	}
	verdicts := make([]error, len(order))
	work := make(chan int)
	var wg gosync.WaitGroup
	for range min(par, len(order)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				verdicts[i] = j.Verifier.VerifyEventSignatures(ctx, order[i], order[i].OriginServerTS())
			}
		}()
	}
	for i := range order {
		work <- i
	}
	close(work)
	wg.Wait()
	checked := checkedSignatures{verdicts: make(map[roomdag.EventID]error, len(order)), next: j.Verifier}
	for i, ev := range order {
		checked.verdicts[ev.ID()] = verdicts[i]
	}

	// In chunks, in order: each shares commits, and the writes queued at
	// once stay bounded.
	ok := make(map[roomdag.EventID]bool, len(evs))
	for len(order) > 0 {
		chunk := order[:min(len(order), outlierChunk)]
		order = order[len(chunk):]
		results, err := j.Rooms.ReceiveOutliers(ctx, chunk, checked)
		if err != nil {
			return nil, err
		}
		for i, r := range results {
			switch {
			case r.Err == nil:
				ok[chunk[i].ID()] = r.Result.Status != roomdag.StatusRejected
			case isBadEvent(r.Err):
				j.Log.Info("send_join answer: event left out", "event", chunk[i].ID(), "err", r.Err)
			default:
				return nil, r.Err
			}
		}
	}
	return ok, nil
}

// outlierChunk is how many events one ReceiveOutliers takes.
const outlierChunk = 2000

// checkedSignatures is a SignatureVerifier over verdicts already reached
// (concurrently, before the events are received), next for others.
type checkedSignatures struct {
	verdicts map[roomdag.EventID]error
	next     roomdag.SignatureVerifier
}

func (c checkedSignatures) VerifyEventSignatures(ctx context.Context, ev *roomdag.Event, atTS int64) error {
	if err, ok := c.verdicts[ev.ID()]; ok {
		return err
	}
	return c.next.VerifyEventSignatures(ctx, ev, atTS)
}

// isBadEvent says whether Receive refused an event for what it is (a
// signature, format, missing auth events), not for a failure of this
// server's.
func isBadEvent(err error) bool {
	var missing *roomdag.MissingEventsError
	return errors.As(err, &missing) || errors.Is(err, roomdag.ErrSignature) || errors.Is(err, roomdag.ErrEventFormat) ||
		errors.Is(err, ErrUnknownKey)
}

// remoteError is a Matrix error another server answered with.
type remoteError struct {
	server  roomdag.ServerName
	status  int
	code    string
	message string
}

func (e *remoteError) Error() string {
	return fmt.Sprintf("%s answered %d %s: %s", e.server, e.status, e.code, e.message)
}

// matrix is the error for the client: the remote server's code and
// status (a refusal of the join is the client's to see), prefixed with
// who said it; a server error is a 502.
func (e *remoteError) matrix() *httpapi.Error {
	status, code := e.status, e.code
	if status >= 500 || code == "" {
		status, code = http.StatusBadGateway, httpapi.CodeUnknown
	}
	return httpapi.Errorf(status, code, "%s: %s", e.server, e.message)
}

// maxJoinResponse bounds a send_join answer (the state of a big room).
const maxJoinResponse = 512 << 20

// call sends a signed request to server and decodes its JSON answer into
// out; a non-200 answer is a *remoteError.
func (j *RemoteJoiner) call(ctx context.Context, server roomdag.ServerName, method, path string, body []byte, out any) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := j.Client.Do(ctx, server, req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxJoinResponse+1))
	if err != nil {
		return fmt.Errorf("reading %s's answer: %w", server, err)
	}
	if len(b) > maxJoinResponse {
		return fmt.Errorf("%s's answer is over %d bytes", server, maxJoinResponse)
	}
	if resp.StatusCode != http.StatusOK {
		var me struct {
			Code  string `json:"errcode"`
			Error string `json:"error"`
		}
		_ = json.Unmarshal(b, &me)
		if me.Error == "" {
			me.Error = strings.TrimSpace(string(b[:min(len(b), 200)]))
		}
		return &remoteError{server: server, status: resp.StatusCode, code: me.Code, message: me.Error}
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s's answer to %s: %w", server, strings.SplitN(path, "?", 2)[0], err)
	}
	return nil
}

// newEventID is the ID this server gives an event of version v it
// builds from a template: in rooms v1 and v2 "$opaque:server", opaque
// and unique (rooms/v1 "Event IDs"); "" from v3, where the ID is a hash.
func newEventID(v *roomdag.RoomVersion, server roomdag.ServerName) roomdag.EventID {
	if v.EventFormat != roomdag.EventFormatV1 {
		return ""
	}
	var b [15]byte
	_, _ = rand.Read(b[:])
	return roomdag.EventID("$" + base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]) + ":" + string(server))
}
