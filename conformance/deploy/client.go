package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Client is a minimal Matrix client-server API client.
type Client struct {
	HS          *Homeserver
	UserID      string
	AccessToken string
	DeviceID    string
	HTTP        *http.Client
	txn         atomic.Int64
}

// NewClient returns a client for hs; token may be empty.
func NewClient(hs *Homeserver, userID, token string) *Client {
	return &Client{HS: hs, UserID: userID, AccessToken: token, HTTP: &http.Client{Timeout: 40 * time.Second}}
}

// WithDevice sets the device ID.
func (c *Client) WithDevice(id string) *Client { c.DeviceID = id; return c }

// NextTxn returns a fresh transaction ID.
func (c *Client) NextTxn() string {
	return fmt.Sprintf("txn-%d-%d", time.Now().UnixNano(), c.txn.Add(1))
}

// Res is one HTTP response.
type Res struct {
	Status int
	Header http.Header
	Body   []byte
	JSON   any
	Err    error
}

func (r *Res) String() string {
	if r.Err != nil {
		return "error: " + r.Err.Error()
	}
	b := r.Body
	if len(b) > 600 {
		b = append(append([]byte{}, b[:600]...), "..."...)
	}
	return fmt.Sprintf("HTTP %d %s", r.Status, b)
}

// Get follows a dotted path ("a.b.0.c"; "\." escapes a dot) into the JSON body.
func (r *Res) Get(path string) (any, bool) { return Path(r.JSON, path) }

// GetString returns the string at path, or "".
func (r *Res) GetString(path string) string {
	v, _ := r.Get(path)
	s, _ := v.(string)
	return s
}

// Path follows a dotted path into decoded JSON.
func Path(v any, path string) (any, bool) {
	if path == "" {
		return v, true
	}
	var parts []string
	cur := ""
	for i := 0; i < len(path); i++ {
		if path[i] == '\\' && i+1 < len(path) {
			cur += string(path[i+1])
			i++
		} else if path[i] == '.' {
			parts = append(parts, cur)
			cur = ""
		} else {
			cur += string(path[i])
		}
	}
	parts = append(parts, cur)
	for _, p := range parts {
		switch x := v.(type) {
		case map[string]any:
			nv, ok := x[p]
			if !ok {
				return nil, false
			}
			v = nv
		case []any:
			i, err := strconv.Atoi(p)
			if err != nil || i < 0 || i >= len(x) {
				return nil, false
			}
			v = x[i]
		default:
			return nil, false
		}
	}
	return v, true
}

// Opt changes a request.
type Opt func(*http.Request)

// WithQuery adds query parameters.
func WithQuery(kv ...string) Opt {
	return func(r *http.Request) {
		q := r.URL.Query()
		for i := 0; i+1 < len(kv); i += 2 {
			q.Add(kv[i], kv[i+1])
		}
		r.URL.RawQuery = q.Encode()
	}
}

// WithHeader sets a header.
func WithHeader(k, v string) Opt { return func(r *http.Request) { r.Header.Set(k, v) } }

// WithoutAuth drops the access token.
func WithoutAuth() Opt { return func(r *http.Request) { r.Header.Del("Authorization") } }

// RawBody is sent as-is.
type RawBody struct {
	Data        []byte
	ContentType string
}

// Do sends a request. path elements are escaped one by one; body is JSON
// encoded unless it is a RawBody or nil.
func (c *Client) Do(ctx context.Context, method string, path []string, body any, opts ...Opt) *Res {
	esc := make([]string, len(path))
	for i, p := range path {
		esc[i] = url.PathEscape(p)
	}
	u := c.HS.BaseURL + "/" + strings.Join(esc, "/")
	var rd io.Reader
	ctype := ""
	switch b := body.(type) {
	case nil:
	case RawBody:
		rd, ctype = bytes.NewReader(b.Data), b.ContentType
	case []byte:
		rd, ctype = bytes.NewReader(b), "application/json"
	default:
		j, err := json.Marshal(b)
		if err != nil {
			return &Res{Err: err}
		}
		rd, ctype = bytes.NewReader(j), "application/json"
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return &Res{Err: err}
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if c.AccessToken != "" {
		req.Header.Set("Authorization", "Bearer "+c.AccessToken)
	}
	for _, o := range opts {
		o(req)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return &Res{Err: err}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	res := &Res{Status: resp.StatusCode, Header: resp.Header, Body: data, Err: err}
	if len(data) > 0 {
		var j any
		if json.Unmarshal(data, &j) == nil {
			res.JSON = j
		}
	}
	return res
}
