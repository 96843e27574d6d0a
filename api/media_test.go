package api_test

import (
	"bytes"
	"encoding/json"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/configs"
	"github.com/persistentchat/homeserver/testserver"
)

// mediaResp is a raw media reply: status, headers, body.
type mediaResp struct {
	Status int
	Header http.Header
	Body   []byte
}

func (r *mediaResp) errcode() string {
	var e struct {
		Errcode string `json:"errcode"`
	}
	_ = json.Unmarshal(r.Body, &e)
	return e.Errcode
}

// mediaDo sends a request with a body of the given content type (no
// Content-Length when body is a plain io.Reader) and returns the reply
// undecoded: the testserver client speaks JSON only.
func mediaDo(t *testing.T, c *testserver.Client, method, path, ctype string, body io.Reader) *mediaResp {
	t.Helper()
	req, err := http.NewRequest(method, c.Base+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return &mediaResp{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// upload posts data and returns the media ID of its mxc:// URI.
func upload(t *testing.T, c *testserver.Client, ctype, filename string, data []byte) string {
	t.Helper()
	path := "/_matrix/media/v3/upload"
	if filename != "" {
		path += "?filename=" + url.QueryEscape(filename)
	}
	r := mediaDo(t, c, "POST", path, ctype, bytes.NewReader(data))
	if r.Status != http.StatusOK {
		t.Fatalf("upload: %d %s", r.Status, r.Body)
	}
	var out struct {
		ContentURI string `json:"content_uri"`
	}
	if err := json.Unmarshal(r.Body, &out); err != nil {
		t.Fatal(err)
	}
	id, ok := strings.CutPrefix(out.ContentURI, "mxc://localhost/")
	if !ok || len(id) < 24 || strings.Trim(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") != "" {
		t.Fatalf("content_uri %q: want mxc://localhost/<24+ URL-safe characters>", out.ContentURI)
	}
	return id
}

const dl = "/_matrix/client/v1/media/download/localhost/"

func TestMediaUploadDownload(t *testing.T) {
	s := testserver.Start(t, testserver.Options{})
	alice, bob := s.Register("alice"), s.Register("bob")
	data := []byte("minutes of the design review\n")
	id := upload(t, alice, "text/plain; charset=utf-8", "notes.txt", data)

	// Any local user may download (knowing the ID is the capability).
	r := mediaDo(t, bob, "GET", dl+id, "", nil)
	if r.Status != http.StatusOK || !bytes.Equal(r.Body, data) {
		t.Fatalf("download: %d %q, want 200 %q", r.Status, r.Body, data)
	}
	want := map[string]string{
		"Content-Type":                 "text/plain; charset=utf-8",
		"Content-Disposition":          `inline; filename=notes.txt`,
		"X-Content-Type-Options":       "nosniff",
		"Cross-Origin-Resource-Policy": "cross-origin",
	}
	for k, v := range want {
		if got := r.Header.Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	if csp := r.Header.Get("Content-Security-Policy"); !strings.HasPrefix(csp, "sandbox;") || !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("Content-Security-Policy = %q", csp)
	}
	if cc := r.Header.Get("Cache-Control"); !strings.Contains(cc, "max-age") {
		t.Errorf("Cache-Control = %q", cc)
	}

	// A file name in the path overrides the uploaded one; non-ASCII names
	// use filename* (RFC 6266).
	r = mediaDo(t, bob, "GET", dl+id+"/r%C3%A9sum%C3%A9.txt", "", nil)
	if cd := r.Header.Get("Content-Disposition"); cd != `inline; filename*=utf-8''r%C3%A9sum%C3%A9.txt` {
		t.Errorf("Content-Disposition with path file name = %q", cd)
	}

	// Types off the inline allow-list keep their type but are served as
	// attachments, in the sandbox (Synapse; spec "Serving inline content").
	html := upload(t, alice, "text/html", "page.html", []byte("<script>alert(1)</script>"))
	r = mediaDo(t, bob, "GET", dl+html, "", nil)
	if ct, cd := r.Header.Get("Content-Type"), r.Header.Get("Content-Disposition"); ct != "text/html; charset=UTF-8" || cd != `attachment; filename=page.html` {
		t.Errorf("HTML upload served as %q, %q; want text/html; charset=UTF-8, attachment", ct, cd)
	}

	// A Range request gets part of the file (seeking in audio and video).
	req, _ := http.NewRequest("GET", s.URL+dl+id, nil)
	req.Header.Set("Authorization", "Bearer "+bob.Token)
	req.Header.Set("Range", "bytes=0-6")
	resp, err := bob.HTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	part, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent || string(part) != "minutes" {
		t.Errorf("range: %d %q", resp.StatusCode, part)
	}

	var cfg map[string]int64
	alice.MustDo("GET", "/_matrix/client/v1/media/config", nil, &cfg)
	if cfg["m.upload.size"] != int64(configs.Default().MaxUploadSize) {
		t.Errorf("config = %v, want m.upload.size %d", cfg, configs.Default().MaxUploadSize)
	}
}

func TestMediaDeduplicated(t *testing.T) {
	s := testserver.Start(t, testserver.Options{})
	alice, bob := s.Register("alice"), s.Register("bob")
	data := bytes.Repeat([]byte("the same quarterly report "), 1000)
	a := upload(t, alice, "application/pdf", "q3.pdf", data)
	b := upload(t, bob, "application/pdf", "copy of q3.pdf", data)
	if a == b {
		t.Fatalf("two uploads got the same media ID %s", a)
	}
	for _, id := range []string{a, b} {
		if r := mediaDo(t, alice, "GET", dl+id, "", nil); !bytes.Equal(r.Body, data) {
			t.Errorf("download %s: %d, %d bytes", id, r.Status, len(r.Body))
		}
	}
	var files []string
	filepath.WalkDir(filepath.Join(s.DataDir, "media"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			files = append(files, p)
		}
		return nil
	})
	if len(files) != 1 || !strings.Contains(files[0], filepath.Join("media", "content")) {
		t.Errorf("files on disk after two identical uploads: %v; want one under media/content", files)
	}
}

func TestMediaTooLarge(t *testing.T) {
	s := testserver.Start(t, testserver.Options{Configure: func(c *configs.Config) { c.MaxUploadSize = 1024 }})
	alice := s.Register("alice")
	var cfg map[string]int64
	alice.MustDo("GET", "/_matrix/client/v1/media/config", nil, &cfg)
	if cfg["m.upload.size"] != 1024 {
		t.Errorf("config = %v, want m.upload.size 1024", cfg)
	}
	upload(t, alice, "application/octet-stream", "", make([]byte, 1024)) // at the limit: fine

	// With a Content-Length past the limit, and streamed without one.
	for name, body := range map[string]io.Reader{
		"declared": bytes.NewReader(make([]byte, 1025)),
		"streamed": io.MultiReader(bytes.NewReader(make([]byte, 600)), bytes.NewReader(make([]byte, 600))),
	} {
		r := mediaDo(t, alice, "POST", "/_matrix/media/v3/upload", "application/octet-stream", body)
		if r.Status != http.StatusRequestEntityTooLarge || r.errcode() != "M_TOO_LARGE" {
			t.Errorf("%s: %d %s, want 413 M_TOO_LARGE", name, r.Status, r.Body)
		}
	}
	// Nothing of the refused uploads is left on disk.
	entries, _ := filepath.Glob(filepath.Join(s.DataDir, "media", "tmp", "*"))
	if len(entries) != 0 {
		t.Errorf("temporary files left: %v", entries)
	}
}

func TestMediaBadRequests(t *testing.T) {
	s := testserver.Start(t, testserver.Options{})
	alice := s.Register("alice")
	id := upload(t, alice, "text/plain", "a.txt", []byte("x"))

	for _, tc := range []struct {
		path   string
		status int
		code   string
	}{
		{dl + "..%2F..%2Fhomeserver.db", 400, "M_INVALID_PARAM"},
		{dl + "%2E%2E", 400, "M_INVALID_PARAM"},
		{dl + "abc.def", 400, "M_INVALID_PARAM"},
		{dl + "abc%00", 400, "M_INVALID_PARAM"},
		{dl + "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", 404, "M_NOT_FOUND"},
		// Another server's media is fetched over federation: an address
		// the IP deny-list refuses (loopback) cannot be (and is no DNS
		// name, so nothing leaves the machine).
		{"/_matrix/client/v1/media/download/127.0.0.2:9/" + id, 502, "M_UNKNOWN"},
		{"/_matrix/client/v1/media/download/localhost%2F..%2F/" + id, 400, "M_INVALID_PARAM"},
		// The deprecated unauthenticated endpoints are frozen.
		{"/_matrix/media/v3/download/localhost/" + id, 404, "M_NOT_FOUND"},
		{"/_matrix/media/v3/thumbnail/localhost/" + id + "?width=32&height=32", 404, "M_NOT_FOUND"},
	} {
		r := mediaDo(t, alice, "GET", tc.path, "", nil)
		if r.Status != tc.status || r.errcode() != tc.code {
			t.Errorf("GET %s: %d %s, want %d %s", tc.path, r.Status, r.Body, tc.status, tc.code)
		}
	}
	// A literal ".." segment never reaches the handler as a media ID.
	if r := mediaDo(t, alice, "GET", dl+"../../homeserver.db", "", nil); r.Status < 400 || r.Status >= 500 {
		t.Errorf("GET with ../: %d %s, want a 4xx", r.Status, r.Body)
	}

	// Downloads need an access token.
	anon := s.Anonymous()
	if r := mediaDo(t, anon, "GET", dl+id, "", nil); r.Status != 401 || r.errcode() != "M_MISSING_TOKEN" {
		t.Errorf("unauthenticated download: %d %s, want 401 M_MISSING_TOKEN", r.Status, r.Body)
	}
	if r := mediaDo(t, anon, "POST", "/_matrix/media/v3/upload", "text/plain", strings.NewReader("x")); r.Status != 401 {
		t.Errorf("unauthenticated upload: %d %s, want 401", r.Status, r.Body)
	}
}

func TestMediaCreateThenUpload(t *testing.T) {
	s := testserver.Start(t, testserver.Options{})
	alice, bob := s.Register("alice"), s.Register("bob")
	var created struct {
		ContentURI      string `json:"content_uri"`
		UnusedExpiresAt int64  `json:"unused_expires_at"`
	}
	alice.MustDo("POST", "/_matrix/media/v1/create", nil, &created)
	id := strings.TrimPrefix(created.ContentURI, "mxc://localhost/")
	if id == created.ContentURI || created.UnusedExpiresAt <= time.Now().UnixMilli() {
		t.Fatalf("create: %+v", created)
	}
	put := "/_matrix/media/v3/upload/localhost/" + id + "?filename=later.txt"
	data := []byte("uploaded after the event was sent")

	if r := mediaDo(t, bob, "GET", dl+id+"?timeout_ms=0", "", nil); r.Status != http.StatusGatewayTimeout || r.errcode() != "M_NOT_YET_UPLOADED" {
		t.Errorf("download before upload: %d %s, want 504 M_NOT_YET_UPLOADED", r.Status, r.Body)
	}
	if r := mediaDo(t, bob, "PUT", put, "text/plain", bytes.NewReader(data)); r.Status != http.StatusForbidden || r.errcode() != "M_FORBIDDEN" {
		t.Errorf("upload by another user: %d %s, want 403 M_FORBIDDEN", r.Status, r.Body)
	}
	// A download that starts before the upload waits for it.
	got := make(chan *mediaResp, 1)
	go func() { got <- mediaDo(t, bob, "GET", dl+id+"?timeout_ms=60000", "", nil) }()
	if r := mediaDo(t, alice, "PUT", put, "text/plain", bytes.NewReader(data)); r.Status != http.StatusOK {
		t.Fatalf("upload: %d %s", r.Status, r.Body)
	}
	if r := <-got; r.Status != http.StatusOK || !bytes.Equal(r.Body, data) || r.Header.Get("Content-Disposition") != "inline; filename=later.txt" {
		t.Errorf("waiting download: %d %q %q", r.Status, r.Body, r.Header.Get("Content-Disposition"))
	}
	if r := mediaDo(t, alice, "PUT", put, "text/plain", bytes.NewReader(data)); r.Status != http.StatusConflict || r.errcode() != "M_CANNOT_OVERWRITE_MEDIA" {
		t.Errorf("second upload: %d %s, want 409 M_CANNOT_OVERWRITE_MEDIA", r.Status, r.Body)
	}
	unknown := "/_matrix/media/v3/upload/localhost/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	if r := mediaDo(t, alice, "PUT", unknown, "text/plain", bytes.NewReader(data)); r.Status != http.StatusNotFound {
		t.Errorf("upload to unknown ID: %d %s, want 404", r.Status, r.Body)
	}
	// Media IDs awaiting upload are limited per user.
	var last *testserver.Response
	for range 12 {
		last = alice.Do("POST", "/_matrix/media/v1/create", nil)
	}
	if last.Status != http.StatusTooManyRequests || last.Errcode() != "M_LIMIT_EXCEEDED" {
		t.Errorf("12th pending create: %d %s, want 429 M_LIMIT_EXCEEDED", last.Status, last.Body)
	}
}

// testImage is a w×h image with a gradient, so scaling has work to do.
func testImage(w, h int) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.Set(x, y, color.RGBA{uint8(x), uint8(y), 128, 255})
		}
	}
	return img
}

func TestMediaThumbnail(t *testing.T) {
	s := testserver.Start(t, testserver.Options{})
	alice := s.Register("alice")
	var pngBuf, jpgBuf, gifBuf bytes.Buffer
	png.Encode(&pngBuf, testImage(400, 200))
	jpeg.Encode(&jpgBuf, testImage(300, 300), nil)
	gif.Encode(&gifBuf, testImage(400, 100), nil)
	pngID := upload(t, alice, "image/png", "wide.png", pngBuf.Bytes())
	jpgID := upload(t, alice, "image/jpeg", "square.jpg", jpgBuf.Bytes())
	gifID := upload(t, alice, "image/gif", "small.gif", gifBuf.Bytes())
	txtID := upload(t, alice, "text/plain", "a.txt", []byte("not an image"))
	const th = "/_matrix/client/v1/media/thumbnail/localhost/"

	for _, tc := range []struct {
		id, query, ctype string
		w, h             int
	}{
		// Requests snap to the configured sizes (Synapse's defaults): the
		// closest of those at least as large in one direction.
		{pngID, "width=100&height=100&method=scale", "image/png", 320, 160},              // 320x240 scale
		{pngID, "width=64&height=64&method=crop", "image/png", 96, 96},                   // 96x96 crop
		{pngID, "width=320&height=240", "image/png", 320, 160},                           // scale is the default
		{pngID, "width=1000&height=1000&method=scale", "image/png", 400, 200},            // never upscaled: the original
		{pngID, "width=1000&height=1000&method=crop&animated=true", "image/png", 96, 96}, // else the largest
		{jpgID, "width=32&height=32&method=crop", "image/jpeg", 32, 32},
		{jpgID, "width=96&height=50&method=scale", "image/jpeg", 240, 240},
		{gifID, "width=32&height=32&method=scale", "image/png", 320, 80},
	} {
		r := mediaDo(t, alice, "GET", th+tc.id+"?"+tc.query, "", nil)
		if r.Status != http.StatusOK {
			t.Errorf("thumbnail %s: %d %s", tc.query, r.Status, r.Body)
			continue
		}
		cfg, _, err := image.DecodeConfig(bytes.NewReader(r.Body))
		if err != nil || cfg.Width != tc.w || cfg.Height != tc.h || r.Header.Get("Content-Type") != tc.ctype {
			t.Errorf("thumbnail of %s %s: %dx%d %s (%v), want %dx%d %s", tc.ctype, tc.query,
				cfg.Width, cfg.Height, r.Header.Get("Content-Type"), err, tc.w, tc.h, tc.ctype)
		}
		if r.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("thumbnail without safe headers: %v", r.Header)
		}
	}
	// Thumbnails are made once and then served from disk.
	cached, _ := filepath.Glob(filepath.Join(s.DataDir, "media", "thumbnails", "*", "*", "320x160-scale.png"))
	if len(cached) != 1 {
		t.Errorf("cached 320x160 thumbnails: %v", cached)
	}

	for _, tc := range []struct {
		id, query string
		status    int
		code      string
	}{
		{txtID, "width=32&height=32", 400, "M_UNKNOWN"},
		{pngID, "width=abc&height=32", 400, "M_INVALID_PARAM"},
		{pngID, "width=0&height=32", 400, "M_INVALID_PARAM"},
		{pngID, "width=32&height=32&method=zoom", 400, "M_INVALID_PARAM"},
		{pngID, "height=32", 400, "M_MISSING_PARAM"},
		{"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "width=32&height=32", 404, "M_NOT_FOUND"},
	} {
		r := mediaDo(t, alice, "GET", th+tc.id+"?"+tc.query, "", nil)
		if r.Status != tc.status || r.errcode() != tc.code {
			t.Errorf("thumbnail %s: %d %s, want %d %s", tc.query, r.Status, r.Body, tc.status, tc.code)
		}
	}
}

// TestMediaKeepsContentType: the uploader's Content-Type is served back as
// it was sent (spec v1.12, MSC2701), unusual ones included, with a UTF-8
// charset added to text types without one as Synapse does; the
// disposition is inline only for the spec's allow-list, and every
// download carries the sandboxing headers.
func TestMediaKeepsContentType(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t, testserver.Options{})
	alice := s.Register("alice")
	for _, tc := range []struct {
		uploaded, served, disposition string
	}{
		{"img/png", "img/png", "attachment"},
		{"image/png", "image/png", "inline"},
		{"IMAGE/PNG", "IMAGE/PNG", "inline"},
		{"text/plain", "text/plain; charset=UTF-8", "inline"},
		{"text/plain; charset=utf-16", "text/plain; charset=utf-16", "inline"},
		{"text/csv;charset=UTF-8", "text/csv;charset=UTF-8", "inline"},
		{"image/svg+xml", "image/svg+xml; charset=UTF-8", "attachment"},
		{"application/pdf", "application/pdf", "attachment"},
		{"application/x.weird+json; v=\"1\"", "application/x.weird+json; v=\"1\"", "attachment"},
		{"notatype", "notatype", "attachment"},
		{"", "application/octet-stream", "attachment"},
	} {
		id := upload(t, alice, tc.uploaded, "f", []byte("data"))
		r := mediaDo(t, alice, "GET", dl+id, "", nil)
		if r.Status != http.StatusOK {
			t.Fatalf("download of %q: %d %s", tc.uploaded, r.Status, r.Body)
		}
		h := r.Header
		if h.Get("Content-Type") != tc.served || h.Get("Content-Disposition") != tc.disposition+"; filename=f" {
			t.Errorf("uploaded as %q: served %q, %q; want %q, %q", tc.uploaded, h.Get("Content-Type"), h.Get("Content-Disposition"), tc.served, tc.disposition)
		}
		if h.Get("Content-Security-Policy") != "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; object-src 'self';" ||
			h.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("uploaded as %q: CSP %q, X-Content-Type-Options %q", tc.uploaded, h.Get("Content-Security-Policy"), h.Get("X-Content-Type-Options"))
		}
	}
	// A value that is no sane header value is refused, not stored.
	for _, ctype := range []string{"image/pngé", strings.Repeat("a", 256)} {
		if r := mediaDo(t, alice, "POST", "/_matrix/media/v3/upload", ctype, strings.NewReader("x")); r.Status != 400 || r.errcode() != "M_INVALID_PARAM" {
			t.Errorf("upload as %q: %d %s, want 400 M_INVALID_PARAM", ctype, r.Status, r.Body)
		}
	}
}

// TestAuthenticatedMediaSwitch: Synapse's enable_authenticated_media.
// Media uploaded while it is off stays on the deprecated unauthenticated
// endpoints after it is turned on; media uploaded while it is on is only
// served through /_matrix/client/v1/media (404 M_NOT_FOUND on the legacy
// paths, as in Synapse) until it is turned off again.
func TestAuthenticatedMediaSwitch(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	start := func(on bool) *testserver.Server {
		return testserver.Start(t, testserver.Options{DataDir: dir, Configure: func(c *configs.Config) { c.EnableAuthenticatedMedia = on }})
	}
	var img bytes.Buffer
	png.Encode(&img, testImage(64, 64))
	const legacyDL, legacyTh = "/_matrix/media/v3/download/localhost/", "/_matrix/media/v3/thumbnail/localhost/"
	const th = "/_matrix/client/v1/media/thumbnail/localhost/"
	type want struct{ legacy, authed int }
	check := func(srv *testserver.Server, user *testserver.Client, id string, w want, what string) {
		t.Helper()
		anon := srv.Anonymous()
		for _, p := range []string{legacyDL + id, legacyDL + id + "/name.png", legacyTh + id + "?width=16&height=16"} {
			r := mediaDo(t, anon, "GET", p, "", nil)
			if r.Status != w.legacy || w.legacy == 404 && r.errcode() != "M_NOT_FOUND" {
				t.Errorf("%s: GET %s without a token: %d %s, want %d", what, p, r.Status, r.Body, w.legacy)
			}
			if w.legacy == 200 && r.Header.Get("X-Content-Type-Options") != "nosniff" {
				t.Errorf("%s: GET %s without the safe headers", what, p)
			}
		}
		for _, p := range []string{dl + id, th + id + "?width=16&height=16"} {
			if r := mediaDo(t, user, "GET", p, "", nil); r.Status != w.authed {
				t.Errorf("%s: GET %s: %d %s, want %d", what, p, r.Status, r.Body, w.authed)
			}
		}
	}

	srv := start(false)
	alice := srv.Register("alice")
	old := upload(t, alice, "image/png", "old.png", img.Bytes())
	var created struct {
		ContentURI string `json:"content_uri"`
	}
	alice.MustDo("POST", "/_matrix/media/v1/create", nil, &created)
	oldCreated := strings.TrimPrefix(created.ContentURI, "mxc://localhost/")
	if r := mediaDo(t, alice, "PUT", "/_matrix/media/v3/upload/localhost/"+oldCreated, "image/png", bytes.NewReader(img.Bytes())); r.Status != 200 {
		t.Fatalf("async upload: %d %s", r.Status, r.Body)
	}
	check(srv, alice, old, want{200, 200}, "off, media from while off")
	check(srv, alice, oldCreated, want{200, 200}, "off, created while off")
	srv.Stop()

	srv = start(true)
	alice = reconnect(srv, alice)
	fresh := upload(t, alice, "image/png", "new.png", img.Bytes())
	alice.MustDo("POST", "/_matrix/media/v1/create", nil, &created)
	freshCreated := strings.TrimPrefix(created.ContentURI, "mxc://localhost/")
	if r := mediaDo(t, alice, "PUT", "/_matrix/media/v3/upload/localhost/"+freshCreated, "image/png", bytes.NewReader(img.Bytes())); r.Status != 200 {
		t.Fatalf("async upload: %d %s", r.Status, r.Body)
	}
	check(srv, alice, old, want{200, 200}, "on, media from while off")
	check(srv, alice, oldCreated, want{200, 200}, "on, created while off")
	check(srv, alice, fresh, want{404, 200}, "on, media from while on")
	check(srv, alice, freshCreated, want{404, 200}, "on, created while on")
	srv.Stop()

	srv = start(false)
	alice = reconnect(srv, alice)
	check(srv, alice, fresh, want{200, 200}, "off again, media from while on")
}
