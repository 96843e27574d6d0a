// Package deploy starts real homeserver processes (the binary built from
// ../cmd/homeserver) on loopback ports, without Docker, and hands out
// clients for them. It plays the part of Complement's Deployment.
package deploy

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"time"
)

// Homeserver is one running server process.
type Homeserver struct {
	Name    string // server_name, e.g. 127.0.0.1:40123
	BaseURL string
	Dir     string
	cfgPath string
	bin     string
	cmd     *exec.Cmd
	log     *os.File
}

// Deployment is a set of running homeservers.
type Deployment struct {
	HS      []*Homeserver
	counter atomic.Int64
}

// SharedSecret is the registration_shared_secret every server gets.
const SharedSecret = "complement"

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Start launches n homeservers from the binary bin, each with its own data
// directory under root.
func Start(bin, root string, n int) (*Deployment, error) {
	d := &Deployment{}
	for i := 0; i < n; i++ {
		hs, err := startOne(bin, filepath.Join(root, fmt.Sprintf("hs%d", i+1)), nil)
		if err != nil {
			d.Stop()
			return nil, err
		}
		d.HS = append(d.HS, hs)
	}
	return d, nil
}

// StartOne launches one more homeserver from bin in dir, like Start, with
// edit (if not nil) applied to its generated config after the suite's own
// changes: for the tests of options that are off by default.
func StartOne(bin, dir string, edit func(cfg string) (string, error)) (*Homeserver, error) {
	return startOne(bin, dir, edit)
}

// SetConfig replaces the value of the one key in cfg at any indentation,
// and fails unless exactly one line sets it.
func SetConfig(cfg, key, value string) (string, error) {
	re := regexp.MustCompile(`(?m)^([ \t]*` + regexp.QuoteMeta(key) + `:) .*$`)
	if n := len(re.FindAllStringIndex(cfg, -1)); n != 1 {
		return "", fmt.Errorf("config key %s is set on %d lines, want 1", key, n)
	}
	return re.ReplaceAllLiteralString(cfg, re.FindStringSubmatch(cfg)[1]+" "+value), nil
}

func startOne(bin, dir string, edit func(cfg string) (string, error)) (*Homeserver, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	out, err := exec.Command(bin, "generate-config", "--server-name", addr, "--listen", addr,
		"--data-dir", filepath.Join(dir, "data"), "--registration", "open", "--shared-secret", SharedSecret).Output()
	if err != nil {
		return nil, fmt.Errorf("generate-config: %w", err)
	}
	cfg := string(out)
	// Tests flood the server with logins and messages, and bcrypt at cost 12
	// makes every registration slow.
	cfg = regexp.MustCompile(`(?m)^(rate_limiting:\n(?:\s*#.*\n)*\s*enabled:) true`).ReplaceAllString(cfg, "$1 false")
	cfg = regexp.MustCompile(`(?m)^bcrypt_rounds: \d+`).ReplaceAllString(cfg, "bcrypt_rounds: 4")
	if !strings.Contains(cfg, "enabled: false") {
		return nil, fmt.Errorf("could not turn rate limiting off in the generated config")
	}
	if edit != nil {
		if cfg, err = edit(cfg); err != nil {
			return nil, err
		}
	}
	hs := &Homeserver{Name: addr, BaseURL: "http://" + addr, Dir: dir, cfgPath: filepath.Join(dir, "homeserver.yaml"), bin: bin}
	if err := os.WriteFile(hs.cfgPath, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	return hs, hs.StartServer()
}

// StartServer (re)starts the process and waits until it answers.
func (hs *Homeserver) StartServer() error {
	logf, err := os.OpenFile(filepath.Join(hs.Dir, "server.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(hs.bin, "serve", "--config", hs.cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	dieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	hs.cmd, hs.log = cmd, logf
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(hs.BaseURL + "/_matrix/client/versions")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("homeserver %s did not answer /_matrix/client/versions within 30s (see %s/server.log)", hs.Name, hs.Dir)
}

// StopServer sends SIGTERM and waits for the process to exit.
func (hs *Homeserver) StopServer() {
	if hs.cmd == nil || hs.cmd.Process == nil {
		return
	}
	_ = hs.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { _ = hs.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		_ = hs.cmd.Process.Kill()
		<-done
	}
	hs.cmd = nil
	hs.log.Close()
}

// Stop stops every homeserver.
func (d *Deployment) Stop() {
	for _, hs := range d.HS {
		hs.StopServer()
	}
}

// UniqueLocalpart returns a fresh localpart with the given prefix.
func (d *Deployment) UniqueLocalpart(prefix string) string {
	return fmt.Sprintf("%s-%d", strings.ToLower(prefix), d.counter.Add(1))
}

// Register creates an account through Synapse's shared-secret admin API
// (as Complement does) and returns a logged-in client.
func (hs *Homeserver) Register(ctx context.Context, localpart, password string, admin bool) (*Client, error) {
	anon := NewClient(hs, "", "")
	res := anon.Do(ctx, "GET", []string{"_synapse", "admin", "v1", "register"}, nil)
	if res.Err != nil || res.Status != 200 {
		return nil, fmt.Errorf("admin register nonce: %v %d %s", res.Err, res.Status, res.Body)
	}
	nonce := res.GetString("nonce")
	mac := hmac.New(sha1.New, []byte(SharedSecret))
	adminStr := "notadmin"
	if admin {
		adminStr = "admin"
	}
	mac.Write([]byte(nonce + "\x00" + localpart + "\x00" + password + "\x00" + adminStr))
	res = anon.Do(ctx, "POST", []string{"_synapse", "admin", "v1", "register"}, map[string]any{
		"nonce": nonce, "username": localpart, "password": password, "admin": admin,
		"mac": hex.EncodeToString(mac.Sum(nil)),
	})
	if res.Err != nil || res.Status != 200 {
		return nil, fmt.Errorf("admin register: %v %d %s", res.Err, res.Status, res.Body)
	}
	return NewClient(hs, res.GetString("user_id"), res.GetString("access_token")).WithDevice(res.GetString("device_id")), nil
}

var _ = bytes.NewReader
