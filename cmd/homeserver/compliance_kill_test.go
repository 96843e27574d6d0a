package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	gosync "sync"
	"syscall"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/compliance"
	"github.com/persistentchat/homeserver/configs"
	"github.com/persistentchat/homeserver/server"
	"github.com/persistentchat/homeserver/testserver"
)

// TestComplianceArchiveSurvivesSIGKILL: the real binary, archiving,
// takes messages from eight concurrent senders and is killed (SIGKILL)
// in mid-stream, its archiver stepping. Restarted on the same data, it
// archives the rest: the chain verifies (`homeserver compliance
// verify`), and the export (`homeserver compliance export`) holds every
// message acknowledged to a sender before the kill, every event the
// database holds, and each exactly once.
func TestComplianceArchiveSurvivesSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs it twice")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "homeserver")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	database := "database:\n  name: sqlite3\n"
	if testserver.Engine() == configs.EnginePostgres {
		database = fmt.Sprintf("database:\n  name: postgres\n  args:\n    dsn: %q\n", testserver.PostgresDatabase(t))
	}
	cfgPath := filepath.Join(dir, "homeserver.yaml")
	cfgText := fmt.Sprintf(`server_name: "localhost"
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
compliance:
  enabled: true
  checkpoint_records: 50
  checkpoint_interval: "1s"
%s`, filepath.Join(dir, "data"), filepath.Join(dir, "signing.key"), database)
	if err := os.WriteFile(cfgPath, []byte(cfgText), 0o600); err != nil {
		t.Fatal(err)
	}

	p := startServing(t, "first", bin, cfgPath)
	const senders = 8
	tokens, rooms := make([]string, senders), make([]string, senders)
	for i := range senders {
		tokens[i] = registerSender(t, p.url, fmt.Sprintf("sender%d", i))
		var room struct {
			RoomID string `json:"room_id"`
		}
		if err := request(p.url, tokens[i], "POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}, &room); err != nil {
			t.Fatal(err)
		}
		rooms[i] = room.RoomID
	}

	// The senders send until the server dies; acked holds the event of
	// every send the server answered.
	var mu gosync.Mutex
	var acked []string
	ackedN := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}
	var wg gosync.WaitGroup
	for i := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; ; j++ {
				var out struct {
					EventID string `json:"event_id"`
				}
				path := fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/m.room.message/k%d-%d", rooms[i], i, j)
				if err := request(p.url, tokens[i], "PUT", path, map[string]any{"msgtype": "m.text", "body": fmt.Sprint("before the kill ", i, " ", j)}, &out); err != nil {
					return // the server is gone
				}
				mu.Lock()
				acked = append(acked, out.EventID)
				mu.Unlock()
			}
		}()
	}
	waitUntil(t, 60*time.Second, "400 messages acknowledged", func() bool { return ackedN() >= 400 })
	p.kill(t)
	wg.Wait()
	var st compliance.Status
	if out, err := exec.Command(bin, "compliance", "status", "--config", cfgPath).Output(); err != nil || json.Unmarshal(out, &st) != nil {
		t.Fatalf("status after the kill: %v\n%s", err, out)
	}
	// Usually the archive is behind at the kill: the restart resumes it.
	t.Logf("%d messages acknowledged before the kill; the archive then held %d records, %d events behind, %d sealed",
		len(acked), st.Records, st.Lag, st.SealedSeq)

	p = startServing(t, "restarted", bin, cfgPath)
	for i := range senders {
		var out struct {
			EventID string `json:"event_id"`
		}
		if err := request(p.url, tokens[i], "PUT", fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/m.room.message/after%d", rooms[i], i),
			map[string]any{"msgtype": "m.text", "body": "after the restart"}, &out); err != nil {
			t.Fatal(err)
		}
		acked = append(acked, out.EventID)
	}
	waitUntil(t, 60*time.Second, "the archive caught up and sealed", func() bool {
		out, err := exec.Command(bin, "compliance", "status", "--config", cfgPath).Output()
		if err != nil || json.Unmarshal(out, &st) != nil {
			return false
		}
		return st.Lag == 0 && st.Queued == 0 && st.HeadSeq > 0 && st.SealedSeq == st.HeadSeq
	})
	p.stop(t)

	if out, err := exec.Command(bin, "compliance", "verify", "--config", cfgPath).CombinedOutput(); err != nil || !strings.HasPrefix(string(out), "ok:") {
		t.Fatalf("verify after the kill: %v\n%s", err, out)
	}
	export, err := exec.Command(bin, "compliance", "export", "--config", cfgPath, "--format", "jsonl").Output()
	if err != nil {
		t.Fatalf("export: %v", err)
	}
	if _, _, err := compliance.VerifyExport(bytes.NewReader(export), nil); err != nil {
		t.Fatalf("the export does not verify: %v", err)
	}
	archived := map[string]int{}
	sc := bufio.NewScanner(bytes.NewReader(export))
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var line struct {
			Record *struct {
				Kind    string `json:"kind"`
				Payload struct {
					EventID string `json:"event_id"`
				} `json:"payload"`
			} `json:"record"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatal(err)
		}
		if line.Record != nil && line.Record.Kind == compliance.KindEvent {
			archived[line.Record.Payload.EventID]++
		}
	}
	for _, id := range acked {
		if archived[id] == 0 {
			t.Errorf("acknowledged message %s is not in the archive", id)
		}
	}
	for id, n := range archived {
		if n != 1 {
			t.Errorf("event %s archived %d times", id, n)
		}
	}
	// Every event the database holds, and no other, was archived (the
	// sends in flight at the kill among them, when they committed).
	cfg, err := configs.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	db, err := server.OpenStore(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	events, err := db.EventPos(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(archived)) != int64(events) {
		t.Errorf("%d events archived, the database holds %d", len(archived), events)
	}
}

// serving is a homeserver process.
type serving struct {
	name   string
	cmd    *exec.Cmd
	url    string
	exited chan struct{}
}

// startServing runs `homeserver serve` and waits until its client API
// listens (its log names the address); its log goes to the test's.
func startServing(t *testing.T, name, bin, config string) *serving {
	t.Helper()
	p := &serving{name: name, cmd: exec.Command(bin, "serve", "--config", config), exited: make(chan struct{})}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var rec struct {
				Msg  string `json:"msg"`
				Addr string `json:"addr"`
			}
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "serving client API" {
				addr <- rec.Addr
			} else if !strings.Contains(sc.Text(), `"level":"INFO"`) {
				t.Logf("%s: %s", name, sc.Bytes())
			}
		}
		p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() { p.stop(t) })
	select {
	case a := <-addr:
		p.url = "http://" + a
	case <-p.exited:
		t.Fatalf("%s exited at start", name)
	case <-time.After(60 * time.Second):
		t.Fatalf("%s did not start listening", name)
	}
	return p
}

// kill ends the process with SIGKILL and waits until it is gone.
func (p *serving) kill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s still running after SIGKILL", p.name)
	}
}

// stop ends the process with SIGTERM (SIGKILL after 15 s); a stopped
// process stays stopped.
func (p *serving) stop(t *testing.T) {
	select {
	case <-p.exited:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(15 * time.Second):
		p.cmd.Process.Kill()
		<-p.exited
	}
}

// waitUntil polls cond until it holds, failing the test after timeout.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: not yet: %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond) // the poll's interval, not a wait for an event
	}
}

// registerSender makes a user through open registration and returns its
// access token.
func registerSender(t *testing.T, base, name string) string {
	t.Helper()
	var out struct {
		AccessToken string `json:"access_token"`
	}
	if err := request(base, "", "POST", "/_matrix/client/v3/register", map[string]any{
		"username": name, "password": "correct horse battery", "auth": map[string]string{"type": "m.login.dummy"}}, &out); err != nil {
		t.Fatal(err)
	}
	return out.AccessToken
}

// request makes a client API request; an answer other than 200 is an
// error, as is no answer.
func request(base, token, method, path string, body, out any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequest(method, base+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, rb)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(rb, out)
}
