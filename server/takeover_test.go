package server_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	gosync "sync"
	"syscall"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/pusher"
	"github.com/persistentchat/homeserver/testserver"
)

// TestLeaseTakeoverAcrossProcesses: two homeserver processes (the real
// binary, built here) on one PostgreSQL database. The first to start
// holds every worker lease, the other none. A push gateway holds one
// request of the holder's open, and the holder is killed (SIGKILL) while
// it waits: the second process takes the leases over within the lease
// duration and delivers every notification, of messages sent before the
// kill, during the takeover and after it, each once, except the one whose
// request was in flight at the kill, which may come twice (its position
// was never stored).
func TestLeaseTakeoverAcrossProcesses(t *testing.T) {
	if os.Getenv(testserver.PostgresEnv) == "" {
		t.Skip(testserver.PostgresEnv + " is unset: this test needs PostgreSQL")
	}
	if testing.Short() {
		t.Skip("builds the binary and runs two processes")
	}
	dsn := testserver.PostgresDatabase(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "homeserver")
	build := exec.Command("go", "build", "-o", bin, "github.com/persistentchat/homeserver/cmd/homeserver")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	gw := newHoldingGateway()
	defer gw.Close()
	const leaseDuration = 3 * time.Second
	startProcess := func(name string) *process {
		data := filepath.Join(dir, name)
		cfg := fmt.Sprintf(`server_name: "localhost"
public_baseurl: "http://127.0.0.1/"
listen: "127.0.0.1:0"
data_dir: %q
signing_key_path: %q
enable_registration: true
bcrypt_rounds: 4
rate_limiting:
  enabled: false
log_level: "info"
log_format: "json"
ip_range_whitelist: ["127.0.0.1"]
metrics:
  enabled: true
  listen: "127.0.0.1:0"
database:
  name: postgres
  worker_lease_duration: %q
  args:
    dsn: %q
    cp_min: 1
    cp_max: 4
`, data, filepath.Join(dir, "signing.key"), leaseDuration.String(), dsn)
		path := filepath.Join(dir, name+".yaml")
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		return startHomeserver(t, name, bin, path)
	}

	p1 := startProcess("p1")
	leases := []string{"notifications", "pushers", "appservices"}
	waitFor(t, 30*time.Second, "p1 holds every lease", func() bool {
		for _, l := range leases {
			if p1.leaseHeld(t, l) != 1 {
				return false
			}
		}
		return true
	})
	alice := register(t, p1.url, "alice")
	bob := register(t, p1.url, "bob")
	var room struct {
		RoomID string `json:"room_id"`
	}
	call(t, p1.url, bob, "POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}, &room)
	call(t, p1.url, alice, "POST", "/_matrix/client/v3/join/"+room.RoomID, map[string]any{}, nil)
	call(t, p1.url, alice, "POST", "/_matrix/client/v3/pushers/set", map[string]any{
		"kind": "http", "app_id": "org.example.app", "pushkey": "key", "app_display_name": "Example",
		"device_display_name": "Phone", "lang": "en",
		"data": map[string]any{"url": gw.URL + pusher.NotifyPath, "format": "event_id_only"}}, nil)

	// Before the kill: the gateway answers three pushes and holds the
	// fourth open; the fifth waits behind it.
	gw.holdAt(4)
	var sent []string
	send := func(base, text string) {
		t.Helper()
		var out struct {
			EventID string `json:"event_id"`
		}
		txn := fmt.Sprintf("t%d", len(sent))
		call(t, base, bob, "PUT", "/_matrix/client/v3/rooms/"+room.RoomID+"/send/m.room.message/"+txn,
			map[string]any{"msgtype": "m.text", "body": text}, &out)
		sent = append(sent, out.EventID)
	}
	for i := range 5 {
		send(p1.url, fmt.Sprintf("before %d", i))
	}
	waitFor(t, 30*time.Second, "the gateway holds p1's fourth push", func() bool { return gw.holding() })
	inFlight := gw.received()[3]
	if inFlight != sent[3] {
		t.Fatalf("the held push is of %s, want %s (the fourth message)", inFlight, sent[3])
	}

	// The second process starts once the first has written everything it
	// will write: until each process reloads the stream counters at each
	// write batch (another change of issue 10), a process allocates
	// positions from the counters it read at start.
	p2 := startProcess("p2")
	for _, l := range leases {
		if h1, h2 := p1.leaseHeld(t, l), p2.leaseHeld(t, l); h1 != 1 || h2 != 0 {
			t.Fatalf("lease %s: held by p1 %v, by p2 %v; want by p1 alone", l, h1, h2)
		}
	}

	p1.kill(t)
	killed := time.Now()
	gw.release() // its answer goes to a dead process
	send(p2.url, "during the takeover")
	waitFor(t, 3*leaseDuration+10*time.Second, "p2 takes the pushers lease", func() bool { return p2.leaseHeld(t, "pushers") == 1 })
	took := time.Since(killed)
	t.Logf("p2 took the pushers lease %v after the kill (lease duration %v)", took.Round(time.Millisecond), leaseDuration)
	for _, l := range leases {
		waitFor(t, 3*leaseDuration+10*time.Second, "p2 takes lease "+l, func() bool { return p2.leaseHeld(t, l) == 1 })
	}
	for i := range 3 {
		send(p2.url, fmt.Sprintf("after %d", i))
	}
	waitFor(t, 60*time.Second, "every notification pushed and the pushers caught up", func() bool {
		got := map[string]bool{}
		for _, id := range gw.received() {
			got[id] = true
		}
		for _, id := range sent {
			if !got[id] {
				return false
			}
		}
		return p2.metric(t, `homeserver_worker_lag_events{queue="",worker="pushers"}`) == 0
	})
	counts := map[string]int{}
	for _, id := range gw.received() {
		counts[id]++
	}
	for i, id := range sent {
		switch n := counts[id]; {
		case id == inFlight && (n == 1 || n == 2):
		case n != 1:
			t.Errorf("message %d (%s) pushed %d times, want once", i, id, n)
		}
		delete(counts, id)
	}
	for id, n := range counts {
		t.Errorf("a push for %s, never sent, %d times", id, n)
	}
	t.Logf("the push in flight at the kill arrived %d times", strings.Count(strings.Join(gw.received(), " "), inFlight))
}

// holdingGateway is a push gateway that records the event ID of every
// push and can hold one request open until released.
type holdingGateway struct {
	*httptest.Server
	mu      gosync.Mutex
	got     []string
	holdN   int           // hold the holdN-th push (1-based); 0: none
	held    bool          // a request is being held
	unblock chan struct{} // closed by release
	once    gosync.Once
}

func newHoldingGateway() *holdingGateway {
	g := &holdingGateway{unblock: make(chan struct{})}
	g.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Notification struct {
				EventID string `json:"event_id"`
			} `json:"notification"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		g.mu.Lock()
		g.got = append(g.got, body.Notification.EventID)
		hold := len(g.got) == g.holdN
		if hold {
			g.held = true
		}
		g.mu.Unlock()
		if hold {
			<-g.unblock
		}
		io.WriteString(w, `{"rejected":[]}`)
	}))
	return g
}

func (g *holdingGateway) holdAt(n int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.holdN = n
}

func (g *holdingGateway) holding() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.held
}

// release lets the held request (and any later one) be answered.
func (g *holdingGateway) release() { g.once.Do(func() { close(g.unblock) }) }

// Close releases a held request, then closes the server (which waits for
// its handlers).
func (g *holdingGateway) Close() {
	g.release()
	g.Server.Close()
}

func (g *holdingGateway) received() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.got...)
}

// process is a homeserver binary running.
type process struct {
	name       string
	cmd        *exec.Cmd
	url        string
	metricsURL string
	exited     chan struct{}
}

// startHomeserver runs the binary with the config and waits until both
// listeners are up (the log names their addresses). Its log goes to the
// test's log. It is killed when the test ends, if still running.
func startHomeserver(t *testing.T, name, bin, config string) *process {
	t.Helper()
	p := &process{name: name, cmd: exec.Command(bin, "serve", "--config", config), exited: make(chan struct{})}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addrs := make(chan [2]string, 1)
	go func() {
		var api, metrics string
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			t.Logf("%s: %s", name, line)
			var rec struct {
				Msg  string `json:"msg"`
				Addr string `json:"addr"`
			}
			if json.Unmarshal(line, &rec) != nil {
				continue
			}
			switch rec.Msg {
			case "serving client API":
				api = rec.Addr
			case "serving metrics":
				metrics = rec.Addr
			}
			if api != "" && metrics != "" {
				addrs <- [2]string{api, metrics}
				api = "" // sent once
			}
		}
		p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(15 * time.Second):
			p.cmd.Process.Kill()
			<-p.exited
		}
	})
	select {
	case a := <-addrs:
		p.url, p.metricsURL = "http://"+a[0], "http://"+a[1]+"/metrics"
	case <-p.exited:
		t.Fatalf("%s exited at start", name)
	case <-time.After(60 * time.Second):
		t.Fatalf("%s did not start listening", name)
	}
	return p
}

// kill ends the process with SIGKILL and waits for it to be gone.
func (p *process) kill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s still running after SIGKILL", p.name)
	}
}

// metric reads one sample, by its name and labels as the exposition
// writes them; -1 when absent.
func (p *process) metric(t *testing.T, sample string) float64 {
	t.Helper()
	resp, err := http.Get(p.metricsURL)
	if err != nil {
		t.Fatalf("%s metrics: %v", p.name, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s metrics: %v", p.name, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, sample+" "); ok {
			var f float64
			if _, err := fmt.Sscan(v, &f); err != nil {
				t.Fatalf("%s metrics: %q: %v", p.name, line, err)
			}
			return f
		}
	}
	return -1
}

func (p *process) leaseHeld(t *testing.T, lease string) float64 {
	t.Helper()
	return p.metric(t, `homeserver_worker_lease_held{lease="`+lease+`"}`)
}

// waitFor polls cond until it holds, failing the test after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: not yet: %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond) // the poll's interval, not a wait for an event
	}
}

// register makes a user through open registration and returns its
// access token.
func register(t *testing.T, base, name string) string {
	t.Helper()
	var out struct {
		AccessToken string `json:"access_token"`
	}
	call(t, base, "", "POST", "/_matrix/client/v3/register", map[string]any{
		"username": name, "password": "correct horse battery", "auth": map[string]string{"type": "m.login.dummy"}}, &out)
	return out.AccessToken
}

// call makes a client API request that must succeed.
func call(t *testing.T, base, token, method, path string, body, out any) {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(method, base+path, bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, rb)
	}
	if out != nil {
		if err := json.Unmarshal(rb, out); err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
	}
}
