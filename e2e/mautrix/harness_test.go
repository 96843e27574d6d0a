package mautrixe2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// waitTimeout bounds every wait for something the server or mautrix should
// deliver: a sync, a transaction, a handler call. Nothing waits a fixed time.
const waitTimeout = 20 * time.Second

// logBuffer collects a process's or a library's log lines; it is printed
// only when a test fails (E2E_VERBOSE=1 streams it as well).
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if os.Getenv("E2E_VERBOSE") != "" {
		os.Stderr.Write(p)
	}
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// homeserver is a real homeserver process with its own data directory.
type homeserver struct {
	serverName string // 127.0.0.1:<port>
	baseURL    string // http://127.0.0.1:<port>
	dir        string
	log        *logBuffer

	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago: the
// kernel picks it for a listener that is closed at once.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("finding a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// setYAMLKey replaces the value of the first line "<indent>key: ..." after
// the line starting with after (or anywhere, when after is ""), in a config
// written by generate-config. It fails the test when the key is missing, so
// a renamed option cannot go unnoticed.
func setYAMLKey(t *testing.T, cfg, after, key, value string) string {
	t.Helper()
	start := 0
	if after != "" {
		i := strings.Index(cfg, "\n"+after)
		if i < 0 {
			t.Fatalf("generated config has no %q section:\n%s", after, cfg)
		}
		start = i + 1
	}
	lines := strings.SplitAfter(cfg[start:], "\n")
	for i, line := range lines {
		trimmed := strings.TrimLeft(line, " ")
		if strings.HasPrefix(trimmed, key+":") {
			indent := line[:len(line)-len(trimmed)]
			lines[i] = indent + key + ": " + value + "\n"
			return cfg[:start] + strings.Join(lines, "")
		}
	}
	t.Fatalf("generated config has no %q key after %q:\n%s", key, after, cfg)
	return ""
}

// startHomeserver writes a config with `homeserver generate-config
// --registration open` (rate limits off, cheap bcrypt), lets edit change it,
// starts `homeserver serve`, and waits for /_matrix/client/versions. At the
// end of the test it stops the server with SIGTERM and checks that it
// exited cleanly; on a failure it prints the server's log and keeps its
// data directory.
func startHomeserver(t *testing.T, edit func(cfg string) string) *homeserver {
	t.Helper()
	bin := os.Getenv("HOMESERVER_BIN")
	if bin == "" {
		t.Skip("HOMESERVER_BIN is not set: build the server (make build) and run " +
			"HOMESERVER_BIN=$PWD/../../bin/homeserver go test ./... in e2e/mautrix")
	}
	if !filepath.IsAbs(bin) {
		abs, err := filepath.Abs(bin)
		if err != nil {
			t.Fatal(err)
		}
		bin = abs
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("HOMESERVER_BIN: %v (run make build first)", err)
	}

	dir, err := os.MkdirTemp("", "homeserver-mautrix-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	hs := &homeserver{
		serverName: fmt.Sprintf("127.0.0.1:%d", port),
		baseURL:    fmt.Sprintf("http://127.0.0.1:%d", port),
		dir:        dir,
		log:        &logBuffer{},
		exited:     make(chan struct{}),
	}
	out, err := exec.Command(bin, "generate-config",
		"--server-name", hs.serverName,
		"--listen", hs.serverName,
		"--data-dir", filepath.Join(dir, "data"),
		"--registration", "open").Output()
	if err != nil {
		t.Fatalf("generate-config: %v", err)
	}
	cfg := string(out)
	cfg = setYAMLKey(t, cfg, "rate_limiting:", "enabled", "false")
	cfg = setYAMLKey(t, cfg, "", "bcrypt_rounds", "4")
	if edit != nil {
		cfg = edit(cfg)
	}
	configPath := filepath.Join(dir, "homeserver.yaml")
	if err := os.WriteFile(configPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}

	hs.cmd = exec.Command(bin, "serve", "--config", configPath)
	hs.cmd.Stdout = hs.log
	hs.cmd.Stderr = hs.log
	if err := hs.cmd.Start(); err != nil {
		t.Fatalf("starting the homeserver: %v", err)
	}
	go func() {
		hs.waitErr = hs.cmd.Wait()
		close(hs.exited)
	}()
	t.Cleanup(func() { hs.stop(t) })

	// Ready when /versions answers 200 without a token.
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	last := "no answer yet"
	for {
		res, err := http.Get(hs.baseURL + "/_matrix/client/versions")
		if err == nil {
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return hs
			}
			last = fmt.Sprintf("HTTP %d %.300s", res.StatusCode, body)
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s/_matrix/client/versions did not answer 200 within 30 s; last answer: %s", hs.baseURL, last)
		}
		select {
		case <-hs.exited:
			t.Fatalf("the homeserver exited before answering: %v", hs.waitErr)
		case <-tick.C:
		}
	}
}

// stop sends SIGTERM and waits for the exit (SIGKILL after 20 s). The server
// must exit 0 and must not have logged a panic.
func (hs *homeserver) stop(t *testing.T) {
	select {
	case <-hs.exited:
		t.Errorf("the homeserver exited during the test: %v", hs.waitErr)
	default:
		_ = hs.cmd.Process.Signal(syscall.SIGTERM)
		start := time.Now()
		select {
		case <-hs.exited:
			if d := time.Since(start); d > 2*time.Second {
				t.Logf("the homeserver took %s to exit after SIGTERM", d.Round(time.Millisecond))
			}
			if hs.waitErr != nil {
				t.Errorf("the homeserver did not exit cleanly on SIGTERM: %v", hs.waitErr)
			}
		case <-time.After(20 * time.Second):
			_ = hs.cmd.Process.Kill()
			<-hs.exited
			t.Errorf("the homeserver did not exit within 20 s of SIGTERM; killed it")
		}
	}
	logText := hs.log.String()
	if strings.Contains(logText, "panic") {
		t.Errorf("the homeserver logged a panic")
	}
	if t.Failed() {
		t.Logf("homeserver data directory kept: %s\n--- homeserver log ---\n%s", hs.dir, logText)
	} else {
		os.RemoveAll(hs.dir)
	}
}

// newClient is an unauthenticated mautrix client for the server.
func (hs *homeserver) newClient(t *testing.T) *mautrix.Client {
	t.Helper()
	cli, err := mautrix.NewClient(hs.baseURL, "", "")
	if err != nil {
		t.Fatalf("mautrix.NewClient: %v", err)
	}
	return cli
}

// register makes an account with mautrix's RegisterDummy (the
// user-interactive m.login.dummy flow) and returns a client logged in as it.
func (hs *homeserver) register(t *testing.T, ctx context.Context, localpart, password string) *mautrix.Client {
	t.Helper()
	cli := hs.newClient(t)
	resp, err := cli.RegisterDummy(ctx, &mautrix.ReqRegister[any]{
		Username:                 localpart,
		Password:                 password,
		InitialDeviceDisplayName: localpart + " mautrix e2e",
	})
	if err != nil {
		t.Fatalf("RegisterDummy(%s): %v", localpart, err)
	}
	if want := id.NewUserID(localpart, hs.serverName); resp.UserID != want {
		t.Fatalf("RegisterDummy(%s) returned user %s, want %s", localpart, resp.UserID, want)
	}
	if resp.AccessToken == "" || resp.DeviceID == "" {
		t.Fatalf("RegisterDummy(%s) returned no access token or device: %+v", localpart, resp)
	}
	cli.UserID, cli.AccessToken = resp.UserID, resp.AccessToken
	cli.DeviceID = resp.DeviceID
	who, err := cli.Whoami(ctx)
	if err != nil {
		t.Fatalf("whoami as %s: %v", localpart, err)
	}
	if who.UserID != resp.UserID || who.DeviceID != resp.DeviceID {
		t.Fatalf("whoami as %s = %s/%s, want %s/%s", localpart, who.UserID, who.DeviceID, resp.UserID, resp.DeviceID)
	}
	return cli
}

// events is a channel fed by mautrix handlers. The buffer is large enough
// for everything a test sends, so a handler never blocks mautrix's loop.
type events chan *event.Event

func newEvents() events { return make(events, 4096) }

func (ch events) handler(_ context.Context, evt *event.Event) { ch <- evt }

// next returns the next event for which match returns true, skipping the
// others; it fails the test after waitTimeout.
func (ch events) next(t *testing.T, what string, match func(*event.Event) bool) *event.Event {
	t.Helper()
	timer := time.NewTimer(waitTimeout)
	defer timer.Stop()
	var skipped []string
	for {
		select {
		case evt := <-ch:
			if match(evt) {
				return evt
			}
			skipped = append(skipped, fmt.Sprintf("%s %s from %s in %s: %s", evt.Type.Type, evt.ID, evt.Sender, evt.RoomID, evt.Content.VeryRaw))
		case <-timer.C:
			t.Fatalf("timed out after %s waiting for %s; skipped meanwhile:\n  %s", waitTimeout, what, strings.Join(skipped, "\n  "))
			return nil
		}
	}
}

// syncLoop runs mautrix's own sync loop (Client.SyncWithContext with the
// DefaultSyncer) until the test ends.
type syncLoop struct {
	syncer    *mautrix.DefaultSyncer
	firstSync chan struct{}
	cancel    context.CancelFunc
	done      chan error
}

// startSync starts cli's sync loop; register must add every handler (the
// DefaultSyncer's handler maps may not change once it runs). It returns
// after the first /sync response has been processed.
func startSync(t *testing.T, cli *mautrix.Client, register func(s *mautrix.DefaultSyncer)) *syncLoop {
	t.Helper()
	s := mautrix.NewDefaultSyncer()
	register(s)
	loop := &syncLoop{syncer: s, firstSync: make(chan struct{}), done: make(chan error, 1)}
	var once sync.Once
	s.OnSync(func(context.Context, *mautrix.RespSync, string) bool {
		once.Do(func() { close(loop.firstSync) })
		return true
	})
	cli.Syncer = &failFastSyncer{DefaultSyncer: s}
	ctx, cancel := context.WithCancel(context.Background())
	loop.cancel = cancel
	go func() { loop.done <- cli.SyncWithContext(ctx) }()
	t.Cleanup(func() {
		loop.cancel()
		select {
		case err := <-loop.done:
			if err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("sync loop of %s ended with: %v", cli.UserID, err)
			}
		case <-time.After(waitTimeout):
			t.Errorf("sync loop of %s did not stop within %s", cli.UserID, waitTimeout)
		}
	})
	select {
	case <-loop.firstSync:
	case err := <-loop.done:
		t.Fatalf("sync loop of %s ended before its first sync: %v", cli.UserID, err)
	case <-time.After(waitTimeout):
		t.Fatalf("no first /sync for %s within %s", cli.UserID, waitTimeout)
	}
	return loop
}

// failFastSyncer ends the sync loop on the first failed /sync, with the
// error, instead of DefaultSyncer's silent 10 s retry: a test should see
// a server error, not time out behind it.
type failFastSyncer struct {
	*mautrix.DefaultSyncer
}

func (f *failFastSyncer) OnFailedSync(_ *mautrix.RespSync, err error) (time.Duration, error) {
	return 0, fmt.Errorf("/sync failed: %w", err)
}
