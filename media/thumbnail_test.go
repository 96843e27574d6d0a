package media

import (
	"bytes"
	"context"
	"errors"
	"image"
	"image/color"
	"image/color/palette"
	"image/gif"
	"image/jpeg"
	"image/png"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

func TestSelectThumbnail(t *testing.T) {
	// A 1000×800 image and Synapse's default sizes: crops of 32×32 and
	// 96×96, scales to 300×240, 600×480 and 750×600.
	th := newThumbnailer(nil, 0)
	p := th.plan("", "", imageInfo{format: "png", width: 1000, height: 800})
	for _, tc := range []struct {
		w, h   int
		method Method
		out    image.Point
	}{
		{32, 32, Crop, image.Pt(32, 32)},
		{33, 33, Crop, image.Pt(96, 96)},        // the smallest at least as large
		{20, 60, Crop, image.Pt(32, 32)},        // Synapse weighs the aspect difference first, unnormalised
		{4996, 4996, Crop, image.Pt(96, 96)},    // nothing as large: the largest
		{100, 100, Scale, image.Pt(300, 240)},   // smallest at least as large
		{321, 100, Scale, image.Pt(300, 240)},   // as high is enough (Synapse: "or")
		{640, 480, Scale, image.Pt(600, 480)},   // 600×480 is as high
		{4999, 4998, Scale, image.Pt(750, 600)}, // the largest
		{1, 1, Scale, image.Pt(300, 240)},
	} {
		got := selectThumbnail(p.sizes, tc.w, tc.h, tc.method)
		if got.out.Size() != tc.out || got.method != tc.method {
			t.Errorf("%dx%d %s: got %v %s, want %v", tc.w, tc.h, tc.method, got.out.Size(), got.method, tc.out)
		}
	}
	if len(p.make) != 5 {
		t.Errorf("plan makes %d thumbnails of a 1000×800 image, want 5", len(p.make))
	}

	// Sizes with one method only: a request for the other gets the best
	// of those rather than nothing.
	th = newThumbnailer([]ThumbnailSize{{64, 64, Scale}, {256, 256, Scale}}, 0)
	p = th.plan("", "", imageInfo{format: "png", width: 1000, height: 1000})
	if got := selectThumbnail(p.sizes, 100, 100, Crop); got.out.Size() != image.Pt(256, 256) {
		t.Errorf("crop with only scale sizes: %v", got.out.Size())
	}

	// A small image: sizes it fits inside are the image itself.
	th = newThumbnailer(nil, 0)
	p = th.plan("", "", imageInfo{format: "png", width: 400, height: 200})
	if got := selectThumbnail(p.sizes, 1000, 1000, Scale); !got.original {
		t.Errorf("400×200 asked at 1000×1000: %v, want the original", got.out)
	}
	if len(p.make) != 3 { // 32×32 and 96×96 crops, 320×160 scale
		t.Errorf("plan makes %d thumbnails of a 400×200 image, want 3", len(p.make))
	}
}

func TestMemoryBudget(t *testing.T) {
	b := newMemoryBudget(100)
	queued := make(chan struct{}, 10)
	b.queued = func() { queued <- struct{}{} }
	ctx := context.Background()
	if err := b.acquire(ctx, 60); err != nil {
		t.Fatal(err)
	}
	// 60 more does not fit: it waits, and 10 behind it waits too although
	// it would fit, so that the large one is not starved.
	got := make(chan int64, 2)
	go func() { b.acquire(ctx, 60); got <- 60 }()
	<-queued
	go func() { b.acquire(ctx, 10); got <- 10 }()
	<-queued
	select {
	case n := <-got:
		t.Fatalf("acquired %d while 60 of 100 were held by another", n)
	default:
	}
	// A waiter that gives up leaves the queue.
	cctx, cancel := context.WithCancel(ctx)
	gaveUp := make(chan error)
	go func() { gaveUp <- b.acquire(cctx, 50) }()
	<-queued
	cancel()
	if err := <-gaveUp; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled acquire: %v", err)
	}
	b.release(60)
	if a, c := <-got, <-got; a+c != 70 {
		t.Fatalf("after release: granted %d and %d, want 60 and 10", a, c)
	}
	b.release(60)
	b.release(10)
	if peak, waits := b.stats(); peak > 100 || waits != 3 {
		t.Errorf("peak %d (limit 100), %d waits (want 3)", peak, waits)
	}
	if err := b.acquire(ctx, 100); err != nil || b.used != 100 {
		t.Errorf("whole budget after everything was released: %v, used %d", err, b.used)
	}
}

func TestJoinRunsOncePerKey(t *testing.T) {
	th := newThumbnailer(nil, 0)
	ctx := context.Background()
	release := make(chan struct{})
	runs := make(chan string, 10)
	work := func(key string) func(context.Context, func() bool) error {
		return func(ctx context.Context, begin func() bool) error {
			runs <- key
			<-release
			if !begin() {
				return context.Canceled
			}
			return nil
		}
	}
	done := make(chan error, 3)
	go func() { done <- th.join(ctx, "a", work("a")) }()
	if k := <-runs; k != "a" {
		t.Fatalf("ran %q", k)
	}
	// Two more for the same key wait for the running work.
	for range 2 {
		go func() { done <- th.join(ctx, "a", work("a")) }()
	}
	for {
		th.mu.Lock()
		n := th.flights["a"].waiters
		th.mu.Unlock()
		if n == 3 {
			break
		}
		runtime.Gosched()
	}
	close(release)
	for range 3 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if len(runs) != 0 {
		t.Errorf("work for one key ran %d more times", len(runs))
	}

	// When every waiter gives up before the work has begun, it is
	// cancelled, and the next request starts afresh.
	block := make(chan struct{})
	cctx, cancel := context.WithCancel(ctx)
	cancelled := make(chan bool, 1)
	errc := make(chan error)
	go func() {
		errc <- th.join(cctx, "b", func(ctx context.Context, begin func() bool) error {
			runs <- "b"
			<-block
			cancelled <- !begin()
			return ctx.Err()
		})
	}()
	<-runs
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("abandoned join: %v", err)
	}
	close(block)
	if !<-cancelled {
		t.Error("work began after every waiter had left")
	}
	if err := th.join(ctx, "b", func(context.Context, func() bool) error { return nil }); err != nil {
		t.Errorf("fresh join after a cancelled one: %v", err)
	}
}

// TestDecodeCostCoversAllocation: what a decode is charged to the memory
// budget is at least what decoding the image and making its thumbnails
// allocates, for each kind of image the decoders produce.
func TestDecodeCostCoversAllocation(t *testing.T) {
	const w, h = 640, 400
	fill := func(set func(x, y int)) {
		for y := range h {
			for x := range w {
				set(x, y)
			}
		}
	}
	rgba := image.NewRGBA(image.Rect(0, 0, w, h))
	fill(func(x, y int) { rgba.Set(x, y, color.RGBA{uint8(x), uint8(y), 99, 255}) })
	nrgba := image.NewNRGBA(image.Rect(0, 0, w, h))
	fill(func(x, y int) { nrgba.Set(x, y, color.NRGBA{uint8(x), uint8(y), 99, uint8(x ^ y)}) })
	deep := image.NewRGBA64(image.Rect(0, 0, w, h))
	fill(func(x, y int) { deep.Set(x, y, color.RGBA64{uint16(x * 97), uint16(y * 89), 7, 0xffff}) })
	gray := image.NewGray(image.Rect(0, 0, w, h))
	fill(func(x, y int) { gray.Set(x, y, color.Gray{uint8(x + y)}) })
	pal := image.NewPaletted(image.Rect(0, 0, w, h), palette.Plan9)
	fill(func(x, y int) { pal.SetColorIndex(x, y, uint8(x*y)) })

	enc := map[string]func(*bytes.Buffer) error{
		"png rgb":       func(b *bytes.Buffer) error { return png.Encode(b, rgba) },
		"png rgba":      func(b *bytes.Buffer) error { return png.Encode(b, nrgba) },
		"png 16-bit":    func(b *bytes.Buffer) error { return png.Encode(b, deep) },
		"png gray":      func(b *bytes.Buffer) error { return png.Encode(b, gray) },
		"png paletted":  func(b *bytes.Buffer) error { return png.Encode(b, pal) },
		"jpeg 4:2:0":    func(b *bytes.Buffer) error { return jpeg.Encode(b, rgba, nil) },
		"jpeg gray":     func(b *bytes.Buffer) error { return jpeg.Encode(b, gray, nil) },
		"gif":           func(b *bytes.Buffer) error { return gif.Encode(b, pal, nil) },
		"gif off-frame": func(b *bytes.Buffer) error { return gif.Encode(b, pal.SubImage(image.Rect(10, 20, 300, 200)), nil) },
	}
	dir := t.TempDir()
	th := newThumbnailer(nil, 0)
	for name, encode := range enc {
		var buf bytes.Buffer
		if err := encode(&buf); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		info, err := probeImage(f)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		p := th.plan(path, filepath.Join(dir, name+".thumbs"), info)
		cost := p.cost(p.make)

		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		if err := th.render(p, p.make); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		runtime.ReadMemStats(&after)
		used := int64(after.TotalAlloc - before.TotalAlloc)
		t.Logf("%s: %d×%d, charged %d bytes, allocated %d", name, info.width, info.height, cost, used)
		if used > cost {
			t.Errorf("%s: decoding and thumbnailing allocated %d bytes, but it is charged %d", name, used, cost)
		}
	}
}
