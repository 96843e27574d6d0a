//go:build goolm

package mautrixe2e

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// cryptoClient is a mautrix client with its OlmMachine (goolm, in-memory
// crypto store), syncing; decrypted receives the room events it
// decrypted, failures the errors of those it could not.
//
// mu serialises the machine's use between the sync loop and the test:
// mautrix's MemoryStore is not safe for concurrent use (v0.32.0 writes
// key signatures under its read lock and hands out its maps), which -race
// catches when the test checks trust while the sync loop downloads keys.
// A bot driving its machine from the sync loop alone never needs it.
type cryptoClient struct {
	cli       *mautrix.Client
	mu        sync.Mutex
	mach      *crypto.OlmMachine
	wire      *wireLog
	decrypted events
	members   events
	failures  chan error
}

// wireLog records "METHOD path status" of every request a client makes.
type wireLog struct {
	mu    sync.Mutex
	lines []string
	next  http.RoundTripper
}

func (w *wireLog) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := w.next.RoundTrip(req)
	line := req.Method + " " + req.URL.Path + " "
	if err != nil {
		line += "error"
	} else {
		line += fmt.Sprint(res.StatusCode)
	}
	w.mu.Lock()
	w.lines = append(w.lines, line)
	w.mu.Unlock()
	return res, err
}

// has reports whether a request to a path ending in suffix got status.
func (w *wireLog) has(method, suffix string, status int) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, l := range w.lines {
		f := strings.Fields(l)
		if f[0] == method && strings.Contains(f[1], suffix) && f[2] == fmt.Sprint(status) {
			return true
		}
	}
	return false
}

func (w *wireLog) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Join(w.lines, "\n  ")
}

// startCrypto sets up cli's OlmMachine the way mautrix's cryptohelper does
// (ProcessSyncResponse on every sync, member events, the state store fed
// by the sync), uploads its device and one-time keys, and starts syncing.
func startCrypto(t *testing.T, ctx context.Context, cli *mautrix.Client) *cryptoClient {
	t.Helper()
	cc := &cryptoClient{cli: cli, decrypted: newEvents(), members: newEvents(), failures: make(chan error, 64)}
	cc.wire = &wireLog{next: http.DefaultTransport}
	cli.Client = &http.Client{Transport: cc.wire}
	cli.StateStore = mautrix.NewMemoryStateStore()
	logs := &logBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- mautrix crypto log of %s ---\n%s", cli.UserID, logs)
		}
	})
	log := zerolog.New(zerolog.ConsoleWriter{Out: logs, NoColor: true}).With().Timestamp().Logger()
	cc.mach = crypto.NewOlmMachine(cli, &log, crypto.NewMemoryStore(nil), cli.StateStore.(crypto.StateStore))
	if err := cc.mach.Load(ctx); err != nil {
		t.Fatalf("OlmMachine.Load for %s: %v", cli.UserID, err)
	}
	if err := cc.mach.ShareKeys(ctx, -1); err != nil {
		t.Fatalf("ShareKeys (device and one-time keys) for %s: %v", cli.UserID, err)
	}
	startSync(t, cli, func(s *mautrix.DefaultSyncer) {
		s.OnSync(func(ctx context.Context, resp *mautrix.RespSync, since string) bool {
			cc.mu.Lock()
			defer cc.mu.Unlock()
			return cc.mach.ProcessSyncResponse(ctx, resp, since)
		})
		s.OnEvent(cli.StateStoreSyncHandler)
		s.OnEventType(event.StateMember, func(ctx context.Context, evt *event.Event) {
			cc.mu.Lock()
			defer cc.mu.Unlock()
			cc.mach.HandleMemberEvent(ctx, evt)
		})
		s.OnEventType(event.StateMember, cc.members.handler)
		s.OnEventType(event.EventEncrypted, func(ctx context.Context, evt *event.Event) {
			// The room key comes as an Olm to-device message, in the
			// same /sync as the event or an earlier one; wait for it.
			cc.mu.Lock()
			defer cc.mu.Unlock()
			content := evt.Content.AsEncrypted()
			if !cc.mach.WaitForSession(ctx, evt.RoomID, content.SenderKey, content.SessionID, waitTimeout) {
				cc.failures <- fmt.Errorf("%s: no megolm session %s for %s", cli.UserID, content.SessionID, evt.ID)
				return
			}
			clear, err := cc.mach.DecryptMegolmEvent(ctx, evt)
			if err != nil {
				cc.failures <- fmt.Errorf("%s decrypting %s: %w", cli.UserID, evt.ID, err)
				return
			}
			cc.decrypted <- clear
		})
	})
	return cc
}

// send encrypts a text message for roomID's joined members (sharing the
// megolm session with their devices first, as mautrix's bridges do) and
// sends it.
func (cc *cryptoClient) send(t *testing.T, ctx context.Context, roomID id.RoomID, body string) id.EventID {
	t.Helper()
	members, err := cc.cli.StateStore.GetRoomJoinedOrInvitedMembers(ctx, roomID)
	if err != nil {
		t.Fatalf("members of %s: %v", roomID, err)
	}
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if err := cc.mach.ShareGroupSession(ctx, roomID, members); err != nil {
		t.Fatalf("%s ShareGroupSession to %v: %v", cc.cli.UserID, members, err)
	}
	enc, err := cc.mach.EncryptMegolmEvent(ctx, roomID, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: body})
	if err != nil {
		t.Fatalf("EncryptMegolmEvent: %v", err)
	}
	resp, err := cc.cli.SendMessageEvent(ctx, roomID, event.EventEncrypted, enc)
	if err != nil {
		t.Fatalf("sending the encrypted event: %v", err)
	}
	return resp.EventID
}

// awaitClear waits for cc to decrypt the event evID, and returns it.
func (cc *cryptoClient) awaitClear(t *testing.T, evID id.EventID) *event.Event {
	t.Helper()
	select {
	case err := <-cc.failures:
		t.Fatalf("decryption failed: %v\n  %s's requests:\n  %s", err, cc.cli.UserID, cc.wire)
	default:
	}
	return cc.decrypted.next(t, fmt.Sprintf("%s to decrypt %s", cc.cli.UserID, evID), func(e *event.Event) bool { return e.ID == evID })
}

// TestCrypto is an encrypted exchange between two mautrix-go clients with
// its pure-Go Olm/Megolm (goolm, hence the build tag): device and
// one-time keys uploaded and queried, a one-time key claimed for an Olm
// session, the megolm room key sent as an Olm to-device message, and
// messages in an encrypted room decrypted both ways.
func TestCrypto(t *testing.T) {
	hs := startHomeserver(t, nil)
	ctx := t.Context()
	alice := startCrypto(t, ctx, hs.register(t, ctx, "alice", passwords["alice"]))
	bob := startCrypto(t, ctx, hs.register(t, ctx, "bob", passwords["bob"]))

	// 1. Each one's device keys come back from /keys/query as the other
	// sees them, with the identity keys the OlmMachine holds; the server
	// counts the one-time keys uploaded.
	for _, p := range []struct{ asker, who *cryptoClient }{{bob, alice}, {alice, bob}} {
		p.asker.mu.Lock()
		devs, err := p.asker.mach.FetchKeys(ctx, []id.UserID{p.who.cli.UserID}, true)
		p.asker.mu.Unlock()
		if err != nil {
			t.Fatalf("FetchKeys: %v", err)
		}
		own := p.who.mach.OwnIdentity()
		got := devs[p.who.cli.UserID][p.who.cli.DeviceID]
		if got == nil || got.SigningKey != own.SigningKey || got.IdentityKey != own.IdentityKey {
			t.Fatalf("%s's device as %s sees it: %+v; want the keys %+v", p.who.cli.UserID, p.asker.cli.UserID, got, own)
		}
	}
	counts, err := bob.cli.UploadKeys(ctx, &mautrix.ReqUploadKeys{})
	if err != nil {
		t.Fatalf("empty /keys/upload: %v", err)
	}
	before := counts.OneTimeKeyCounts.SignedCurve25519
	if before == 0 {
		t.Fatalf("the server counts none of bob's one-time keys: %+v", counts.OneTimeKeyCounts)
	}

	// 2. An encrypted room; bob joins, and alice's state store sees it.
	created, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{
		Preset: "public_chat",
		Name:   "mautrix encrypted",
		InitialState: []*event.Event{{
			Type:    event.StateEncryption,
			Content: event.Content{Parsed: &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}},
		}},
	})
	if err != nil {
		t.Fatalf("CreateRoom: %v", err)
	}
	roomID := created.RoomID
	if _, err := bob.cli.JoinRoomByID(ctx, roomID); err != nil {
		t.Fatalf("bob joins: %v", err)
	}
	// The state store is fed before the member handler runs (mautrix runs
	// global handlers first).
	alice.members.next(t, "alice's sync to carry bob's join", func(e *event.Event) bool {
		return e.RoomID == roomID && e.GetStateKey() == bob.cli.UserID.String() && e.Content.AsMember().Membership == event.MembershipJoin
	})
	if enc, err := alice.cli.StateStore.(crypto.StateStore).IsEncrypted(ctx, roomID); err != nil || !enc {
		t.Fatalf("alice's state store: room encrypted %v (%v)", enc, err)
	}

	// 3. alice's messages: she claims one of bob's one-time keys, sends the
	// room key to his device over Olm, and the messages as megolm.
	bodies := []string{"mautrix secret 1", "mautrix secret 2"}
	var ids []id.EventID
	for _, b := range bodies {
		ids = append(ids, alice.send(t, ctx, roomID, b))
	}
	for _, want := range []struct {
		method, path string
	}{{"POST", "/keys/claim"}, {"PUT", "/sendToDevice/m.room.encrypted/"}, {"PUT", "/send/m.room.encrypted/"}} {
		if !alice.wire.has(want.method, want.path, 200) {
			t.Fatalf("alice made no %s %s answered 200; her requests:\n  %s", want.method, want.path, alice.wire)
		}
	}
	for i, evID := range ids {
		clear := bob.awaitClear(t, evID)
		if clear.Type != event.EventMessage || clear.Content.AsMessage().Body != bodies[i] {
			t.Fatalf("bob decrypted %s to %s %q, want m.room.message %q", evID, clear.Type.Type, clear.Content.AsMessage().Body, bodies[i])
		}
		if clear.Sender != alice.cli.UserID {
			t.Fatalf("decrypted sender %s", clear.Sender)
		}
	}
	// The server holds ciphertext only.
	raw, err := bob.cli.GetEvent(ctx, roomID, ids[0])
	if err != nil {
		t.Fatalf("GetEvent: %v", err)
	}
	if raw.Type != event.EventEncrypted || strings.Contains(string(raw.Content.VeryRaw), bodies[0]) || !strings.Contains(string(raw.Content.VeryRaw), string(id.AlgorithmMegolmV1)) {
		t.Fatalf("the stored event is %s %s; want megolm ciphertext", raw.Type.Type, raw.Content.VeryRaw)
	}
	// The claim used one of bob's one-time keys (mautrix may since have
	// uploaded more; it tops up only below half of its maximum).
	counts, err = bob.cli.UploadKeys(ctx, &mautrix.ReqUploadKeys{})
	if err != nil {
		t.Fatalf("empty /keys/upload: %v", err)
	}
	if after := counts.OneTimeKeyCounts.SignedCurve25519; after != before-1 {
		t.Fatalf("bob's one-time keys: %d before alice's claim, %d after; want one fewer", before, after)
	}

	// 4. bob's reply reuses the Olm session alice made (no claim of his
	// own is needed for hers) and alice decrypts it.
	reply := bob.send(t, ctx, roomID, "hello from bob, over megolm")
	if got := alice.awaitClear(t, reply).Content.AsMessage().Body; got != "hello from bob, over megolm" {
		t.Fatalf("alice decrypted %q", got)
	}

	// 5. Cross-signing as mautrix does it: keys generated, stored in
	// secret storage (account data) and published, the first upload
	// without user-interactive auth; alice then replaces hers, which
	// takes her password (mautrix sends the deprecated "user" field, not
	// "identifier"). Each signs their own device and master key.
	recovery := map[*cryptoClient]string{}
	bootstrap := func(cc *cryptoClient) {
		cc.mu.Lock()
		defer cc.mu.Unlock()
		uia := 0
		key, _, err := cc.mach.GenerateAndUploadCrossSigningKeys(ctx, func(r *mautrix.RespUserInteractive) any {
			uia++
			return &mautrix.ReqUIAuthLogin{BaseAuthData: mautrix.BaseAuthData{Type: mautrix.AuthTypePassword, Session: r.Session},
				User: cc.cli.UserID.String(), Password: passwords[cc.cli.UserID.Localpart()]}
		}, "")
		if err != nil {
			t.Fatalf("%s GenerateAndUploadCrossSigningKeys: %v", cc.cli.UserID, err)
		}
		if _, again := recovery[cc]; again != (uia == 1) {
			t.Fatalf("%s: %d user-interactive auth rounds; want one only when replacing keys", cc.cli.UserID, uia)
		}
		recovery[cc] = key
		if err := cc.mach.SignOwnDevice(ctx, cc.mach.OwnIdentity()); err != nil {
			t.Fatalf("%s SignOwnDevice: %v", cc.cli.UserID, err)
		}
		if err := cc.mach.SignOwnMasterKey(ctx); err != nil {
			t.Fatalf("%s SignOwnMasterKey: %v", cc.cli.UserID, err)
		}
	}
	for _, cc := range []*cryptoClient{alice, bob, alice} {
		bootstrap(cc)
	}
	alice.mu.Lock()
	aliceMaster, err := alice.mach.GetOwnCrossSigningPublicKeys(ctx)
	alice.mu.Unlock()
	if err != nil || aliceMaster == nil {
		t.Fatalf("alice's own cross-signing public keys: %v", err)
	}

	// 6. bob sees alice's device signed by her (but not verified by him);
	// once he signs her master key with his user-signing key, he trusts
	// her device through cross-signing.
	trust := func(asker, who *cryptoClient, device id.DeviceID) id.TrustState {
		t.Helper()
		asker.mu.Lock()
		defer asker.mu.Unlock()
		devs, err := asker.mach.FetchKeys(ctx, []id.UserID{who.cli.UserID}, true)
		if err != nil {
			t.Fatalf("FetchKeys: %v", err)
		}
		dev := devs[who.cli.UserID][device]
		if dev == nil {
			t.Fatalf("%s does not know %s's device %s", asker.cli.UserID, who.cli.UserID, device)
		}
		st, err := asker.mach.ResolveTrustContext(ctx, dev)
		if err != nil {
			t.Fatalf("ResolveTrust: %v", err)
		}
		return st
	}
	// Signed by her master key's chain, not verified: TOFU if bob's
	// machine first saw her current master key, untrusted if it saw the
	// one she replaced (its device-list sync may have fetched it).
	if st := trust(bob, alice, alice.cli.DeviceID); st != id.TrustStateCrossSignedTOFU && st != id.TrustStateCrossSignedUntrusted {
		t.Fatalf("bob's trust in alice's device before he signs her: %s, want cross-signed but not verified", st)
	}
	bob.mu.Lock()
	err = bob.mach.SignUser(ctx, alice.cli.UserID, aliceMaster.MasterKey)
	bob.mu.Unlock()
	if err != nil {
		t.Fatalf("bob SignUser(alice): %v", err)
	}
	if st := trust(bob, alice, alice.cli.DeviceID); st != id.TrustStateCrossSignedVerified {
		t.Fatalf("bob's trust in alice's device after signing her master key: %s, want %s", st, id.TrustStateCrossSignedVerified)
	}

	// 7. A new device of alice, with her recovery key, fetches the
	// cross-signing keys from secret storage and signs itself: bob trusts
	// it too.
	second := hs.newClient(t)
	if _, err := second.Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword, StoreCredentials: true,
		Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "alice"}, Password: passwords["alice"]}); err != nil {
		t.Fatalf("alice's second login: %v", err)
	}
	alice2 := startCrypto(t, ctx, second)
	alice2.mu.Lock()
	err = alice2.mach.VerifyWithRecoveryKey(ctx, recovery[alice])
	alice2.mu.Unlock()
	if err != nil {
		t.Fatalf("VerifyWithRecoveryKey on alice's new device: %v", err)
	}
	if st := trust(bob, alice, second.DeviceID); st != id.TrustStateCrossSignedVerified {
		t.Fatalf("bob's trust in alice's new device: %s, want %s", st, id.TrustStateCrossSignedVerified)
	}
}

var passwords = map[string]string{"alice": "alice-password-1", "bob": "bob-password-1"}
