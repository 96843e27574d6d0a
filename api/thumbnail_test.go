package api_test

import (
	"bytes"
	"fmt"
	"image"
	"image/png"
	"io/fs"
	"net/http"
	"path/filepath"
	"sync"
	"testing"

	"github.com/persistentchat/homeserver/configs"
	"github.com/persistentchat/homeserver/testserver"
)

const thumbPath = "/_matrix/client/v1/media/thumbnail/localhost/"

// thumbFiles lists the thumbnail files on disk.
func thumbFiles(t *testing.T, s *testserver.Server) []string {
	t.Helper()
	var files []string
	filepath.WalkDir(filepath.Join(s.DataDir, "media", "thumbnails"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			files = append(files, p)
		}
		return nil
	})
	return files
}

// thumbSize fetches a thumbnail and returns its size.
func thumbSize(t *testing.T, c *testserver.Client, id, query string) image.Point {
	t.Helper()
	r := mediaDo(t, c, "GET", thumbPath+id+"?"+query, "", nil)
	if r.Status != http.StatusOK {
		t.Errorf("thumbnail %s: %d %s", query, r.Status, r.Body)
		return image.Point{}
	}
	cfg, _, err := image.DecodeConfig(bytes.NewReader(r.Body))
	if err != nil {
		t.Errorf("thumbnail %s: %v", query, err)
	}
	return image.Pt(cfg.Width, cfg.Height)
}

// TestThumbnailsSnapToConfiguredSizes: whatever size a client asks for,
// it gets one of the configured sizes (Synapse's defaults here), so an
// image has at most one thumbnail file per configured size: asking for
// every width from 4996 to 4999 no longer writes a file each.
func TestThumbnailsSnapToConfiguredSizes(t *testing.T) {
	s := testserver.Start(t, testserver.Options{})
	alice := s.Register("alice")
	var buf bytes.Buffer
	png.Encode(&buf, testImage(1000, 800))
	id := upload(t, alice, "image/png", "big.png", buf.Bytes())

	// 1000×800 as the five default sizes: crops of 32×32 and 96×96,
	// scales into 320×240, 640×480 and 800×600.
	sizes := map[image.Point]bool{{32, 32}: true, {96, 96}: true, {300, 240}: true, {600, 480}: true, {750, 600}: true}
	for _, tc := range []struct {
		query string
		want  image.Point
	}{
		{"width=32&height=32&method=crop", image.Pt(32, 32)},
		{"width=33&height=33&method=crop", image.Pt(96, 96)}, // the smallest at least as large
		{"width=4996&height=4996&method=crop", image.Pt(96, 96)},
		{"width=100&height=100&method=scale", image.Pt(300, 240)},
		{"width=640&height=480&method=scale", image.Pt(600, 480)},
		{"width=4999&height=4999&method=scale", image.Pt(750, 600)}, // nothing that large: the largest
	} {
		if got := thumbSize(t, alice, id, tc.query); got != tc.want {
			t.Errorf("thumbnail %s: %v, want %v", tc.query, got, tc.want)
		}
	}
	for w := 4996; w <= 4999; w++ {
		for h := 4996; h <= 4999; h++ {
			for _, m := range []string{"crop", "scale"} {
				if got := thumbSize(t, alice, id, fmt.Sprintf("width=%d&height=%d&method=%s", w, h, m)); !sizes[got] {
					t.Errorf("thumbnail %dx%d %s: %v, not a configured size", w, h, m, got)
				}
			}
		}
	}
	for w := 1; w <= 900; w += 37 {
		if got := thumbSize(t, alice, id, fmt.Sprintf("width=%d&height=%d", w, w)); !sizes[got] {
			t.Errorf("thumbnail %dx%d: %v, not a configured size", w, w, got)
		}
	}
	if files := thumbFiles(t, s); len(files) != len(sizes) {
		t.Errorf("%d thumbnail files after requests for %d distinct sizes, want %d", len(files), 2*16+25+6, len(sizes))
	}
	// All of them from one decode.
	if st := s.HS.Media.ThumbnailStats(); st.Decodes != 1 || st.Generated != int64(len(sizes)) {
		t.Errorf("stats %+v, want 1 decode and %d thumbnails", st, len(sizes))
	}

	// Four requests at once for another image's thumbnails, at four
	// sizes: it is decoded once.
	buf.Reset()
	png.Encode(&buf, testImage(900, 900))
	other := upload(t, alice, "image/png", "other.png", buf.Bytes())
	var wg sync.WaitGroup
	for _, q := range []string{"width=4996&height=4996", "width=4997&height=4997&method=crop", "width=320&height=240", "width=32&height=32&method=crop"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			thumbSize(t, alice, other, q)
		}()
	}
	wg.Wait()
	if st := s.HS.Media.ThumbnailStats(); st.Decodes != 2 {
		t.Errorf("stats %+v: want 2 decodes in all, one per image", st)
	}
}

// TestThumbnailMemoryBudget: decodes that would together pass
// max_thumbnail_memory wait for each other, and an image whose decode
// alone would pass it gets no thumbnail.
func TestThumbnailMemoryBudget(t *testing.T) {
	const budget = 10 << 20
	s := testserver.Start(t, testserver.Options{Configure: func(c *configs.Config) { c.MaxThumbnailMemory = budget }})
	alice := s.Register("alice")

	// Each 500×400 image takes about 7 MiB to decode and thumbnail (0.8
	// MiB of pixels, 1.5 MiB of codec state, the rest the scaling
	// kernel's buffers), so two never fit at once.
	var ids []string
	for i := range 4 {
		var buf bytes.Buffer
		img := testImage(500, 400)
		img.Pix[0] = uint8(i) // distinct content
		png.Encode(&buf, img)
		ids = append(ids, upload(t, alice, "image/png", "", buf.Bytes()))
	}
	var wg sync.WaitGroup
	for _, id := range ids {
		for _, q := range []string{"width=32&height=32&method=crop", "width=320&height=240"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				thumbSize(t, alice, id, q)
			}()
		}
	}
	wg.Wait()
	st := s.HS.Media.ThumbnailStats()
	if st.Decodes != int64(len(ids)) {
		t.Errorf("stats %+v: want one decode per image", st)
	}
	if st.PeakMemory > budget || st.PeakMemory <= budget/2 {
		t.Errorf("peak decoding memory %d: want one image's worth, under the budget of %d", st.PeakMemory, budget)
	}

	// 1500×1500 takes about 45 MiB: refused, and nothing is decoded.
	var buf bytes.Buffer
	png.Encode(&buf, testImage(1500, 1500))
	big := upload(t, alice, "image/png", "", buf.Bytes())
	r := mediaDo(t, alice, "GET", thumbPath+big+"?width=32&height=32", "", nil)
	if r.Status != http.StatusRequestEntityTooLarge || r.errcode() != "M_TOO_LARGE" {
		t.Errorf("thumbnail of an image larger than the budget: %d %s, want 413 M_TOO_LARGE", r.Status, r.Body)
	}
	if after := s.HS.Media.ThumbnailStats(); after.Decodes != st.Decodes {
		t.Errorf("the refused image was decoded: %+v", after)
	}
}
