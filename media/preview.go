package media

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"io"
	"mime"
	"net/http"
	"net/netip"
	"net/url"
	"path"
	"strings"
	gosync "sync"
	"time"
	"unicode/utf8"

	"golang.org/x/net/html"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/netguard"
	"github.com/persistentchat/homeserver/roomdag"
)

// URL previews (spec: GET /_matrix/client/v1/media/preview_url): fetch a
// web page, read its OpenGraph tags (falling back to <title> and the
// description meta tag), store its og:image in the repository and answer
// with an mxc:// URI in its place. Results are cached per URL.
//
// The server fetches what users ask it to, so every connection goes
// through the IP deny-list (package netguard) on the address actually
// dialled: redirects and host names that resolve to a denied address,
// including by DNS rebinding between a check and the connection, are
// refused the same way. Proxies from the environment are not used, as
// they would hide the real destination.

// Errors the api package maps to Matrix errors.
var (
	// ErrBlockedIP: the URL leads to an address on the deny-list. It is
	// netguard's error, which refused dials wrap.
	ErrBlockedIP = netguard.ErrBlocked
	// ErrBadURL: not an absolute http(s) URL.
	ErrBadURL = errors.New("media: not an http or https URL")
	// ErrFetch: the page could not be fetched (connection, status,
	// timeout); it wraps the cause.
	ErrFetch = errors.New("media: fetching the URL failed")
)

// PreviewConfig configures URL previews.
type PreviewConfig struct {
	// Guard is the IP deny-list every connection is checked against.
	Guard netguard.Guard
	// MaxBytes is the most read of one page or image.
	MaxBytes int64
	// ServerName names the server in the mxc:// URIs of stored images.
	ServerName roomdag.ServerName
}

const (
	// previewTimeout bounds fetching one page, and then its image.
	previewTimeout = 10 * time.Second
	// previewCacheTTL is how long a preview is served from the cache
	// (Synapse keeps them an hour too).
	previewCacheTTL = time.Hour
	// maxCachedPreviews bounds the cache.
	maxCachedPreviews = 1000
	// maxRedirects bounds a fetch's redirects.
	maxRedirects = 5
	// maxURLLength bounds the URLs previewed.
	maxURLLength = 4096
	// Values read from a page are cut at maxValueRunes (descriptions at
	// maxDescriptionRunes, as Synapse), and at most maxOGTags tags kept.
	maxValueRunes       = 1000
	maxDescriptionRunes = 500
	maxOGTags           = 64
	previewUserAgent    = "persistentchat-homeserver URL preview"
)

// Previewer makes URL previews. It is safe for concurrent use.
type Previewer struct {
	cfg    PreviewConfig
	repo   *Repository
	clock  clock.Clock
	client *http.Client

	mu       gosync.Mutex
	cache    map[string]cachedPreview
	inflight map[string]*previewCall
}

type cachedPreview struct {
	og      map[string]any
	expires time.Time
}

// previewCall is a fetch in progress that later requests for the same URL
// wait for instead of fetching again.
type previewCall struct {
	done chan struct{}
	og   map[string]any
	err  error
}

// NewPreviewer returns a previewer that stores images in repo.
func NewPreviewer(cfg PreviewConfig, repo *Repository, clk clock.Clock) *Previewer {
	p := &Previewer{cfg: cfg, repo: repo, clock: clk, cache: map[string]cachedPreview{}, inflight: map[string]*previewCall{}}
	transport := &http.Transport{
		Proxy:                 nil,
		DialContext:           cfg.Guard.Dialer(previewTimeout).DialContext,
		ForceAttemptHTTP2:     true,
		TLSHandshakeTimeout:   previewTimeout,
		ResponseHeaderTimeout: previewTimeout,
		MaxIdleConns:          16,
		IdleConnTimeout:       30 * time.Second,
	}
	p.client = &http.Client{Transport: transport, CheckRedirect: p.checkRedirect}
	return p
}

// checkRedirect refuses redirects to other schemes, to denied IP
// literals (the dial check would too; this says so earlier) and past
// maxRedirects.
func (p *Previewer) checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= maxRedirects {
		return fmt.Errorf("%w: more than %d redirects", ErrFetch, maxRedirects)
	}
	err := p.checkURL(req.URL)
	if errors.Is(err, ErrBadURL) {
		return fmt.Errorf("%w: redirected to %s", ErrFetch, req.URL.Redacted())
	}
	return err
}

func (p *Previewer) checkURL(u *url.URL) error {
	if u.Scheme != "http" && u.Scheme != "https" || u.Hostname() == "" {
		return ErrBadURL
	}
	if a, err := netip.ParseAddr(u.Hostname()); err == nil && p.cfg.Guard.Blocked(a) {
		return fmt.Errorf("%w: %s", ErrBlockedIP, a)
	}
	return nil
}

// Preview returns the OpenGraph data of rawURL: og:* keys with string
// values, and for an image og:image (an mxc:// URI), og:image:type,
// og:image:width, og:image:height and matrix:image:size. A page with
// nothing to show gives an empty map. user is the uploader of stored
// images. Errors: ErrBadURL, ErrBlockedIP, ErrFetch.
func (p *Previewer) Preview(ctx context.Context, user roomdag.UserID, rawURL string) (map[string]any, error) {
	if len(rawURL) > maxURLLength {
		return nil, ErrBadURL
	}
	u, err := url.Parse(rawURL)
	if err != nil || !u.IsAbs() {
		return nil, ErrBadURL
	}
	u.Fragment, u.RawFragment = "", ""
	if err := p.checkURL(u); err != nil {
		return nil, err
	}
	key := u.String()

	p.mu.Lock()
	if c, ok := p.cache[key]; ok && p.clock.Now().Before(c.expires) {
		p.mu.Unlock()
		return c.og, nil
	}
	call, running := p.inflight[key]
	if !running {
		call = &previewCall{done: make(chan struct{})}
		p.inflight[key] = call
	}
	p.mu.Unlock()

	if !running {
		// The fetch is shared, so it must not end with the first
		// requester's connection.
		fctx := context.WithoutCancel(ctx)
		call.og, call.err = p.preview(fctx, user, u)
		p.mu.Lock()
		delete(p.inflight, key)
		if call.err == nil {
			p.storeLocked(key, call.og)
		}
		p.mu.Unlock()
		close(call.done)
	}
	select {
	case <-call.done:
		return call.og, call.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// storeLocked caches a preview, making room by dropping expired entries,
// then those that expire first.
func (p *Previewer) storeLocked(key string, og map[string]any) {
	now := p.clock.Now()
	if len(p.cache) >= maxCachedPreviews {
		var oldest string
		var oldestAt time.Time
		for k, c := range p.cache {
			if !now.Before(c.expires) {
				delete(p.cache, k)
			} else if oldest == "" || c.expires.Before(oldestAt) {
				oldest, oldestAt = k, c.expires
			}
		}
		if len(p.cache) >= maxCachedPreviews {
			delete(p.cache, oldest)
		}
	}
	p.cache[key] = cachedPreview{og: og, expires: now.Add(previewCacheTTL)}
}

// fetched is a downloaded resource.
type fetched struct {
	url       *url.URL // after redirects
	mediaType string   // lower case, without parameters
	body      []byte
	truncated bool // longer than MaxBytes; body holds the first MaxBytes
}

func (p *Previewer) fetch(ctx context.Context, u *url.URL, accept string) (*fetched, error) {
	ctx, cancel := context.WithTimeout(ctx, previewTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, ErrBadURL
	}
	req.Header.Set("User-Agent", previewUserAgent)
	req.Header.Set("Accept", accept)
	resp, err := p.client.Do(req)
	if err != nil {
		if errors.Is(err, ErrBlockedIP) || errors.Is(err, ErrFetch) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %v", ErrFetch, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, fmt.Errorf("%w: the server answered %s", ErrFetch, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, p.cfg.MaxBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%w: reading: %v", ErrFetch, err)
	}
	f := &fetched{url: resp.Request.URL, body: body}
	if int64(len(body)) > p.cfg.MaxBytes {
		f.body, f.truncated = body[:p.cfg.MaxBytes], true
	}
	f.mediaType, _, _ = mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if f.mediaType == "" {
		f.mediaType, _, _ = mime.ParseMediaType(http.DetectContentType(f.body))
	}
	f.mediaType = strings.ToLower(f.mediaType)
	return f, nil
}

// preview fetches and reads the URL; the caller caches the result.
func (p *Previewer) preview(ctx context.Context, user roomdag.UserID, u *url.URL) (map[string]any, error) {
	f, err := p.fetch(ctx, u, "text/html,application/xhtml+xml,image/*;q=0.9,*/*;q=0.5")
	if err != nil {
		return nil, err
	}
	og := map[string]any{}
	switch {
	case strings.HasPrefix(f.mediaType, "image/"):
		if !f.truncated {
			p.addImage(ctx, user, og, f)
		}
	case f.mediaType == "text/html" || f.mediaType == "application/xhtml+xml":
		tags := ParseOpenGraph(f.body)
		for k, v := range tags {
			og[k] = v
		}
		if img, ok := tags["og:image"]; ok {
			for k := range og {
				if strings.HasPrefix(k, "og:image:") {
					delete(og, k) // described afresh from the image itself
				}
			}
			delete(og, "og:image")
			if iu, err := f.url.Parse(img); err == nil && p.checkURL(iu) == nil {
				if imgf, err := p.fetch(ctx, iu, "image/*"); err == nil && !imgf.truncated && strings.HasPrefix(imgf.mediaType, "image/") {
					p.addImage(ctx, user, og, imgf)
				}
			}
		}
	}
	return og, nil
}

// addImage stores an image in the repository and describes it in og;
// on failure the preview goes without it.
func (p *Previewer) addImage(ctx context.Context, user roomdag.UserID, og map[string]any, f *fetched) {
	name := path.Base(f.url.Path)
	if name == "." || name == "/" || len(name) > 255 || strings.ContainsAny(name, "\x00\r\n") {
		name = ""
	}
	id, err := p.repo.Upload(ctx, user, f.mediaType, name, bytes.NewReader(f.body), int64(len(f.body)))
	if err != nil {
		return
	}
	og["og:image"] = URI(p.cfg.ServerName, id)
	og["og:image:type"] = f.mediaType
	og["matrix:image:size"] = len(f.body)
	if cfg, _, err := image.DecodeConfig(bytes.NewReader(f.body)); err == nil {
		og["og:image:width"], og["og:image:height"] = cfg.Width, cfg.Height
	}
}

// ParseOpenGraph reads a page's OpenGraph tags (<meta property="og:…">,
// or name= as some sites write it): the first of each wins. og:title falls
// back to <title>, og:description to <meta name="description">. Values
// are trimmed, made valid UTF-8 and cut to a bounded length.
func ParseOpenGraph(page []byte) map[string]string {
	og := map[string]string{}
	var title, description string
	z := html.NewTokenizer(bytes.NewReader(page))
	inTitle := false
	for {
		tt := z.Next()
		switch tt {
		case html.ErrorToken:
			if title != "" && og["og:title"] == "" {
				og["og:title"] = title
			}
			if description != "" && og["og:description"] == "" {
				og["og:description"] = description
			}
			return og
		case html.StartTagToken, html.SelfClosingTagToken:
			tok := z.Token()
			switch tok.Data {
			case "title":
				inTitle = title == "" && tt == html.StartTagToken
			case "meta":
				var prop, name, content string
				hasContent := false
				for _, a := range tok.Attr {
					switch strings.ToLower(a.Key) {
					case "property":
						prop = strings.ToLower(strings.TrimSpace(a.Val))
					case "name":
						name = strings.ToLower(strings.TrimSpace(a.Val))
					case "content":
						content, hasContent = a.Val, true
					}
				}
				if !hasContent {
					continue
				}
				key := prop
				if !strings.HasPrefix(key, "og:") {
					key = name
				}
				switch {
				case strings.HasPrefix(key, "og:") && len(key) <= 64:
					if _, seen := og[key]; !seen && len(og) < maxOGTags {
						limit := maxValueRunes
						if key == "og:description" {
							limit = maxDescriptionRunes
						}
						if v := clean(content, limit); v != "" {
							og[key] = v
						}
					}
				case name == "description" && description == "":
					description = clean(content, maxDescriptionRunes)
				}
			}
		case html.TextToken:
			if inTitle {
				title = clean(string(z.Text()), maxValueRunes)
				inTitle = false
			}
		case html.EndTagToken:
			if tn, _ := z.TagName(); string(tn) == "title" {
				inTitle = false
			}
		}
	}
}

// clean trims s, collapses white space, makes it valid UTF-8 and cuts it
// at limit runes.
func clean(s string, limit int) string {
	s = strings.Join(strings.Fields(strings.ToValidUTF8(s, "\uFFFD")), " ")
	if utf8.RuneCountInString(s) > limit {
		s = string([]rune(s)[:limit-1]) + "…"
	}
	return s
}
