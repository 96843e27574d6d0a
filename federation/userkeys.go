package federation

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/persistentchat/homeserver/roomdag"
)

// UserKeys asks other servers for the end-to-end keys of their users
// (server-server API, "End-to-End Encryption": POST
// /_matrix/federation/v1/user/keys/query and /user/keys/claim), over
// Client, which signs each request. It is the key server's
// e2ee.RemoteKeys.
type UserKeys struct {
	Client Client
}

// maxKeysResponse bounds one server's answer to a key query or claim.
const maxKeysResponse = 16 << 20

// QueryKeys posts body, a user/keys/query request, to dest and returns
// its answer, a JSON object. Any status but 200 is an error.
func (u UserKeys) QueryKeys(ctx context.Context, dest roomdag.ServerName, body json.RawMessage) (json.RawMessage, error) {
	return u.post(ctx, dest, "/_matrix/federation/v1/user/keys/query", body)
}

// ClaimKeys posts body, a user/keys/claim request, to dest and returns
// its answer, a JSON object. Any status but 200 is an error.
func (u UserKeys) ClaimKeys(ctx context.Context, dest roomdag.ServerName, body json.RawMessage) (json.RawMessage, error) {
	return u.post(ctx, dest, "/_matrix/federation/v1/user/keys/claim", body)
}

func (u UserKeys) post(ctx context.Context, dest roomdag.ServerName, path string, body json.RawMessage) (json.RawMessage, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	return u.do(ctx, dest, req)
}

func (u UserKeys) do(ctx context.Context, dest roomdag.ServerName, req *http.Request) (json.RawMessage, error) {
	resp, err := u.Client.Do(ctx, dest, req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxKeysResponse+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s's answer: %w", dest, err)
	}
	if len(b) > maxKeysResponse {
		return nil, fmt.Errorf("%s's answer is over %d bytes", dest, maxKeysResponse)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s answered %d", dest, resp.StatusCode)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(b, &obj); err != nil || obj == nil {
		return nil, fmt.Errorf("%s's answer is not a JSON object", dest)
	}
	return b, nil
}

// UserDevices asks dest for a user's devices (GET
// /_matrix/federation/v1/user/devices/{userId}) and returns its answer,
// a JSON object. Any status but 200 is an error.
func (u UserKeys) UserDevices(ctx context.Context, dest roomdag.ServerName, user roomdag.UserID) (json.RawMessage, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "/_matrix/federation/v1/user/devices/"+url.PathEscape(string(user)), nil)
	if err != nil {
		return nil, err
	}
	return u.do(ctx, dest, req)
}
