package federation_test

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"strings"
	"testing"

	"github.com/persistentchat/homeserver/configs"
	"github.com/persistentchat/homeserver/testserver"
)

// testPNG is a 64×64 PNG.
func testPNG(t *testing.T) []byte {
	img := image.NewRGBA(image.Rect(0, 0, 64, 64))
	for x := 0; x < 64; x++ {
		for y := 0; y < 64; y++ {
			img.Set(x, y, color.RGBA{uint8(x * 4), uint8(y * 4), 128, 255})
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// upload stores body on c's server and returns its media ID.
func upload(t *testing.T, c *testserver.Client, ctype string, body []byte) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, c.Base+"/_matrix/media/v3/upload?filename=hello.txt", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", ctype)
	req.Header.Set("Authorization", "Bearer "+c.Token)
	resp, err := c.HTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("upload: %d %s", resp.StatusCode, b)
	}
	_, id, ok := strings.Cut(strings.TrimPrefix(string(bytes.TrimSpace(b)), `{"content_uri":"mxc://`), "/")
	if !ok {
		t.Fatalf("upload answered %s", b)
	}
	return strings.TrimSuffix(id, `"}`)
}

// TestRemoteMedia: a user on B downloads media uploaded on A through B's
// client API; B fetches it over federation once, caches it, and serves
// it from the cache with A gone. A's federation media endpoints answer
// multipart/mixed; remote failures are Matrix errors, never 500s.
func TestRemoteMedia(t *testing.T) {
	const bLimit = 4096 // B's max_upload_size, smaller than A's
	started := 0
	fed := testserver.Federation(t, 2, testserver.Options{Configure: func(c *configs.Config) {
		if started++; started == 2 {
			c.MaxUploadSize = bLimit
		}
	}})
	a, b := fed[0], fed[1]
	alice, bob := a.Register("alice"), b.Register("bob")
	text := []byte("hello from A's media repository")
	textID := upload(t, alice, "text/plain", text)
	pngID := upload(t, alice, "image/png", testPNG(t))
	bigID := upload(t, alice, "application/octet-stream", bytes.Repeat([]byte("x"), bLimit+1))
	lateID := upload(t, alice, "text/plain", []byte("never fetched before A stops"))

	t.Run("federation download is multipart", func(t *testing.T) {
		r := signedGet(t, b, a.Name(), "/_matrix/federation/v1/media/download/"+textID)
		if r.status != http.StatusOK {
			t.Fatalf("%d %s", r.status, r.body)
		}
		// The transport does not give headers back; the fetch through B's
		// client API below parses the whole response. Here the parts.
		if !bytes.Contains(r.body, text) || !bytes.Contains(r.body, []byte("application/json")) {
			t.Fatalf("body %q", r.body)
		}
	})
	t.Run("federation download of unknown media", func(t *testing.T) {
		if r := signedGet(t, b, a.Name(), "/_matrix/federation/v1/media/download/nope"); r.status != 404 || r.errcode() != "M_NOT_FOUND" {
			t.Fatalf("%d %s", r.status, r.body)
		}
	})
	t.Run("federation thumbnail without width", func(t *testing.T) {
		if r := signedGet(t, b, a.Name(), "/_matrix/federation/v1/media/thumbnail/"+pngID+"?height=10"); r.status != 400 || r.errcode() != "M_MISSING_PARAM" {
			t.Fatalf("%d %s", r.status, r.body)
		}
	})

	download := func(t *testing.T, path string) (int, string, []byte, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, b.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+bob.Token)
		resp, err := bob.HTTP.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		r := &testserver.Response{Status: resp.StatusCode, Body: body}
		return resp.StatusCode, resp.Header.Get("Content-Type"), body, r.Errcode()
	}
	fetches := func() int64 { return b.HS.Media.RemoteFetches() }
	dl := "/_matrix/client/v1/media/download/" + a.Name() + "/"
	th := "/_matrix/client/v1/media/thumbnail/" + a.Name() + "/"

	status, ctype, body, _ := download(t, dl+textID)
	if status != 200 || !bytes.Equal(body, text) || !strings.HasPrefix(ctype, "text/plain") {
		t.Fatalf("first download: %d %q %q", status, ctype, body)
	}
	if n := fetches(); n != 1 {
		t.Fatalf("%d fetches after the first download, want 1", n)
	}
	status, ctype, body, _ = download(t, th+pngID+"?width=16&height=16&method=crop")
	if status != 200 || !strings.HasPrefix(ctype, "image/") {
		t.Fatalf("remote thumbnail: %d %q %q", status, ctype, body)
	}
	if _, _, err := image.Decode(bytes.NewReader(body)); err != nil {
		t.Fatalf("remote thumbnail is not an image: %v", err)
	}
	if n := fetches(); n != 2 {
		t.Fatalf("%d fetches after the thumbnail, want 2", n)
	}

	t.Run("federation thumbnail is multipart", func(t *testing.T) {
		r := signedRaw(t, b, a.Name(), "/_matrix/federation/v1/media/thumbnail/"+pngID+"?width=16&height=16&method=scale")
		defer r.Body.Close()
		mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
		if r.StatusCode != 200 || err != nil || mt != "multipart/mixed" {
			t.Fatalf("%d %q", r.StatusCode, r.Header.Get("Content-Type"))
		}
		mr := multipart.NewReader(r.Body, params["boundary"])
		if _, err := mr.NextPart(); err != nil {
			t.Fatal(err)
		}
		p, err := mr.NextPart()
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := image.Decode(p); err != nil || !strings.HasPrefix(p.Header.Get("Content-Type"), "image/") {
			t.Fatalf("thumbnail part %v: %v", p.Header, err)
		}
	})

	t.Run("concurrent first downloads", func(t *testing.T) {
		content := []byte("asked by several at once")
		id := upload(t, alice, "text/plain", content)
		errs := make(chan error, 4)
		for i := 0; i < cap(errs); i++ {
			go func() {
				req, _ := http.NewRequest(http.MethodGet, b.URL+dl+id, nil)
				req.Header.Set("Authorization", "Bearer "+bob.Token)
				resp, err := bob.HTTP.Do(req)
				if err != nil {
					errs <- err
					return
				}
				defer resp.Body.Close()
				got, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != 200 || !bytes.Equal(got, content) {
					errs <- fmt.Errorf("%d %q", resp.StatusCode, got)
					return
				}
				errs <- nil
			}()
		}
		for i := 0; i < cap(errs); i++ {
			if err := <-errs; err != nil {
				t.Error(err)
			}
		}
	})

	for _, tc := range []struct {
		name   string
		path   string
		status int
		code   string
	}{
		{"unknown remote media", dl + "nope", 404, "M_NOT_FOUND"},
		{"remote media past max_upload_size", dl + bigID, 502, "M_TOO_LARGE"},
		{"a server outside the federation", "/_matrix/client/v1/media/download/example.org/abc", 502, "M_UNKNOWN"},
		{"a malformed server name", "/_matrix/client/v1/media/download/exa_mple..org/abc", 400, "M_INVALID_PARAM"},
		{"a malformed media ID", dl + "a.b", 400, "M_INVALID_PARAM"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if status, _, body, code := download(t, tc.path); status != tc.status || code != tc.code {
				t.Fatalf("%d %s, want %d %s: %s", status, code, tc.status, tc.code, body)
			}
		})
	}

	// With A gone, B serves what it cached, and nothing else.
	a.Stop()
	before := fetches()
	status, _, body, _ = download(t, dl+textID)
	if status != 200 || !bytes.Equal(body, text) {
		t.Fatalf("download from the cache: %d %q", status, body)
	}
	if status, _, _, _ = download(t, th+pngID+"?width=16&height=16&method=crop"); status != 200 {
		t.Fatalf("thumbnail from the cache: %d", status)
	}
	if n := fetches(); n != before {
		t.Fatalf("%d fetches with A stopped, want %d: the cache was not used", n, before)
	}
	if status, _, body, code := download(t, dl+lateID); status != 502 || code != "M_UNKNOWN" {
		t.Fatalf("uncached media of a stopped server: %d %s %s", status, code, body)
	}
}

// TestMultipartParts checks the federation download's parts as a
// stranger's parser reads them: first JSON, then the bytes with their
// type.
func TestMultipartParts(t *testing.T) {
	fed := testserver.Federation(t, 2, testserver.Options{})
	a, b := fed[0], fed[1]
	alice := a.Register("alice")
	id := upload(t, alice, "text/plain", []byte("parts"))
	// B's signed request, read raw to see the headers.
	path := "/_matrix/federation/v1/media/download/" + id
	r := signedRaw(t, b, a.Name(), path)
	defer r.Body.Close()
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/mixed" {
		t.Fatalf("Content-Type %q", r.Header.Get("Content-Type"))
	}
	mr := multipart.NewReader(r.Body, params["boundary"])
	p1, err := mr.NextPart()
	if err != nil {
		t.Fatal(err)
	}
	meta, _ := io.ReadAll(p1)
	if p1.Header.Get("Content-Type") != "application/json" || string(meta) != "{}" {
		t.Fatalf("first part %v %q", p1.Header, meta)
	}
	p2, err := mr.NextPart()
	if err != nil {
		t.Fatal(err)
	}
	content, _ := io.ReadAll(p2)
	if p2.Header.Get("Content-Type") != "text/plain" || string(content) != "parts" {
		t.Fatalf("second part %v %q", p2.Header, content)
	}
	if _, err := mr.NextPart(); err != io.EOF {
		t.Fatalf("more than two parts: %v", err)
	}
}
