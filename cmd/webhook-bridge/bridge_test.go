package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	gosync "sync"
	"syscall"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/configs"
	"github.com/persistentchat/homeserver/testserver"
)

// The bridge is tested as what it is: a separate process, built from this
// package, talking to a real homeserver (started in the test process) over
// HTTP only.

var bridgeBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "webhook-bridge-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bridgeBin = filepath.Join(dir, "webhook-bridge")
	if out, err := exec.Command("go", "build", "-o", bridgeBin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building the bridge: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// The bridge speaks to the homeserver only through its HTTP APIs.
func TestBridgeImportsNothingOfTheHomeserver(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.HasPrefix(dep, "github.com/persistentchat/homeserver/") && dep != "github.com/persistentchat/homeserver/cmd/webhook-bridge" {
			t.Errorf("the bridge imports %s", dep)
		}
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// bridgeProc is a running bridge process.
type bridgeProc struct {
	t   *testing.T
	cmd *exec.Cmd
	mu  gosync.Mutex
	log bytes.Buffer
}

// startBridge starts the bridge and waits until it says it is connected
// to the homeserver (a line of its log, not a timer).
func startBridge(t *testing.T, args ...string) *bridgeProc {
	t.Helper()
	p := &bridgeProc{t: t, cmd: exec.Command(bridgeBin, append([]string{"serve"}, args...)...)}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	connected := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		once := gosync.Once{}
		for sc.Scan() {
			p.mu.Lock()
			p.log.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
			if strings.Contains(sc.Text(), "connected to the homeserver") {
				once.Do(func() { close(connected) })
			}
		}
	}()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() || os.Getenv("BRIDGE_LOG") != "" {
			t.Logf("bridge log:\n%s", p.logText())
		}
	})
	select {
	case <-connected:
	case <-time.After(30 * time.Second):
		t.Fatalf("the bridge did not connect; its log:\n%s", p.logText())
	}
	return p
}

func (p *bridgeProc) logText() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

func (p *bridgeProc) stop() {
	if p.cmd.ProcessState != nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	if err := p.cmd.Wait(); err != nil {
		p.t.Errorf("the bridge exited with %v", err)
	}
}

// timeline follows a user's /sync, returning timeline events as they
// come: each wait searches from just after what the previous one found.
type timeline struct {
	t      *testing.T
	c      *testserver.Client
	since  string
	seen   map[string][]syncEvent // per room, in order
	cursor map[string]int
}

type syncEvent struct {
	Type     string         `json:"type"`
	Sender   string         `json:"sender"`
	StateKey *string        `json:"state_key"`
	Content  map[string]any `json:"content"`
}

func (e syncEvent) body() string { s, _ := e.Content["body"].(string); return s }

func newTimeline(t *testing.T, c *testserver.Client) *timeline {
	out := c.Sync("timeout=0")
	since, _ := out["next_batch"].(string)
	return &timeline{t: t, c: c, since: since, seen: map[string][]syncEvent{}, cursor: map[string]int{}}
}

// wait long-polls until an event of room matches f.
func (tl *timeline) wait(room, what string, f func(syncEvent) bool) syncEvent {
	tl.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		for i := tl.cursor[room]; i < len(tl.seen[room]); i++ {
			if ev := tl.seen[room][i]; f(ev) {
				tl.cursor[room] = i + 1
				return ev
			}
		}
		if time.Now().After(deadline) {
			break
		}
		var out struct {
			NextBatch string `json:"next_batch"`
			Rooms     struct {
				Join map[string]struct {
					Timeline struct {
						Events []syncEvent `json:"events"`
					} `json:"timeline"`
				} `json:"join"`
			} `json:"rooms"`
		}
		tl.c.MustDo("GET", "/_matrix/client/v3/sync?timeout=10000&since="+url.QueryEscape(tl.since), nil, &out)
		tl.since = out.NextBatch
		for id, jr := range out.Rooms.Join {
			tl.seen[id] = append(tl.seen[id], jr.Timeline.Events...)
		}
	}
	tl.t.Fatalf("timed out waiting for %s", what)
	return syncEvent{}
}

func say(t *testing.T, c *testserver.Client, room, text string) {
	t.Helper()
	c.SendText(room, text)
}

type hookReply struct {
	Status int
	Body   map[string]any
	Header http.Header
}

func postHook(t *testing.T, u, contentType string, body []byte) hookReply {
	t.Helper()
	resp, err := http.Post(u, contentType, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var m map[string]any
	_ = json.Unmarshal(raw, &m)
	return hookReply{Status: resp.StatusCode, Body: m, Header: resp.Header}
}

var hookURLRE = regexp.MustCompile(`http://\S+/hooks/[A-Za-z0-9_-]+`)

func TestWebhookBridge(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	regPath := filepath.Join(dir, "webhook.yaml")
	if out, err := exec.Command(bridgeBin, "generate-registration", "-url", "http://"+addr, "-out", regPath).CombinedOutput(); err != nil {
		t.Fatalf("generate-registration: %v\n%s", err, out)
	}
	// It refuses to overwrite the file (and its tokens).
	if err := exec.Command(bridgeBin, "generate-registration", "-url", "http://"+addr, "-out", regPath).Run(); err == nil {
		t.Error("generate-registration overwrote an existing registration")
	}
	srv := testserver.Start(t, testserver.Options{Configure: func(c *configs.Config) {
		c.AppServiceConfigFiles = []string{regPath}
	}})
	server := srv.Config.ServerName
	dbPath := filepath.Join(dir, "bridge.db")
	args := []string{"-registration", regPath, "-homeserver", srv.URL, "-db", dbPath,
		"-max-body", "1024", "-burst", "5", "-rate", "0.0001"}
	bridge := startBridge(t, args...)

	alice := srv.Register("alice")
	bob := srv.Register("bob")
	bot := "@_webhook:" + server
	tl := newTimeline(t, alice)
	// A private room: virtual users need the bot's invite to join.
	room := alice.CreateRoom(map[string]any{"preset": "private_chat", "invite": []string{bob.UserID, bot}})
	bob.Join(room)
	tl.wait(room, "the bot joining", func(e syncEvent) bool {
		return e.Type == "m.room.member" && e.StateKey != nil && *e.StateKey == bot && e.Content["membership"] == "join"
	})
	fromBot := func(what, contains string) string {
		t.Helper()
		return tl.wait(room, what, func(e syncEvent) bool {
			return e.Sender == bot && e.Type == "m.room.message" && strings.Contains(e.body(), contains)
		}).body()
	}

	// Only moderators create hooks.
	say(t, bob, room, "!hook create sneaky")
	fromBot("the refusal", "Only room moderators")
	say(t, alice, room, "!hook create alerts")
	hookURL := hookURLRE.FindString(fromBot("the hook's URL", "Hook alerts created"))
	if hookURL == "" {
		t.Fatal("the bot's answer has no URL")
	}
	say(t, alice, room, "!hook create alerts")
	fromBot("the duplicate refusal", "already has a hook named alerts")

	// JSON with a username: a virtual user of that name posts it.
	r := postHook(t, hookURL, "application/json", []byte(`{"text": "disk full", "html": "<b>disk</b> full", "username": "Nagios"}`))
	if r.Status != http.StatusOK || r.Body["event_id"] == nil {
		t.Fatalf("posting JSON: %d %v", r.Status, r.Body)
	}
	nagios := "@_webhook__nagios:" + server
	ev := tl.wait(room, "the JSON message", func(e syncEvent) bool { return e.Type == "m.room.message" && e.body() == "disk full" })
	if ev.Sender != nagios || ev.Content["formatted_body"] != "<b>disk</b> full" || ev.Content["format"] != "org.matrix.custom.html" {
		t.Errorf("JSON message: %+v", ev)
	}
	var prof map[string]any
	alice.MustDo("GET", "/_matrix/client/v3/profile/"+url.PathEscape(nagios), nil, &prof)
	if prof["displayname"] != "Nagios" {
		t.Errorf("virtual user's profile: %v", prof)
	}
	// A plain body, no username: the hook's name speaks.
	if r := postHook(t, hookURL, "text/plain", []byte("build passed")); r.Status != http.StatusOK {
		t.Fatalf("posting text: %d %v", r.Status, r.Body)
	}
	ev = tl.wait(room, "the text message", func(e syncEvent) bool { return e.Type == "m.room.message" && e.body() == "build passed" })
	if ev.Sender != "@_webhook_alerts:"+server {
		t.Errorf("plain message from %s", ev.Sender)
	}

	// Refusals: unknown hooks, big bodies, empty messages, then the rate.
	if r := postHook(t, hookURL+"x", "text/plain", []byte("hi")); r.Status != http.StatusNotFound {
		t.Errorf("unknown hook: %d", r.Status)
	}
	if r := postHook(t, hookURL, "text/plain", bytes.Repeat([]byte("a"), 2000)); r.Status != http.StatusRequestEntityTooLarge {
		t.Errorf("big body: %d", r.Status)
	}
	if r := postHook(t, hookURL, "application/json", []byte(`{"username": "x"}`)); r.Status != http.StatusBadRequest {
		t.Errorf("nothing to post: %d %v", r.Status, r.Body)
	}
	// Four of the burst of five are spent.
	if r := postHook(t, hookURL, "text/plain", []byte("fifth")); r.Status != http.StatusOK {
		t.Errorf("fifth post: %d %v", r.Status, r.Body)
	}
	r = postHook(t, hookURL, "text/plain", []byte("sixth"))
	if r.Status != http.StatusTooManyRequests || r.Header.Get("Retry-After") == "" {
		t.Errorf("sixth post: %d %v, Retry-After %q", r.Status, r.Body, r.Header.Get("Retry-After"))
	}

	say(t, alice, room, "!hook create deploys")
	deployURL := hookURLRE.FindString(fromBot("the second hook's URL", "Hook deploys created"))
	say(t, alice, room, "!hook list")
	if list := fromBot("the list", "Hooks of this room"); !strings.Contains(list, "alerts") || !strings.Contains(list, "deploys") || strings.Contains(list, "/hooks/") {
		t.Errorf("list: %q", list)
	}
	say(t, bob, room, "!hook revoke alerts")
	fromBot("the refused revocation", "Only room moderators")
	say(t, alice, room, "!hook revoke alerts")
	fromBot("the revocation", "Hook alerts is revoked")
	if r := postHook(t, hookURL, "text/plain", []byte("after revoke")); r.Status != http.StatusGone {
		t.Errorf("revoked hook: %d", r.Status)
	}

	// The bridge's state is its own SQLite file: a new process carries on.
	bridge.stop()
	startBridge(t, args...)
	if r := postHook(t, deployURL, "application/json", []byte(`{"text": "v2 is live", "username": "Nagios"}`)); r.Status != http.StatusOK {
		t.Fatalf("after a bridge restart: %d %v", r.Status, r.Body)
	}
	ev = tl.wait(room, "the message after the restart", func(e syncEvent) bool { return e.Type == "m.room.message" && e.body() == "v2 is live" })
	if ev.Sender != nagios {
		t.Errorf("after the restart the message came from %s", ev.Sender)
	}
	if r := postHook(t, hookURL, "text/plain", []byte("still revoked")); r.Status != http.StatusGone {
		t.Errorf("revoked hook after restart: %d", r.Status)
	}
}
