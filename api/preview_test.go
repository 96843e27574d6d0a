package api_test

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/persistentchat/homeserver/configs"
	"github.com/persistentchat/homeserver/testserver"
)

// previewSite is a web site on loopback that counts its visits.
type previewSite struct {
	*httptest.Server
	hits atomic.Int64
	png  []byte
}

func newPreviewSite(t *testing.T) *previewSite {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, 279, 129))
	for x := range 279 {
		img.Set(x, x%129, color.RGBA{R: 200, A: 255})
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	site := &previewSite{png: buf.Bytes()}
	mux := http.NewServeMux()
	mux.HandleFunc("/page.html", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, `<html prefix="og: http://ogp.me/ns#"><head><title>The Rock (1996)</title>
			<meta property="og:title" content="The Rock" />
			<meta property="og:type" content="video.movie" />
			<meta property="og:url" content="http://www.imdb.com/title/tt0117500/" />
			<meta property="og:description" content="A movie." />
			<meta property="og:site_name" content="IMDb" />
			<meta property="og:image" content="img/rock.png" />
			<meta property="og:image:width" content="9999" />
			</head><body>The Rock</body></html>`)
	})
	mux.HandleFunc("/plain.html", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprint(w, `<html><head><title>Just a title</title><meta name="description" content="Described."></head></html>`)
	})
	mux.HandleFunc("/big.html", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprint(w, `<html><head><meta property="og:title" content="Big page"></head><body>`)
		w.Write(bytes.Repeat([]byte("x"), 200<<10)) // past max_spider_size: read only the start
	})
	mux.HandleFunc("/img/rock.png", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/png")
		w.Write(site.png)
	})
	mux.HandleFunc("/file.bin", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write([]byte{1, 2, 3})
	})
	site.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		site.hits.Add(1)
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(site.Close)
	return site
}

func previewPath(prefix, target string) string {
	return prefix + "/preview_url?url=" + url.QueryEscape(target) + "&ts=1510610716656"
}

const (
	previewV1     = "/_matrix/client/v1/media"
	previewLegacy = "/_matrix/media/v3"
)

func TestURLPreview(t *testing.T) {
	t.Parallel()
	site := newPreviewSite(t)
	// A second site on another loopback address, outside the relaxed
	// deny-list: redirects there must be refused at connection time.
	l, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatalf("listening on 127.0.0.2: %v", err)
	}
	var blockedHits atomic.Int64
	blocked := &httptest.Server{Listener: l, Config: &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		blockedHits.Add(1)
		fmt.Fprint(w, "<title>should never be read</title>")
	})}}
	blocked.Start()
	t.Cleanup(blocked.Close)
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/to-blocked":
			http.Redirect(w, r, blocked.URL+"/", http.StatusFound)
		case "/to-page":
			http.Redirect(w, r, site.URL+"/page.html", http.StatusMovedPermanently)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(redirector.Close)

	srv := testserver.Start(t, testserver.Options{Configure: func(c *configs.Config) {
		c.URLPreviewEnabled = true
		c.URLPreviewIPRangeWhitelist = []string{"127.0.0.1"} // the test sites; 127.0.0.2 stays denied
		c.MaxSpiderSize = 64 * configs.KiB
	}})
	alice := srv.Register("alice")

	t.Run("opengraph page with image", func(t *testing.T) {
		var og map[string]any
		wantOK(t, alice.Do("GET", previewPath(previewV1, site.URL+"/page.html"), nil), &og)
		for k, want := range map[string]any{
			"og:title": "The Rock", "og:type": "video.movie", "og:url": "http://www.imdb.com/title/tt0117500/",
			"og:description": "A movie.", "og:site_name": "IMDb", "og:image:type": "image/png",
			"og:image:width": 279.0, "og:image:height": 129.0, "matrix:image:size": float64(len(site.png)),
		} {
			if og[k] != want {
				t.Errorf("%s = %v (%T), want %v", k, og[k], og[k], want)
			}
		}
		mxc, _ := og["og:image"].(string)
		server, id, ok := strings.Cut(strings.TrimPrefix(mxc, "mxc://"), "/")
		if !strings.HasPrefix(mxc, "mxc://") || !ok {
			t.Fatalf("og:image = %q, want an mxc:// URI", og["og:image"])
		}
		r := alice.Do("GET", "/_matrix/client/v1/media/download/"+server+"/"+id, nil)
		if r.Status != http.StatusOK || !bytes.Equal(r.Body, site.png) {
			t.Errorf("downloading the preview image: %d, %d bytes", r.Status, len(r.Body))
		}
	})
	t.Run("cached", func(t *testing.T) {
		before := site.hits.Load()
		var og map[string]any
		wantOK(t, alice.Do("GET", previewPath(previewLegacy, site.URL+"/page.html#fragment"), nil), &og)
		if og["og:title"] != "The Rock" {
			t.Errorf("legacy endpoint: %v", og)
		}
		if n := site.hits.Load() - before; n != 0 {
			t.Errorf("a cached preview fetched the site %d times", n)
		}
	})
	t.Run("title fallback, redirects, plain images, other files", func(t *testing.T) {
		var og map[string]any
		wantOK(t, alice.Do("GET", previewPath(previewV1, site.URL+"/plain.html"), nil), &og)
		if og["og:title"] != "Just a title" || og["og:description"] != "Described." || len(og) != 2 {
			t.Errorf("plain page: %v", og)
		}
		og = nil
		wantOK(t, alice.Do("GET", previewPath(previewV1, redirector.URL+"/to-page"), nil), &og)
		if og["og:title"] != "The Rock" || og["og:image"] == nil {
			t.Errorf("through a redirect: %v", og)
		}
		og = nil
		wantOK(t, alice.Do("GET", previewPath(previewV1, site.URL+"/img/rock.png?direct"), nil), &og)
		if og["og:image:width"] != 279.0 || og["og:image:type"] != "image/png" || og["og:image"] == nil {
			t.Errorf("an image: %v", og)
		}
		og = nil
		wantOK(t, alice.Do("GET", previewPath(previewV1, site.URL+"/big.html"), nil), &og)
		if og["og:title"] != "Big page" {
			t.Errorf("a page past max_spider_size: %v", og)
		}
		og = nil
		wantOK(t, alice.Do("GET", previewPath(previewV1, site.URL+"/file.bin"), nil), &og)
		if len(og) != 0 {
			t.Errorf("a binary file: %v, want {}", og)
		}
	})
	t.Run("redirect into a denied range", func(t *testing.T) {
		r := alice.Do("GET", previewPath(previewV1, redirector.URL+"/to-blocked"), nil)
		wantErr(t, r, http.StatusForbidden, "M_UNKNOWN")
		if !strings.Contains(string(r.Body), "IP address blocked") {
			t.Errorf("body %s", r.Body)
		}
		wantErr(t, alice.Do("GET", previewPath(previewV1, blocked.URL+"/"), nil), http.StatusForbidden, "M_UNKNOWN")
		if n := blockedHits.Load(); n != 0 {
			t.Errorf("the denied address was reached %d times", n)
		}
	})
	t.Run("errors", func(t *testing.T) {
		wantErr(t, alice.Do("GET", previewPath(previewV1, site.URL+"/missing"), nil), http.StatusBadGateway, "M_UNKNOWN")
		wantErr(t, alice.Do("GET", previewPath(previewV1, "ftp://example.org/x"), nil), http.StatusBadRequest, "M_INVALID_PARAM")
		wantErr(t, alice.Do("GET", previewPath(previewV1, "/relative"), nil), http.StatusBadRequest, "M_INVALID_PARAM")
		wantErr(t, alice.Do("GET", previewV1+"/preview_url", nil), http.StatusBadRequest, "M_MISSING_PARAM")
		wantErr(t, alice.Do("GET", previewV1+"/preview_url?url="+url.QueryEscape(site.URL)+"&ts=soon", nil), http.StatusBadRequest, "M_INVALID_PARAM")
		wantErr(t, srv.Anonymous().Do("GET", previewPath(previewV1, site.URL+"/page.html"), nil), http.StatusUnauthorized, "M_MISSING_TOKEN")
	})
}

// TestURLPreviewDefaultDenyList: with the default deny-list, loopback is
// refused, by address and by a name that resolves to it, before any
// connection is made.
func TestURLPreviewDefaultDenyList(t *testing.T) {
	t.Parallel()
	site := newPreviewSite(t)
	srv := testserver.Start(t, testserver.Options{Configure: func(c *configs.Config) { c.URLPreviewEnabled = true }})
	alice := srv.Register("alice")
	_, port, _ := net.SplitHostPort(site.Listener.Addr().String())
	for _, target := range []string{site.URL + "/page.html", "http://localhost:" + port + "/page.html", "http://[::1]:" + port + "/"} {
		r := alice.Do("GET", previewPath(previewV1, target), nil)
		wantErr(t, r, http.StatusForbidden, "M_UNKNOWN")
		var e struct {
			Error string `json:"error"`
		}
		if r.JSON(&e); e.Error != "IP address blocked" {
			t.Errorf("%s: error %q, want Synapse's \"IP address blocked\"", target, e.Error)
		}
	}
	if n := site.hits.Load(); n != 0 {
		t.Errorf("the loopback site was reached %d times", n)
	}
}

func TestURLPreviewDisabled(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice := srv.Register("alice")
	for _, prefix := range []string{previewV1, previewLegacy} {
		wantErr(t, alice.Do("GET", previewPath(prefix, "https://example.org/"), nil), http.StatusNotFound, "M_UNRECOGNIZED")
	}
}
