package appservice

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/persistentchat/homeserver/roomdag"
)

// The homeserver-to-service requests (spec: "Homeserver -> Application
// Service API"). Each carries Authorization: Bearer <hs_token>. Only the
// /_matrix/app/v1 paths are used: the legacy unversioned paths predate
// every library still maintained.

// ErrNoURL is returned for a service whose registration has url: null.
var ErrNoURL = errors.New("appservice: the service has no URL")

// StatusError is a reply from a service that was not 2xx.
type StatusError struct {
	Status int
	Body   string // the first bytes of the body, for diagnostics
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("appservice: the service answered %d: %s", e.Status, e.Body)
}

// maxReplyBytes bounds what is read of a service's reply.
const maxReplyBytes = 1 << 20

// Timeouts of the requests to services. A transaction may carry up to
// maxTxnEvents events and the service may do real work for each; a query
// blocks a client's request while the service creates the user or room.
const (
	transactionTimeout = 60 * time.Second
	queryTimeout       = 30 * time.Second
	pingTimeout        = 10 * time.Second
)

// client makes the requests; it is shared by every service.
type client struct {
	http *http.Client
}

func newClient(h *http.Client) *client {
	if h == nil {
		h = &http.Client{}
	}
	return &client{http: h}
}

// do sends one request to the service and returns the reply body of a 2xx
// answer, a *StatusError for any other, or the transport error.
func (c *client) do(ctx context.Context, reg *Registration, method, path string, query url.Values, body any, timeout time.Duration) ([]byte, error) {
	if reg.URL == "" {
		return nil, ErrNoURL
	}
	u := strings.TrimSuffix(reg.URL, "/") + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+reg.HSToken.Reveal())
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxReplyBytes))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, &StatusError{Status: resp.StatusCode, Body: string(b[:min(len(b), 1024)])}
	}
	return b, nil
}

// transaction is the body of PUT /transactions/{txnId}. Ephemeral events
// go under MSC2409's unstable name too: libraries written before v1.13
// (matrix-bot-sdk, older mautrix) read only that one.
type transaction struct {
	Events            []json.RawMessage `json:"events"`
	Ephemeral         []json.RawMessage `json:"ephemeral,omitempty"`
	EphemeralUnstable []json.RawMessage `json:"de.sorunome.msc2409.ephemeral,omitempty"`
}

// putTransaction sends a stored transaction body.
func (c *client) putTransaction(ctx context.Context, reg *Registration, txnID string, body json.RawMessage) error {
	_, err := c.do(ctx, reg, http.MethodPut, "/_matrix/app/v1/transactions/"+url.PathEscape(txnID), nil, body, transactionTimeout)
	return err
}

// queryUser asks whether the user exists (GET /users/{userId}); true
// means the service says it does and has created it.
func (c *client) queryUser(ctx context.Context, reg *Registration, u roomdag.UserID) (bool, error) {
	return queryResult(c.do(ctx, reg, http.MethodGet, "/_matrix/app/v1/users/"+url.PathEscape(string(u)), nil, nil, queryTimeout))
}

// queryAlias asks whether the alias exists (GET /rooms/{roomAlias}).
func (c *client) queryAlias(ctx context.Context, reg *Registration, a roomdag.RoomAlias) (bool, error) {
	return queryResult(c.do(ctx, reg, http.MethodGet, "/_matrix/app/v1/rooms/"+url.PathEscape(string(a)), nil, nil, queryTimeout))
}

func queryResult(_ []byte, err error) (bool, error) {
	var se *StatusError
	if errors.As(err, &se) && se.Status == http.StatusNotFound {
		return false, nil
	}
	return err == nil, err
}

// ping calls POST /ping with the caller's transaction ID.
func (c *client) ping(ctx context.Context, reg *Registration, txnID string) error {
	body := map[string]string{}
	if txnID != "" {
		body["transaction_id"] = txnID
	}
	_, err := c.do(ctx, reg, http.MethodPost, "/_matrix/app/v1/ping", nil, body, pingTimeout)
	return err
}

// thirdParty forwards a third-party lookup (GET /thirdparty/...).
func (c *client) thirdParty(ctx context.Context, reg *Registration, path string, query url.Values) (json.RawMessage, error) {
	b, err := c.do(ctx, reg, http.MethodGet, "/_matrix/app/v1/thirdparty/"+path, query, nil, queryTimeout)
	if err != nil {
		return nil, err
	}
	if !json.Valid(b) {
		return nil, fmt.Errorf("appservice %s: third-party reply is not JSON", reg.ID)
	}
	return b, nil
}
