package mautrixe2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.mau.fi/util/random"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// asRequest is one request the homeserver made to the application service.
type asRequest struct {
	method, path string
	body         []byte
}

// TestAppService runs a bridge built on mautrix-go's appservice package
// against the homeserver: the registration is the one mautrix writes
// (Registration.Save), the HTTP server and transaction handling are
// mautrix's (AppService.Start, EventProcessor), and the bridge acts through
// IntentAPI as its bot and as a ghost user, the way mautrix bridges do.
func TestAppService(t *testing.T) {
	asPort := freePort(t)
	falseVal := false
	reg := &appservice.Registration{
		ID:              "mautrix-e2e",
		URL:             fmt.Sprintf("http://127.0.0.1:%d", asPort),
		AppToken:        random.String(64),
		ServerToken:     random.String(64),
		SenderLocalpart: "mbridgebot",
		RateLimited:     &falseVal,
		Namespaces: appservice.Namespaces{
			UserIDs:     appservice.NamespaceList{{Regex: "@mbridge_.*", Exclusive: true}},
			RoomAliases: appservice.NamespaceList{{Regex: "#mbridge_.*", Exclusive: true}},
		},
		// As bridgev2's bridgeconfig writes it with ephemeral events on.
		EphemeralEvents:     true,
		SoruEphemeralEvents: true,
	}
	regDir := t.TempDir()
	regPath := filepath.Join(regDir, "mautrix-registration.yaml")
	if err := reg.Save(regPath); err != nil {
		t.Fatalf("saving the registration: %v", err)
	}
	hs := startHomeserver(t, func(cfg string) string {
		return setYAMLKey(t, cfg, "", "app_service_config_files", fmt.Sprintf("[%q]", regPath))
	})
	ctx := t.Context()

	// The application service: mautrix's HTTP server on loopback, its log
	// kept for a failure, and a middleware that records every request the
	// homeserver makes.
	asLog := &logBuffer{}
	as, err := appservice.CreateFull(appservice.CreateOpts{
		Registration:     reg,
		HomeserverDomain: hs.serverName,
		HomeserverURL:    hs.baseURL,
		HostConfig:       appservice.HostConfig{Hostname: "127.0.0.1", Port: uint16(asPort)},
	})
	if err != nil {
		t.Fatalf("appservice.CreateFull: %v", err)
	}
	as.Log = zerolog.New(zerolog.ConsoleWriter{Out: asLog, NoColor: true, TimeFormat: time.TimeOnly}).
		Level(zerolog.DebugLevel).With().Timestamp().Logger()
	requests := make(chan asRequest, 4096)
	var refusedMu sync.Mutex
	var refused []string // requests mautrix answered with an error
	as.Middleware = append(as.Middleware, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
			requests <- asRequest{method: r.Method, path: r.URL.Path, body: body}
			rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
			next.ServeHTTP(rec, r)
			if rec.status >= 400 && r.URL.Path != "/_matrix/mau/live" {
				refusedMu.Lock()
				refused = append(refused, fmt.Sprintf("%s %s -> %d", r.Method, r.URL.Path, rec.status))
				refusedMu.Unlock()
			}
		})
	})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- application service (mautrix) log ---\n%s", asLog.String())
		}
	})

	// mautrix's event processor, in Sync mode so that handlers run in
	// transaction order.
	messages, members, typing, receipts := newEvents(), newEvents(), newEvents(), newEvents()
	ep := appservice.NewEventProcessor(as)
	ep.ExecMode = appservice.Sync
	ep.On(event.EventMessage, messages.handler)
	ep.On(event.StateMember, members.handler)
	ep.On(event.EphemeralEventTyping, typing.handler)
	ep.On(event.EphemeralEventReceipt, receipts.handler)
	ep.Start(context.Background())
	served := make(chan struct{})
	go func() {
		defer close(served)
		as.Start()
	}()
	t.Cleanup(func() {
		as.Stop()
		select {
		case <-served:
		case <-time.After(waitTimeout):
			t.Errorf("the application service's HTTP server did not stop")
		}
		ep.Stop()
	})
	waitLive(t, fmt.Sprintf("http://127.0.0.1:%d/_matrix/mau/live", asPort), served)

	// 0. What bridgev2's start-up check asks of /versions.
	bot := as.BotIntent()
	versions, err := bot.Versions(ctx)
	if err != nil {
		t.Fatalf("/versions: %v", err)
	}
	if !versions.ContainsGreaterOrEqual(mautrix.SpecV14) || !versions.Supports(mautrix.FeatureAppservicePing) {
		t.Fatalf("/versions %v: mautrix bridges need v1.4 and the appservice ping (v1.7)", versions.Versions)
	}
	*as.SpecVersions = *versions

	// 1. Ping: the service asks the homeserver (POST
	// /_matrix/client/v1/appservice/{id}/ping), which pings the service
	// with the same transaction ID; mautrix's own start-up check passes.
	pong, err := bot.AppservicePing(ctx, reg.ID, "mautrix-e2e-ping-1")
	if err != nil {
		t.Fatalf("AppservicePing: %v", err)
	}
	if pong.DurationMS < 0 {
		t.Fatalf("AppservicePing: duration_ms %d", pong.DurationMS)
	}
	ping := nextRequest(t, requests, "the homeserver's ping", func(r asRequest) bool {
		return r.method == http.MethodPost && r.path == "/_matrix/app/v1/ping"
	})
	var pingBody struct {
		TxnID string `json:"transaction_id"`
	}
	if err := json.Unmarshal(ping.body, &pingBody); err != nil || pingBody.TxnID != "mautrix-e2e-ping-1" {
		t.Fatalf("the homeserver's ping body %s: want transaction_id mautrix-e2e-ping-1", ping.body)
	}
	if !bot.EnsureAppserviceConnection(ctx) {
		t.Fatalf("EnsureAppserviceConnection failed")
	}
	if _, err := hs.register(t, ctx, "pinger", "pinger-password").AppservicePing(ctx, reg.ID, "x"); !isErr(err, mautrix.MForbidden) {
		t.Fatalf("a user's ping of the service: %v, want M_FORBIDDEN", err)
	}
	who, err := bot.Whoami(ctx)
	if err != nil || who.UserID != as.BotMXID() {
		t.Fatalf("whoami as the bot: %+v, %v; want %s", who, err, as.BotMXID())
	}

	// 2. alice makes a private room and invites the bot; the invite comes
	// in a transaction and the bot joins.
	alice := hs.register(t, ctx, "alice", "alice-password-1")
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "bridged"})
	if err != nil {
		t.Fatalf("CreateRoom: %v", err)
	}
	roomID := created.RoomID
	if _, err := alice.InviteUser(ctx, roomID, &mautrix.ReqInviteUser{UserID: as.BotMXID()}); err != nil {
		t.Fatalf("inviting the bot: %v", err)
	}
	members.next(t, "the bot's invite in a transaction", func(e *event.Event) bool {
		return e.RoomID == roomID && e.GetStateKey() == as.BotMXID().String() &&
			e.Content.AsMember().Membership == event.MembershipInvite && e.Sender == alice.UserID
	})
	if err := bot.EnsureJoined(ctx, roomID); err != nil {
		t.Fatalf("the bot's EnsureJoined: %v", err)
	}

	// 3. A ghost user: registered through the service, named, and joined;
	// the room is invite-only, so EnsureJoined has the bot invite it.
	ghostID := id.NewUserID("mbridge_alice", hs.serverName)
	ghost := as.Intent(ghostID)
	if ghost == nil {
		t.Fatalf("as.Intent(%s) is nil", ghostID)
	}
	if err := ghost.EnsureRegistered(ctx); err != nil {
		t.Fatalf("the ghost's EnsureRegistered: %v", err)
	}
	if who, err := ghost.Whoami(ctx); err != nil || who.UserID != ghostID {
		t.Fatalf("whoami as the ghost: %+v, %v", who, err)
	}
	// Registering again answers M_USER_IN_USE, which EnsureRegistered
	// accepts: what a bridge sees after losing its state store.
	if err := ghost.Register(ctx); !isErr(err, mautrix.MUserInUse) {
		t.Fatalf("registering the ghost twice: %v, want M_USER_IN_USE", err)
	}
	if err := ghost.SetDisplayName(ctx, "Alice (bridged)"); err != nil {
		t.Fatalf("the ghost's SetDisplayName: %v", err)
	}
	// An avatar, as bridges copy them: uploaded by the ghost, set as its
	// avatar (mautrix downloads it first), and downloaded by alice through
	// the authenticated media API.
	avatar := []byte("\x89PNG\r\n\x1a\n mautrix e2e avatar bytes")
	up, err := ghost.UploadBytes(ctx, avatar, "image/png")
	if err != nil {
		t.Fatalf("the ghost's UploadBytes: %v", err)
	}
	if err := ghost.SetAvatarURL(ctx, up.ContentURI); err != nil {
		t.Fatalf("the ghost's SetAvatarURL: %v", err)
	}
	if data, err := alice.DownloadBytes(ctx, up.ContentURI); err != nil || !bytes.Equal(data, avatar) {
		t.Fatalf("alice downloading the ghost's avatar %s: %q, %v", up.ContentURI, data, err)
	}
	if err := ghost.EnsureJoined(ctx, roomID); err != nil {
		t.Fatalf("the ghost's EnsureJoined: %v", err)
	}
	joined, err := alice.JoinedMembers(ctx, roomID)
	if err != nil {
		t.Fatalf("JoinedMembers: %v", err)
	}
	for _, u := range []id.UserID{alice.UserID, as.BotMXID(), ghostID} {
		if _, ok := joined.Joined[u]; !ok {
			t.Fatalf("%s is not joined; members: %v", u, joined.Joined)
		}
	}
	if m := joined.Joined[ghostID]; m.DisplayName != "Alice (bridged)" || m.AvatarURL != up.ContentURI.String() {
		t.Fatalf("the ghost's profile in the room: %+v, want Alice (bridged) with avatar %s", m, up.ContentURI)
	}

	// 4. The ghost sends bridged messages with their remote timestamps
	// (?ts=); alice reads them back with those timestamps.
	base := time.Now().Add(-2 * time.Hour).Truncate(time.Second).UnixMilli()
	var ghostEvents []id.EventID
	for i := range 3 {
		ts := base + int64(i)*1500
		resp, err := ghost.SendMessageEvent(ctx, roomID, event.EventMessage, &event.MessageEventContent{
			MsgType: event.MsgText,
			Body:    fmt.Sprintf("from the remote network %d", i),
		}, mautrix.ReqSendEvent{Timestamp: ts})
		if err != nil {
			t.Fatalf("the ghost's SendMessageEvent with ts: %v", err)
		}
		ghostEvents = append(ghostEvents, resp.EventID)
		ev, err := alice.GetEvent(ctx, roomID, resp.EventID)
		if err != nil {
			t.Fatalf("GetEvent of the ghost's message: %v", err)
		}
		if ev.Timestamp != ts || ev.Sender != ghostID {
			t.Fatalf("the ghost's message reads back sent by %s at %d; want %s at %d (the ts it gave)", ev.Sender, ev.Timestamp, ghostID, ts)
		}
	}
	// A user's ?ts= is not a service's: it is ignored.
	now := time.Now().UnixMilli()
	plain, err := alice.SendMessageEvent(ctx, roomID, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: "user ts"},
		mautrix.ReqSendEvent{Timestamp: base})
	if err != nil {
		t.Fatalf("alice's send with ts: %v", err)
	}
	if ev, err := alice.GetEvent(ctx, roomID, plain.EventID); err != nil || ev.Timestamp < now-60_000 {
		t.Fatalf("alice's message with ?ts= reads back at %d (%v); a user's ts must be ignored", ev.Timestamp, err)
	}

	// 5. A real user's messages reach the service in transactions, in
	// order, through mautrix's event processor (the ghost's too).
	for i, want := range ghostEvents {
		got := messages.next(t, fmt.Sprintf("the ghost's message %d in a transaction", i), inRoom(roomID))
		if got.ID != want {
			t.Fatalf("transactions delivered %s from %s; want the ghost's %s next", got.ID, got.Sender, want)
		}
	}
	messages.next(t, "alice's message with ts in a transaction", func(e *event.Event) bool { return e.ID == plain.EventID })
	var aliceSent []id.EventID
	for i := 1; i <= 5; i++ {
		resp, err := alice.SendText(ctx, roomID, fmt.Sprintf("to the bridge %d", i))
		if err != nil {
			t.Fatalf("alice's SendText: %v", err)
		}
		aliceSent = append(aliceSent, resp.EventID)
	}
	for i, want := range aliceSent {
		got := messages.next(t, fmt.Sprintf("alice's message %d in a transaction", i+1), inRoom(roomID))
		body := got.Content.AsMessage().Body
		if got.ID != want || got.Sender != alice.UserID || body != fmt.Sprintf("to the bridge %d", i+1) {
			t.Fatalf("transactions delivered %s from %s %q as alice's message %d; want %s (in order)", got.ID, got.Sender, body, i+1, want)
		}
		if got.Mautrix.EventSource != event.SourceTimeline {
			t.Fatalf("alice's message came as %s, not a timeline event", got.Mautrix.EventSource)
		}
	}

	// 6. Typing and a read receipt reach the service as ephemeral events.
	if _, err := alice.UserTyping(ctx, roomID, true, 20*time.Second); err != nil {
		t.Fatalf("UserTyping: %v", err)
	}
	got := typing.next(t, "alice typing in a transaction", func(e *event.Event) bool {
		return e.RoomID == roomID && reflect.DeepEqual(e.Content.AsTyping().UserIDs, []id.UserID{alice.UserID})
	})
	if got.Mautrix.EventSource != event.SourceEphemeral {
		t.Fatalf("typing came as %s, not an ephemeral event", got.Mautrix.EventSource)
	}
	if _, err := alice.UserTyping(ctx, roomID, false, 0); err != nil {
		t.Fatalf("UserTyping(false): %v", err)
	}
	typing.next(t, "alice no longer typing in a transaction", func(e *event.Event) bool {
		return e.RoomID == roomID && len(e.Content.AsTyping().UserIDs) == 0
	})
	lastGhost := ghostEvents[len(ghostEvents)-1]
	if err := alice.MarkRead(ctx, roomID, lastGhost); err != nil {
		t.Fatalf("MarkRead: %v", err)
	}
	receipts.next(t, "alice's read receipt in a transaction", func(e *event.Event) bool {
		_, ok := (*e.Content.AsReceipt())[lastGhost][event.ReceiptTypeRead][alice.UserID]
		return e.RoomID == roomID && ok
	})

	// 7. The namespaces are exclusive: a user may neither register
	// mbridge_x nor create #mbridge_...; the service may.
	_, err = hs.newClient(t).RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: "mbridge_x", Password: "mbridge-x-password"})
	if !isErr(err, mautrix.MExclusive) {
		t.Fatalf("a user registering mbridge_x: %v, want M_EXCLUSIVE", err)
	}
	if _, err := hs.newClient(t).RegisterAvailable(ctx, "mbridge_y"); !isErr(err, mautrix.MExclusive) {
		t.Fatalf("register/available for mbridge_y: %v, want M_EXCLUSIVE", err)
	}
	alias := id.NewRoomAlias("mbridge_room", hs.serverName)
	if _, err := alice.CreateAlias(ctx, alias, roomID); !isErr(err, mautrix.MExclusive) {
		t.Fatalf("alice creating %s: %v, want M_EXCLUSIVE", alias, err)
	}
	if _, err := bot.CreateAlias(ctx, alias, roomID); err != nil {
		t.Fatalf("the bot creating %s: %v", alias, err)
	}
	if res, err := alice.ResolveAlias(ctx, alias); err != nil || res.RoomID != roomID {
		t.Fatalf("resolving %s: %+v, %v", alias, res, err)
	}

	// 8. A portal room, created the way bridgev2 creates one: by the bot,
	// with an override of the power levels, m.federate false, bridge info
	// and functional members in initial_state, state events without a
	// state key and with extra keys, and a vendor key in the request.
	bridgeKey := "mautrix-e2e/portal-1"
	bridgeInfo := event.BridgeEventContent{
		BridgeBot: as.BotMXID(),
		Creator:   as.BotMXID(),
		Protocol:  event.BridgeInfoSection{ID: "e2enet", DisplayName: "E2E network"},
		Channel:   event.BridgeInfoSection{ID: "portal-1", DisplayName: "Remote chat"},
	}
	excluded := map[string]any{"com.beeper.exclude_from_timeline": true}
	portal, err := bot.CreateRoom(ctx, &mautrix.ReqCreateRoom{
		Visibility:      "private",
		Preset:          "private_chat",
		CreationContent: map[string]any{"m.federate": false},
		PowerLevelOverride: &event.PowerLevelsEventContent{
			Events: map[string]int{event.StateTombstone.Type: 100, event.StateServerACL.Type: 100, event.StateEncryption.Type: 100},
			Users:  map[id.UserID]int{as.BotMXID(): 9001, ghostID: 50},
		},
		InitialState: []*event.Event{
			{Type: event.StateElementFunctionalMembers, Content: event.Content{Parsed: &event.ElementFunctionalMembersContent{ServiceMembers: []id.UserID{as.BotMXID()}}}},
			{Type: event.StateHalfShotBridge, StateKey: &bridgeKey, Content: event.Content{Parsed: &bridgeInfo}},
			{Type: event.StateBridge, StateKey: &bridgeKey, Content: event.Content{Parsed: &bridgeInfo}},
			{Type: event.StateTopic, Content: event.Content{Parsed: &event.TopicEventContent{Topic: "a bridged chat"}, Raw: excluded}},
			{Type: event.StateRoomName, Content: event.Content{Parsed: &event.RoomNameEventContent{Name: "Remote chat"}, Raw: excluded}},
			{Type: event.StateRoomAvatar, Content: event.Content{Parsed: &event.RoomAvatarEventContent{URL: up.ContentURI.CUString()}, Raw: excluded}},
		},
		Invite:            []id.UserID{alice.UserID},
		BeeperLocalRoomID: "!local-portal-1:" + id.RoomID(hs.serverName),
	})
	if err != nil {
		t.Fatalf("the bot creating a portal room as bridgev2 does: %v", err)
	}
	if _, err := alice.JoinRoomByID(ctx, portal.RoomID); err != nil {
		t.Fatalf("alice joining the portal she was invited to: %v", err)
	}
	if err := ghost.EnsureJoined(ctx, portal.RoomID); err != nil {
		t.Fatalf("the ghost's EnsureJoined in the portal: %v", err)
	}
	state, err := alice.State(ctx, portal.RoomID)
	if err != nil {
		t.Fatalf("the portal's state: %v", err)
	}
	stateOf := func(typ event.Type, key string) *event.Event {
		t.Helper()
		ev := state[typ][key]
		if ev == nil {
			t.Fatalf("the portal has no %s state with key %q", typ.Type, key)
		}
		return ev
	}
	if c := stateOf(event.StateCreate, ""); c.Content.Raw["m.federate"] != false || c.Sender != as.BotMXID() {
		t.Fatalf("the portal's create event from %s: %s", c.Sender, c.Content.VeryRaw)
	}
	pl := stateOf(event.StatePowerLevels, "").Content.AsPowerLevels()
	if pl.GetUserLevel(as.BotMXID()) != 9001 || pl.GetUserLevel(ghostID) != 50 || pl.GetEventLevel(event.StateTombstone) != 100 {
		t.Fatalf("the portal's power levels: %s", stateOf(event.StatePowerLevels, "").Content.VeryRaw)
	}
	if got := stateOf(event.StateBridge, bridgeKey).Content.AsBridge(); got.BridgeBot != as.BotMXID() || got.Channel.ID != "portal-1" {
		t.Fatalf("the portal's m.bridge: %+v", got)
	}
	stateOf(event.StateHalfShotBridge, bridgeKey)
	if got := stateOf(event.StateElementFunctionalMembers, "").Content.AsElementFunctionalMembers(); !reflect.DeepEqual(got.ServiceMembers, []id.UserID{as.BotMXID()}) {
		t.Fatalf("the portal's functional members: %+v", got)
	}
	topicEv := stateOf(event.StateTopic, "")
	if topicEv.Content.AsTopic().Topic != "a bridged chat" || topicEv.Content.Raw["com.beeper.exclude_from_timeline"] != true {
		t.Fatalf("the portal's topic: %s", topicEv.Content.VeryRaw)
	}
	if n := stateOf(event.StateRoomName, "").Content.AsRoomName().Name; n != "Remote chat" {
		t.Fatalf("the portal's name: %q", n)
	}
	if a := stateOf(event.StateRoomAvatar, "").Content.AsRoomAvatar().URL; a != up.ContentURI.CUString() {
		t.Fatalf("the portal's avatar: %q", a)
	}
	if ghostMember := stateOf(event.StateMember, ghostID.String()).Content.AsMember(); ghostMember.Membership != event.MembershipJoin {
		t.Fatalf("the ghost in the portal: %+v", ghostMember)
	}
	// State with a remote timestamp, as bridges sync a chat's metadata.
	topicTS := base - 60_000
	newTopic, err := bot.SendStateEvent(ctx, portal.RoomID, event.StateTopic, "", &event.TopicEventContent{Topic: "renamed remotely"},
		mautrix.ReqSendEvent{Timestamp: topicTS})
	if err != nil {
		t.Fatalf("the bot's state event with ts: %v", err)
	}
	if ev, err := alice.GetEvent(ctx, portal.RoomID, newTopic.EventID); err != nil || ev.Timestamp != topicTS {
		t.Fatalf("the bot's topic with ts reads back at %v (%v); want %d", ev, err, topicTS)
	}
	inPortal, err := ghost.SendText(ctx, portal.RoomID, "hello from the portal")
	if err != nil {
		t.Fatalf("the ghost sending in the portal: %v", err)
	}
	if ev, err := alice.GetEvent(ctx, portal.RoomID, inPortal.EventID); err != nil || ev.Sender != ghostID {
		t.Fatalf("the ghost's message in the portal: %+v, %v", ev, err)
	}

	// mautrix accepted every request the homeserver made (it refuses a
	// wrong hs_token or a body it cannot read) and parsed every event.
	refusedMu.Lock()
	if len(refused) > 0 {
		t.Errorf("mautrix refused requests of the homeserver:\n  %s", strings.Join(refused, "\n  "))
	}
	refusedMu.Unlock()
	if strings.Contains(asLog.String(), "Failed to parse") {
		t.Errorf("mautrix failed to parse something the homeserver sent; see its log")
	}
}

// statusRecorder notes the status a handler answers with.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

// nextRequest waits for the request to the service that match accepts.
func nextRequest(t *testing.T, ch chan asRequest, what string, match func(asRequest) bool) asRequest {
	t.Helper()
	timer := time.NewTimer(waitTimeout)
	defer timer.Stop()
	for {
		select {
		case r := <-ch:
			if match(r) {
				return r
			}
		case <-timer.C:
			t.Fatalf("timed out after %s waiting for %s", waitTimeout, what)
		}
	}
}

// waitLive waits until mautrix's HTTP server answers its liveness endpoint.
func waitLive(t *testing.T, url string, served chan struct{}) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		res, err := http.Get(url)
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the application service did not answer %s within %s: %v", url, waitTimeout, err)
		}
		select {
		case <-served:
			t.Fatalf("the application service's HTTP server stopped at once (port taken?)")
		case <-tick.C:
		}
	}
}
