package csapi

import (
	"bytes"
	"image"
	"image/color"
	"image/png"
	"strings"
	"testing"

	. "github.com/persistentchat/homeserver/conformance/deploy"
)

// upload posts data and returns the server name and media ID of its mxc URI.
func upload(t *testing.T, c *Client, data []byte, ctype, name string) (string, string) {
	t.Helper()
	r := mustOK(t, c.Do(ctx, "POST", p("_matrix/media/v3/upload"), RawBody{Data: data, ContentType: ctype}, WithQuery("filename", name)), "upload")
	mxc := r.GetString("content_uri")
	parts := strings.SplitN(strings.TrimPrefix(mxc, "mxc://"), "/", 2)
	if !strings.HasPrefix(mxc, "mxc://") || len(parts) != 2 {
		t.Fatalf("content_uri %q: %s", mxc, r)
	}
	return parts[0], parts[1]
}

func download(c *Client, prefix, server, id string, opts ...Opt) *Res {
	return c.Do(ctx, "GET", append(p(prefix), server, id), nil, opts...)
}

const (
	authDownload   = "_matrix/client/v1/media/download"
	authThumbnail  = "_matrix/client/v1/media/thumbnail"
	legacyDownload = "_matrix/media/v3/download"
	legacyThumb    = "_matrix/media/v3/thumbnail"
)

// testPNG is a 64x48 PNG, large enough to thumbnail at 32x32.
func testPNG(t *testing.T) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, 64, 48))
	for x := 0; x < 64; x++ {
		for y := 0; y < 48; y++ {
			img.Set(x, y, color.RGBA{uint8(x * 4), uint8(y * 5), 128, 255})
		}
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestContent(t *testing.T) {
	alice := register(t, "alice")
	t.Run("Can upload and download media", func(t *testing.T) {
		data := []byte("hello media")
		srv, id := upload(t, alice, data, "text/plain", "a.txt")
		r := mustOK(t, download(alice, authDownload, srv, id), "download")
		if !bytes.Equal(r.Body, data) {
			t.Fatalf("content differs")
		}
	})
	t.Run("Authenticated download needs an access token", func(t *testing.T) {
		srv, id := upload(t, alice, []byte("private"), "text/plain", "b.txt")
		expectStatus(t, download(anon(hs1()), authDownload, srv, id), 401, "M_MISSING_TOKEN")
		// Media links embedded where no header can be set use the
		// deprecated query parameter.
		mustOK(t, download(anon(hs1()), authDownload, srv, id, WithQuery("access_token", alice.AccessToken)), "download with ?access_token")
	})
	// enable_authenticated_media (Synapse's option, on by default): media
	// uploaded while it is on is frozen out of the deprecated
	// unauthenticated endpoints (spec v1.11, MSC3916).
	t.Run("Legacy /_matrix/media/v3/download does not serve new media while enable_authenticated_media is on", func(t *testing.T) {
		pic := testPNG(t)
		srv, id := upload(t, alice, pic, "image/png", "pic.png")
		expectStatus(t, download(anon(hs1()), legacyDownload, srv, id), 404, "M_NOT_FOUND")
		expectStatus(t, download(alice, legacyDownload, srv, id), 404, "M_NOT_FOUND")
		expectStatus(t, download(alice, legacyThumb, srv, id, WithQuery("width", "32", "height", "32", "method", "crop")), 404, "M_NOT_FOUND")
		mustOK(t, download(alice, authThumbnail, srv, id, WithQuery("width", "32", "height", "32", "method", "crop")), "authenticated thumbnail")
	})
	t.Run("Legacy /_matrix/media/v3/download serves media with enable_authenticated_media off", func(t *testing.T) {
		hs := configured(t)
		bob, err := hs.Register(ctx, dep.UniqueLocalpart("bob"), strongPassword, false)
		if err != nil {
			t.Fatal(err)
		}
		pic := testPNG(t)
		srv, id := upload(t, bob, pic, "image/png", "pic.png")
		r := mustOK(t, download(anon(hs), legacyDownload, srv, id), "legacy download without a token")
		if !bytes.Equal(r.Body, pic) {
			t.Fatalf("content differs")
		}
		if ct := r.Header.Get("Content-Type"); ct != "image/png" {
			t.Fatalf("Content-Type %q", ct)
		}
		r = mustOK(t, download(anon(hs), legacyThumb, srv, id, WithQuery("width", "32", "height", "32", "method", "crop")), "legacy thumbnail")
		if !strings.HasPrefix(r.Header.Get("Content-Type"), "image/") {
			t.Fatalf("thumbnail Content-Type %q", r.Header.Get("Content-Type"))
		}
		r = mustOK(t, download(bob, authDownload, srv, id), "authenticated download")
		if !bytes.Equal(r.Body, pic) {
			t.Fatalf("content differs")
		}
	})
	t.Run("GET /media/config", func(t *testing.T) {
		expectPresent(t, mustOK(t, alice.Do(ctx, "GET", p("_matrix/client/v1/media/config"), nil), "config"), "m\\.upload\\.size")
	})
}

func TestContentCSAPIMediaV1(t *testing.T) {
	alice := register(t, "alice")
	// spec v1.12 (MSC2701): the server serves back the Content-Type the
	// uploader gave, whatever it is; only the disposition depends on it.
	t.Run("Download keeps the uploaded Content-Type", func(t *testing.T) {
		pic := testPNG(t)
		srv, id := upload(t, alice, pic, "img/png", "test.png")
		r := mustOK(t, download(alice, authDownload, srv, id), "download")
		if !bytes.Equal(r.Body, pic) {
			t.Fatalf("content differs")
		}
		if ct := r.Header.Get("Content-Type"); ct != "img/png" {
			t.Fatalf("Content-Type %q, want img/png", ct)
		}
		// Not on the spec's list of types safe to show inline.
		if cd := r.Header.Get("Content-Disposition"); !strings.HasPrefix(cd, "attachment") || !strings.Contains(cd, "test.png") {
			t.Fatalf("Content-Disposition %q", cd)
		}
	})
	t.Run("An inline-safe type is served inline", func(t *testing.T) {
		srv, id := upload(t, alice, testPNG(t), "image/png", "inline.png")
		r := mustOK(t, download(alice, authDownload, srv, id), "download")
		if ct := r.Header.Get("Content-Type"); ct != "image/png" {
			t.Fatalf("Content-Type %q", ct)
		}
		if cd := r.Header.Get("Content-Disposition"); !strings.HasPrefix(cd, "inline") {
			t.Fatalf("Content-Disposition %q", cd)
		}
	})
	t.Run("Download without a token gives 401", func(t *testing.T) {
		srv, id := upload(t, alice, []byte("x"), "img/png", "x.png")
		expectStatus(t, download(anon(hs1()), authDownload, srv, id), 401, "M_MISSING_TOKEN")
	})
}
