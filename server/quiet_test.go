package server_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"

	"github.com/persistentchat/homeserver/testserver"
)

type quietResp struct {
	status  int
	eventID string
}

// doQuiet is Client.Do without failing the test on connection errors,
// which are expected while the server shuts down.
func doQuiet(c *testserver.Client, method, path, body string) (quietResp, error) {
	req, err := http.NewRequest(method, c.Base+path, strings.NewReader(body))
	if err != nil {
		return quietResp{}, err
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return quietResp{}, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out struct {
		EventID string `json:"event_id"`
	}
	json.Unmarshal(b, &out)
	return quietResp{status: resp.StatusCode, eventID: out.EventID}, nil
}
