package media

import (
	"errors"
	"net/netip"
	"net/url"
	"reflect"
	"strings"
	"testing"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/netguard"
)

func TestParseOpenGraph(t *testing.T) {
	for _, tc := range []struct {
		name, page string
		want       map[string]string
	}{
		{"opengraph tags", `<html prefix="og: http://ogp.me/ns#"><head><title>The Rock (1996)</title>
			<meta property="og:title" content="The Rock" />
			<meta property="og:type" content="video.movie">
			<meta property="og:image" content="/rock.png">
			<meta name="description" content="ignored: og:description wins">
			<meta property="og:description" content="  A  movie
			about a rock. ">
			</head><body></body></html>`,
			map[string]string{"og:title": "The Rock", "og:type": "video.movie", "og:image": "/rock.png", "og:description": "A movie about a rock."}},
		{"title and description fall back", `<head><title> Plain
			page </title><meta name="Description" content="Just text."></head>`,
			map[string]string{"og:title": "Plain page", "og:description": "Just text."}},
		{"first tag wins, name= accepted, empty dropped", `<meta name="og:title" content="first"><meta property="og:title" content="second">
			<meta property="og:site_name" content="">`,
			map[string]string{"og:title": "first"}},
		{"truncated page still read", `<head><meta property="og:site_name" content="Site"><title>Cut off</ti`,
			map[string]string{"og:site_name": "Site", "og:title": "Cut off</ti"}},
		{"not html at all", "\x00\x01binary", map[string]string{}},
		{"script text is not a title", `<script>var t = "<title>x</title>";</script>`, map[string]string{}},
	} {
		if got := ParseOpenGraph([]byte(tc.page)); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestParseOpenGraphBounds(t *testing.T) {
	long := strings.Repeat("é", 3000)
	page := `<meta property="og:title" content="` + long + `"><meta property="og:description" content="` + long + `">` +
		"<meta property=\"og:site_name\" content=\"bad \xff utf8\">"
	for i := range 100 {
		page += `<meta property="og:x` + strings.Repeat("y", i) + `" content="v">`
	}
	og := ParseOpenGraph([]byte(page))
	if n := len([]rune(og["og:title"])); n != maxValueRunes {
		t.Errorf("title has %d runes, want %d", n, maxValueRunes)
	}
	if n := len([]rune(og["og:description"])); n != maxDescriptionRunes {
		t.Errorf("description has %d runes, want %d", n, maxDescriptionRunes)
	}
	if og["og:site_name"] != "bad \uFFFD utf8" {
		t.Errorf("site name %q is not made valid UTF-8", og["og:site_name"])
	}
	if len(og) > maxOGTags {
		t.Errorf("%d tags kept, want at most %d", len(og), maxOGTags)
	}
	for k := range og {
		if len(k) > 64 {
			t.Errorf("overlong key %q kept", k)
		}
	}
}

// IP literals on the deny-list are refused before any dial (the dial
// check itself is netguard's, tested there and through HTTP in api).
func TestPreviewChecksIPLiterals(t *testing.T) {
	p := NewPreviewer(PreviewConfig{Guard: netguard.Guard{
		Deny:  []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")},
		Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")},
	}}, nil, clock.Real{})
	for raw, want := range map[string]error{
		"http://127.0.0.1/": ErrBlockedIP, "http://[::1]:8080/x": ErrBlockedIP, "http://[::ffff:127.0.0.1]/": ErrBlockedIP,
		"http://127.0.0.2/": nil, "https://8.8.8.8/": nil, "https://example.org/": nil, "ftp://example.org/": ErrBadURL,
	} {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.checkURL(u); !errors.Is(err, want) {
			t.Errorf("checkURL(%s) = %v, want %v", raw, err, want)
		}
	}
}
