package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/media"
	"github.com/persistentchat/homeserver/roomdag"
)

// Authenticated media over federation (server-server API, "Content
// Repository", since v1.11): this server's media for other servers
// (/_matrix/federation/v1/media/download and /thumbnail, answered as
// multipart/mixed: a JSON part, then the bytes), and MediaFetcher, which
// fetches other servers' media for this server's clients.

// multipartFile is a download in the federation's form.
type multipartFile struct {
	f           *os.File
	contentType string
	fileName    string
}

func (m *multipartFile) WriteBody(w http.ResponseWriter, _ *http.Request) {
	defer m.f.Close()
	mw := multipart.NewWriter(w)
	w.Header().Set("Content-Type", "multipart/mixed; boundary="+mw.Boundary())
	w.WriteHeader(http.StatusOK)
	meta, err := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"application/json"}})
	if err != nil {
		return
	}
	meta.Write([]byte("{}")) // "Currently, this will always be an empty object."
	h := textproto.MIMEHeader{"Content-Type": {m.contentType}}
	if m.fileName != "" {
		if v := mime.FormatMediaType("attachment", map[string]string{"filename": m.fileName}); v != "" {
			h.Set("Content-Disposition", v)
		}
	}
	part, err := mw.CreatePart(h)
	if err != nil {
		return
	}
	if _, err := io.Copy(part, m.f); err != nil {
		return
	}
	mw.Close()
}

func mediaParam(r *http.Request) (media.ID, error) {
	id, err := media.ParseID(httpapi.PathParam(r, "mediaId"))
	if err != nil {
		return "", httpapi.InvalidParam("media IDs contain only A-Z, a-z, 0-9, '_' and '-'")
	}
	return id, nil
}

// mediaError maps the repository's errors as the client API does.
func mediaError(err error) error {
	switch {
	case errors.Is(err, media.ErrNotFound):
		return httpapi.NotFound("media not found")
	case errors.Is(err, media.ErrTooLarge):
		return httpapi.Errorf(http.StatusBadGateway, httpapi.CodeTooLarge, "content is too large to serve")
	case errors.Is(err, media.ErrNotYetUploaded):
		return httpapi.Errorf(http.StatusGatewayTimeout, httpapi.CodeNotYetUploaded, "media has not been uploaded yet")
	case errors.Is(err, media.ErrNotImage):
		return httpapi.Errorf(http.StatusBadRequest, httpapi.CodeUnknown, "cannot generate a thumbnail of this content")
	}
	return err
}

// GET /_matrix/federation/v1/media/download/{mediaId}
//
// Only this server's own uploads: a cached copy of another server's
// media is not served on (its ID holds a '/', which ParseID refuses).
func (in *Inbound) mediaDownload(r *http.Request) (any, error) {
	id, err := mediaParam(r)
	if err != nil {
		return nil, err
	}
	wait, err := media.WaitQuery(r.URL.Query())
	if err != nil {
		return nil, err
	}
	rec, f, err := in.Media.Open(r.Context(), id, media.Authenticated, wait)
	if err != nil {
		return nil, mediaError(err)
	}
	return &multipartFile{f: f, contentType: rec.ContentType, fileName: rec.FileName}, nil
}

// GET /_matrix/federation/v1/media/thumbnail/{mediaId}?width=&height=&method=
func (in *Inbound) mediaThumbnail(r *http.Request) (any, error) {
	id, err := mediaParam(r)
	if err != nil {
		return nil, err
	}
	width, height, method, err := media.ThumbnailQuery(r.URL.Query())
	if err != nil {
		return nil, err
	}
	wait, err := media.WaitQuery(r.URL.Query())
	if err != nil {
		return nil, err
	}
	th, err := in.Media.Thumbnail(r.Context(), id, width, height, method, media.Authenticated, wait)
	if err != nil {
		return nil, mediaError(err)
	}
	return &multipartFile{f: th.File, contentType: th.ContentType}, nil
}

// MediaFetcher fetches other servers' media over federation for this
// server's clients (media.Fetcher): the authenticated endpoint first,
// then, where the server does not know it (404 M_UNRECOGNIZED), the
// deprecated /_matrix/media/v3/download with allow_remote=false, as the
// spec says.
type MediaFetcher struct {
	Client Client
}

// FetchMedia implements media.Fetcher.
func (m MediaFetcher) FetchMedia(ctx context.Context, server roomdag.ServerName, id media.ID, maxSize int64) (string, string, io.ReadCloser, error) {
	path := "/_matrix/federation/v1/media/download/" + url.PathEscape(string(id)) + "?timeout_ms=20000"
	resp, err := m.get(ctx, server, path)
	if err != nil {
		return "", "", nil, err
	}
	if resp.StatusCode != http.StatusOK {
		code := errcode(resp)
		if resp.StatusCode != http.StatusNotFound || code != httpapi.CodeUnrecognized {
			return "", "", nil, statusError(resp.StatusCode, code, server)
		}
		legacy := "/_matrix/media/v3/download/" + url.PathEscape(string(server)) + "/" + url.PathEscape(string(id)) + "?allow_remote=false"
		if resp, err = m.get(ctx, server, legacy); err != nil {
			return "", "", nil, err
		}
		if resp.StatusCode != http.StatusOK {
			return "", "", nil, statusError(resp.StatusCode, errcode(resp), server)
		}
		return m.body(resp.Body, resp.Header, resp.ContentLength, maxSize)
	}
	mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/mixed" || params["boundary"] == "" {
		resp.Body.Close()
		return "", "", nil, fmt.Errorf("%w: %s answered %q, not multipart/mixed", media.ErrRemote, server, resp.Header.Get("Content-Type"))
	}
	mr := multipart.NewReader(resp.Body, params["boundary"])
	meta, err := mr.NextPart()
	if err != nil {
		resp.Body.Close()
		return "", "", nil, fmt.Errorf("%w: %s's answer has no metadata part: %v", media.ErrRemote, server, err)
	}
	var obj map[string]json.RawMessage
	if err := json.NewDecoder(io.LimitReader(meta, 64<<10)).Decode(&obj); err != nil {
		resp.Body.Close()
		return "", "", nil, fmt.Errorf("%w: %s's metadata part is not a JSON object", media.ErrRemote, server)
	}
	part, err := mr.NextPart()
	if err != nil {
		resp.Body.Close()
		return "", "", nil, fmt.Errorf("%w: %s's answer has no content part: %v", media.ErrRemote, server, err)
	}
	if loc := part.Header.Get("Location"); loc != "" {
		resp.Body.Close()
		return m.follow(ctx, server, loc, maxSize)
	}
	declared := int64(-1)
	if n, err := strconv.ParseInt(part.Header.Get("Content-Length"), 10, 64); err == nil {
		declared = n
	}
	return m.body(struct {
		io.Reader
		io.Closer
	}{part, resp.Body}, http.Header(part.Header), declared, maxSize)
}

// urlGetter is a client that can fetch a plain URL through the same
// IP deny-list (HTTPClient.GetURL), for a Location part.
type urlGetter interface {
	GetURL(ctx context.Context, rawURL string) (*http.Response, error)
}

func (m MediaFetcher) follow(ctx context.Context, server roomdag.ServerName, loc string, maxSize int64) (string, string, io.ReadCloser, error) {
	g, ok := m.Client.(urlGetter)
	if !ok {
		return "", "", nil, fmt.Errorf("%w: %s redirected the download, which this client cannot follow", media.ErrRemote, server)
	}
	resp, err := g.GetURL(ctx, loc)
	if err != nil {
		return "", "", nil, fmt.Errorf("%w: following %s's Location: %v", media.ErrRemote, server, err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return "", "", nil, fmt.Errorf("%w: %s's Location answered %d", media.ErrRemote, server, resp.StatusCode)
	}
	return m.body(resp.Body, resp.Header, resp.ContentLength, maxSize)
}

func (m MediaFetcher) get(ctx context.Context, server roomdag.ServerName, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := m.Client.Do(ctx, server, req)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", media.ErrRemote, err)
	}
	return resp, nil
}

// body is the content with its type and name, refused up front when its
// declared length (-1: none) passes maxSize (the repository bounds it
// again while reading).
func (m MediaFetcher) body(rc io.ReadCloser, h http.Header, declared, maxSize int64) (string, string, io.ReadCloser, error) {
	if declared > maxSize {
		rc.Close()
		return "", "", nil, media.ErrTooLarge
	}
	name := ""
	if _, p, err := mime.ParseMediaType(h.Get("Content-Disposition")); err == nil {
		name = p["filename"]
	}
	ctype := h.Get("Content-Type")
	if len(ctype) > 255 || strings.ContainsAny(ctype, "\r\n") {
		ctype = "application/octet-stream"
	}
	if len(name) > 255 || strings.ContainsAny(name, "\x00\r\n") {
		name = ""
	}
	return ctype, name, rc, nil
}

// errcode reads the errcode of an error answer, leaving the body
// consumed: only for answers that end the attempt.
func errcode(resp *http.Response) string {
	var e struct {
		Errcode string `json:"errcode"`
	}
	json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&e)
	resp.Body.Close()
	return e.Errcode
}

// statusError maps a remote failure to the repository's errors: 404 is
// not found, M_TOO_LARGE too large, 504 M_NOT_YET_UPLOADED not yet
// uploaded, and any other answer a remote failure.
func statusError(status int, code string, server roomdag.ServerName) error {
	switch {
	case status == http.StatusNotFound:
		return media.ErrNotFound
	case code == httpapi.CodeTooLarge:
		return media.ErrTooLarge
	case status == http.StatusGatewayTimeout && code == httpapi.CodeNotYetUploaded:
		return media.ErrNotYetUploaded
	}
	return fmt.Errorf("%w: %s answered %d %s", media.ErrRemote, server, status, code)
}

var _ media.Fetcher = MediaFetcher{}
