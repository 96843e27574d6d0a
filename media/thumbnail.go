package media

import (
	"bufio"
	"context"
	"fmt"
	"image"
	_ "image/gif" // decoders registered for image.Decode
	"image/jpeg"
	"image/png"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	gosync "sync"
	"sync/atomic"
	"time"

	"golang.org/x/image/draw"
	_ "golang.org/x/image/webp"
)

// Method is a thumbnailing method (spec: "Thumbnails").
type Method string

const (
	// Scale keeps the aspect ratio and fits the image inside the box.
	Scale Method = "scale"
	// Crop fills the box, cutting off what sticks out, centred.
	Crop Method = "crop"
)

// ThumbnailSize is one of the sizes thumbnails are made at (Synapse's
// thumbnail_sizes). Requests snap to one of them, so a media item has at
// most one thumbnail file per configured size, whatever sizes clients ask
// for.
type ThumbnailSize struct {
	Width, Height int
	Method        Method
}

// DefaultThumbnailSizes are Synapse's defaults: two crops for avatars, and
// three scales for images in the timeline.
func DefaultThumbnailSizes() []ThumbnailSize {
	return []ThumbnailSize{
		{32, 32, Crop}, {96, 96, Crop},
		{320, 240, Scale}, {640, 480, Scale}, {800, 600, Scale},
	}
}

// DefaultThumbnailMemory is the decoding memory budget when
// Config.ThumbnailMemory is 0.
const DefaultThumbnailMemory = 256 << 20

// freeAfter: a decode that held at least this much of the budget hands
// its memory back to the operating system before releasing the budget,
// so that the budget bounds what the process holds and not just what it
// uses, and a burst of thumbnails does not leave the process at its peak.
const freeAfter = 32 << 20

// Thumb is an open thumbnail; the caller closes File.
type Thumb struct {
	File        *os.File
	ContentType string
	// Original is set when the image was already no larger than the
	// chosen size, so File is the uploaded content itself (spec: servers
	// should return the original rather than upscale).
	Original bool
}

// ThumbnailStats counts thumbnailing work since the repository was made.
type ThumbnailStats struct {
	// Decodes is how many images were decoded, Generated how many
	// thumbnail files were written.
	Decodes, Generated int64
	// PeakMemory is the most decoding memory budgeted at once, in bytes;
	// never more than the budget.
	PeakMemory int64
	// Waits is how many decodes had to wait for memory.
	Waits int64
}

// ThumbnailStats returns the counts so far.
func (r *Repository) ThumbnailStats() ThumbnailStats {
	peak, waits := r.thumbs.budget.stats()
	return ThumbnailStats{Decodes: r.thumbs.decodes.Load(), Generated: r.thumbs.generated.Load(), PeakMemory: peak, Waits: waits}
}

// Thumbnail returns the thumbnail of the configured size that best fits
// width×height and method, chosen as Synapse does (selectThumbnail), or
// the image itself when it is no larger than that size. Thumbnails are
// made once per media content and configured size and then served from
// disk; the first request for any of them makes all of them, from one
// decode. PNG, JPEG, GIF (first frame) and WebP are understood; other
// content fails with ErrNotImage, images past maxThumbnailPixels or whose
// decoding would take more than the whole memory budget with
// ErrTooLarge. access and wait are as for Open.
func (r *Repository) Thumbnail(ctx context.Context, id ID, width, height int, method Method, access Access, wait time.Duration) (*Thumb, error) {
	if width < 1 || height < 1 || method != Scale && method != Crop {
		return nil, fmt.Errorf("media: bad thumbnail request %dx%d %q", width, height, method)
	}
	rec, f, err := r.Open(ctx, id, access, wait)
	if err != nil {
		return nil, err
	}
	info, err := probeImage(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	plan := r.thumbs.plan(r.contentPath(rec.SHA256), filepath.Join(r.cfg.Dir, "thumbnails", rec.SHA256[:2], rec.SHA256), info)
	t := selectThumbnail(plan.sizes, width, height, method)
	if t.original {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			f.Close()
			return nil, err
		}
		return &Thumb{File: f, ContentType: "image/" + info.format, Original: true}, nil
	}
	f.Close()
	path := plan.path(t)
	if tf, err := os.Open(path); err == nil {
		return &Thumb{File: tf, ContentType: plan.ctype}, nil
	}
	if err := r.thumbs.make(ctx, rec.SHA256, plan); err != nil {
		return nil, err
	}
	tf, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	return &Thumb{File: tf, ContentType: plan.ctype}, nil
}

// thumbTarget is one configured size as it applies to one image.
type thumbTarget struct {
	method Method
	// out is the thumbnail's size (at the origin), src the part of the
	// image it shows; see thumbGeometry.
	out, src image.Rectangle
	// original: the image is no larger than this size, so it is served
	// itself rather than a copy.
	original bool
}

// selectThumbnail picks the target for a request of width×height and
// method, by Synapse's rules (thumbnailer.py, _select_thumbnail): among
// the targets of that method (all of them if there is none, rather than
// failing the request), those at least as wide or as high as asked for
// beat the others; within each group, for crop the closest aspect ratio
// wins, then one at least as large in both directions, then the smallest
// difference in area; for scale only the difference in area counts. Ties
// go to the size listed first. targets is not empty.
func selectThumbnail(targets []thumbTarget, width, height int, method Method) thumbTarget {
	pool := make([]thumbTarget, 0, len(targets))
	for _, t := range targets {
		if t.method == method {
			pool = append(pool, t)
		}
	}
	if len(pool) == 0 {
		pool = targets
	}
	dw, dh := int64(width), int64(height)
	var best thumbTarget
	var bestScore [4]int64
	for i, t := range pool {
		tw, th := int64(t.out.Dx()), int64(t.out.Dy())
		var s [4]int64
		if tw < dw && th < dh {
			s[0] = 1 // smaller in both directions: only if nothing is larger
		}
		if method == Crop {
			s[1] = abs(dw*th - dh*tw)
			if tw < dw || th < dh {
				s[2] = 1
			}
		}
		s[3] = abs((dw - tw) * (dh - th))
		if i == 0 || less(s, bestScore) {
			best, bestScore = t, s
		}
	}
	return best
}

func abs(n int64) int64 {
	if n < 0 {
		return -n
	}
	return n
}

func less(a, b [4]int64) bool {
	for i := range a {
		if a[i] != b[i] {
			return a[i] < b[i]
		}
	}
	return false
}

// thumbnailer makes thumbnails for a repository: it holds the configured
// sizes, the decoding memory budget, and the decodes in flight, one per
// media content at most.
type thumbnailer struct {
	sizes  []ThumbnailSize
	budget *memoryBudget

	mu      gosync.Mutex
	flights map[string]*flight // by content hash

	decodes, generated atomic.Int64
}

func newThumbnailer(sizes []ThumbnailSize, memory int64) *thumbnailer {
	if len(sizes) == 0 {
		sizes = DefaultThumbnailSizes()
	}
	if memory <= 0 {
		memory = DefaultThumbnailMemory
	}
	return &thumbnailer{sizes: sizes, budget: newMemoryBudget(memory), flights: map[string]*flight{}}
}

// thumbPlan is what thumbnailing one image's content means: every
// configured size as it applies to the image, and the files to make.
type thumbPlan struct {
	content string // the content file
	dir     string // its thumbnails' directory
	info    imageInfo
	ext     string // of thumbnail files: "jpg" or "png"
	ctype   string // of thumbnail files
	sizes   []thumbTarget
	// make: the targets that are not the original, one per file.
	make []thumbTarget
}

func (t *thumbnailer) plan(content, dir string, info imageInfo) *thumbPlan {
	p := &thumbPlan{content: content, dir: dir, info: info, ext: "png", ctype: "image/png"} // PNG keeps transparency of PNG, GIF, WebP
	if info.format == "jpeg" {
		p.ext, p.ctype = "jpg", "image/jpeg"
	}
	full := image.Rect(0, 0, info.width, info.height)
	seen := map[string]bool{}
	for _, s := range t.sizes {
		out, src := thumbGeometry(info.width, info.height, s.Width, s.Height, s.Method)
		tg := thumbTarget{method: s.Method, out: out, src: src, original: out == full && src == full}
		p.sizes = append(p.sizes, tg)
		if path := p.path(tg); !tg.original && !seen[path] {
			seen[path] = true
			p.make = append(p.make, tg)
		}
	}
	return p
}

// path is where target t's thumbnail is kept.
func (p *thumbPlan) path(t thumbTarget) string {
	return filepath.Join(p.dir, fmt.Sprintf("%dx%d-%s.%s", t.out.Dx(), t.out.Dy(), t.method, p.ext))
}

// cost is the memory that making targets takes: the decoded image, the
// chain of halvings down to the deepest level they need, and each one's
// scaling and encoding.
func (p *thumbPlan) cost(targets []thumbTarget) int64 {
	w, h := p.info.width, p.info.height
	n, deepest := p.info.decodeBytes+codecBytes, 0
	for _, t := range targets {
		deepest = max(deepest, t.level(w, h))
		n += t.scaleBytes(w, h)
	}
	return n + chainBytes(w, h, deepest)
}

// make makes the thumbnails of plan, keyed by its content hash, unless
// they are on disk already. Requests for the same content while it runs
// wait for the same work, so an image is decoded once however many of
// its thumbnails are asked for at once.
func (t *thumbnailer) make(ctx context.Context, key string, p *thumbPlan) error {
	if p.cost(p.make) > t.budget.limit {
		return ErrTooLarge // before waiting for memory it will never get
	}
	return t.join(ctx, key, func(ctx context.Context, begin func() bool) error {
		var missing []thumbTarget
		for _, tg := range p.make {
			if _, err := os.Stat(p.path(tg)); err != nil {
				missing = append(missing, tg)
			}
		}
		if len(missing) == 0 {
			return nil
		}
		cost := p.cost(missing)
		if err := t.budget.acquire(ctx, cost); err != nil {
			return err
		}
		if !begin() {
			t.budget.release(cost)
			return context.Canceled
		}
		err := t.render(p, missing)
		if cost >= freeAfter {
			// The decoded image is garbage now that render returned.
			debug.FreeOSMemory()
		}
		t.budget.release(cost)
		return err
	})
}

// render decodes p's image once and writes the targets' thumbnails.
func (t *thumbnailer) render(p *thumbPlan, targets []thumbTarget) error {
	f, err := os.Open(p.content)
	if err != nil {
		return err
	}
	img, _, err := image.Decode(bufio.NewReader(f))
	f.Close()
	if err != nil {
		return ErrNotImage
	}
	t.decodes.Add(1)
	w, h := p.info.width, p.info.height
	c := &chain{levels: []image.Image{atOrigin(img, w, h)}}
	// One encoder's buffers (deflate state, rows) for all the thumbnails.
	enc := &png.Encoder{BufferPool: &encoderBuffer{}}
	for _, tg := range targets {
		k := tg.level(w, h)
		src := c.level(k)
		dst := image.NewRGBA(tg.out)
		draw.CatmullRom.Scale(dst, tg.out, src, levelRect(tg.src, w, h, k), draw.Src, nil)
		if err := writeAtomically(p.path(tg), func(w io.Writer) error {
			if p.ext == "jpg" {
				return jpeg.Encode(w, dst, &jpeg.Options{Quality: 85})
			}
			return enc.Encode(w, dst)
		}); err != nil {
			return err
		}
		t.generated.Add(1)
	}
	return nil
}

// encoderBuffer keeps one png.EncoderBuffer for reuse by one goroutine.
type encoderBuffer struct{ b *png.EncoderBuffer }

func (e *encoderBuffer) Get() *png.EncoderBuffer  { return e.b }
func (e *encoderBuffer) Put(b *png.EncoderBuffer) { e.b = b }

// flight is work in progress for one key, shared by the requests that
// wait for it.
type flight struct {
	done    chan struct{} // closed when err is set
	err     error
	waiters int
	// started: the work is past waiting for memory and runs to its end;
	// cancelled: every waiter left before that, so it will not start.
	started, cancelled bool
	cancel             context.CancelFunc
}

// join runs work for key unless it is running already, and waits for it
// (or for ctx). The work runs on its own context, so a request that
// gives up does not fail the others; if they all give up before the work
// has started (begin), it is cancelled, and begin reports false.
func (t *thumbnailer) join(ctx context.Context, key string, work func(ctx context.Context, begin func() bool) error) error {
	t.mu.Lock()
	f := t.flights[key]
	if f == nil {
		fctx, cancel := context.WithCancel(context.Background())
		f = &flight{done: make(chan struct{}), cancel: cancel}
		t.flights[key] = f
		begin := func() bool {
			t.mu.Lock()
			defer t.mu.Unlock()
			f.started = !f.cancelled
			return f.started
		}
		go func() {
			err := work(fctx, begin)
			cancel()
			t.mu.Lock()
			if t.flights[key] == f {
				delete(t.flights, key)
			}
			f.err = err
			t.mu.Unlock()
			close(f.done)
		}()
	}
	f.waiters++
	t.mu.Unlock()

	select {
	case <-f.done:
		return f.err
	case <-ctx.Done():
		t.mu.Lock()
		defer t.mu.Unlock()
		if f.waiters--; f.waiters == 0 && !f.started {
			f.cancelled = true
			f.cancel()
			if t.flights[key] == f {
				delete(t.flights, key) // the next request starts afresh
			}
		}
		return ctx.Err()
	}
}

// thumbGeometry says what to make of an ow×oh image asked for as w×h:
// the output rectangle (at the origin) and the part of the source it
// shows. Never larger than the source: a request at or past the source
// size in both directions gives the source's own size.
//
// Scale fits the image inside w×h, keeping its aspect ratio, as Synapse
// does. Crop scales the image so that it covers w×h and cuts the middle
// out, so the thumbnail has the requested aspect ratio; when that would
// need upscaling it cuts at the source's resolution instead.
func thumbGeometry(ow, oh, w, h int, method Method) (out, src image.Rectangle) {
	full := image.Rect(0, 0, ow, oh)
	if w >= ow && h >= oh {
		return full, full
	}
	if method == Scale {
		// Fit: the smaller of the two ratios, in integer arithmetic.
		tw, th := w, oh*w/ow
		if int64(h)*int64(ow) < int64(w)*int64(oh) { // height is the tighter bound
			tw, th = ow*h/oh, h
		}
		return image.Rect(0, 0, max(tw, 1), max(th, 1)), full
	}
	// Crop: the source rectangle with the requested aspect ratio, as
	// large as fits, centred.
	sw, sh := ow, oh
	if int64(w)*int64(oh) > int64(h)*int64(ow) { // request is wider than the source
		sh = max(ow*h/w, 1)
	} else {
		sw = max(oh*w/h, 1)
	}
	sw, sh = min(sw, ow), min(sh, oh)
	x0, y0 := (ow-sw)/2, (oh-sh)/2
	src = image.Rect(x0, y0, x0+sw, y0+sh)
	// Output: w×h, unless that is more than the source rectangle holds.
	tw, th := w, h
	if tw > sw || th > sh {
		tw, th = sw, sh
	}
	return image.Rect(0, 0, tw, th), src
}

// writeAtomically writes a file through a temporary one in the same
// directory and a rename, so readers see the whole file or none.
func writeAtomically(path string, write func(io.Writer) error) (err error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err = write(f); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
