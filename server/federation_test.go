package server_test

import (
	"crypto/tls"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/testserver"
)

// TestFederationListener: the federation listener speaks TLS only, and
// serves the federation and key APIs but not the client API, which keeps
// serving the keys as well.
func TestFederationListener(t *testing.T) {
	s := testserver.Federation(t, 1, testserver.Options{})[0]
	base := "https://" + s.HS.FederationAddr().String()
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} // a self-signed test certificate
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	for path, want := range map[string]int{
		"/_matrix/key/v2/server":         http.StatusOK,
		"/_matrix/federation/v1/version": http.StatusOK,
		"/_matrix/client/versions":       http.StatusNotFound,
	} {
		resp, err := c.Get(base + path)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s on the federation listener: %d, want %d", path, resp.StatusCode, want)
		}
	}
	if r := s.Anonymous().Do("GET", "/_matrix/key/v2/server", nil); r.Status != http.StatusOK {
		t.Errorf("keys on the client listener: %d", r.Status)
	}
	// Plain HTTP gets no federation answer.
	plain := &http.Client{Timeout: 30 * time.Second}
	resp, err := plain.Get("http://" + s.HS.FederationAddr().String() + "/_matrix/federation/v1/version")
	if err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Error("the federation listener answered plain HTTP")
		}
	}
}
