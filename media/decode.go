package media

import (
	"bufio"
	"errors"
	"image"
	"image/color"
	"io"

	"golang.org/x/image/draw"
)

// Decoding images for thumbnails is where memory goes: a 73 KB PNG can
// claim 25 million pixels, which image/png decodes into 100 MB, and
// scaling it straight down with a kernel filter takes as much again in
// working buffers. So, before decoding, the header alone tells the size
// of the image and what the decoder will allocate for it (probeImage);
// the thumbnails are made from that one decode through a chain of
// halvings, which keeps the kernel's buffers small (thumbPlan.cost
// counts them); and the whole estimate is what the decode holds of the
// memory budget while it runs.

// maxThumbnailPixels bounds the images we decode, checked from the
// header before decoding so that a small file that claims a huge image
// is refused at once (spec: "Homeservers should not attempt to generate
// thumbnails for images that are too large"). The memory budget bounds
// them too: an image whose decode alone would take more than the whole
// budget is refused as well.
const maxThumbnailPixels = 25_000_000

// imageInfo is what an image's header says about decoding it.
type imageInfo struct {
	format        string // as registered with package image: "png", "jpeg", "gif", "webp"
	width, height int
	// decodeBytes is what the decoder allocates for the whole image.
	decodeBytes int64
}

// probeImage reads the header of the image in f: ErrNotImage if it is
// not one we decode, ErrTooLarge past maxThumbnailPixels.
func probeImage(f io.ReadSeeker) (imageInfo, error) {
	cfg, format, err := image.DecodeConfig(f)
	if err != nil || cfg.Width < 1 || cfg.Height < 1 {
		return imageInfo{}, ErrNotImage
	}
	px := int64(cfg.Width) * int64(cfg.Height)
	if px > maxThumbnailPixels {
		return imageInfo{}, ErrTooLarge
	}
	info := imageInfo{format: format, width: cfg.Width, height: cfg.Height}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return imageInfo{}, err
	}
	switch format {
	case "jpeg":
		n, err := jpegDecodeBytes(bufio.NewReader(f), cfg.Width, cfg.Height)
		if err != nil {
			// image.DecodeConfig read it, so the decoder might too: assume
			// the worst layout (progressive, four full-size components).
			n = 28 * px
		}
		info.decodeBytes = n
	case "png":
		info.decodeBytes = pngDecodeBytes(f, px)
	case "gif":
		// The first frame, one byte a pixel, and the canvas it is drawn
		// on when it does not cover the whole image (atOrigin).
		info.decodeBytes = 5 * px
	case "webp":
		switch cfg.ColorModel {
		case color.YCbCrModel: // lossy: 4:2:0, padded to macroblocks
			info.decodeBytes = 2 * px
		case color.NYCbCrAModel: // lossy with alpha, which may be lossless-coded
			info.decodeBytes = 7 * px
		default: // lossless: its ARGB pixels and the NRGBA image
			info.decodeBytes = 8 * px
		}
	default:
		info.decodeBytes = 8 * px
	}
	return info, nil
}

// pngDecodeBytes is what image/png allocates for an image of px pixels,
// from the IHDR chunk: one byte a pixel for a palette, eight for 16-bit
// depths, four otherwise (gray images with a transparent colour decode
// as NRGBA, and the header does not say whether there is one); twice that
// for interlaced images, whose seven passes are decoded separately and
// then merged.
func pngDecodeBytes(r io.Reader, px int64) int64 {
	// Signature (8), IHDR length and type (8), width, height (8), bit
	// depth, colour type, compression, filter, interlace.
	var hdr [29]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 16 * px
	}
	depth, colorType, interlace := hdr[24], hdr[25], hdr[28]
	bpp := int64(4)
	switch {
	case colorType == 3:
		bpp = 1
	case depth == 16:
		bpp = 8
	}
	if interlace != 0 {
		bpp *= 2
	}
	return bpp * px
}

var errJPEGHeader = errors.New("media: unreadable JPEG header")

// jpegDecodeBytes is what image/jpeg allocates to decode a w×h JPEG,
// read from its frame header: the gray or YCbCr planes, padded to whole
// MCUs and subsampled as the header says; for four components the black
// plane and the CMYK (or RGBA) result; for RGB-coded JPEGs the RGBA
// result; and for progressive JPEGs the coefficients of every block
// (64 int32s, 4 bytes per component pixel), which are the bulk of it.
func jpegDecodeBytes(r *bufio.Reader, w, h int) (int64, error) {
	var soi [2]byte
	if _, err := io.ReadFull(r, soi[:]); err != nil || soi != [2]byte{0xff, 0xd8} {
		return 0, errJPEGHeader
	}
	type component struct{ id, h, v int }
	var (
		comps          []component
		progressive    bool
		jfif, adobe    bool
		adobeTransform byte
		seg            []byte
	)
	for {
		c, err := r.ReadByte()
		if err != nil {
			return 0, errJPEGHeader
		}
		if c != 0xff {
			continue // stray bytes between segments, which decoders skip
		}
		m := c
		for m == 0xff { // fill bytes
			if m, err = r.ReadByte(); err != nil {
				return 0, errJPEGHeader
			}
		}
		if m == 0x00 || m == 0x01 || 0xd0 <= m && m <= 0xd7 {
			continue // no length follows
		}
		if m == 0xd9 || m == 0xda { // end of image, start of scan: the frame header is behind us
			break
		}
		var l [2]byte
		if _, err := io.ReadFull(r, l[:]); err != nil {
			return 0, errJPEGHeader
		}
		n := int(l[0])<<8 | int(l[1]) - 2
		if n < 0 {
			return 0, errJPEGHeader
		}
		if m != 0xc0 && m != 0xc1 && m != 0xc2 && m != 0xe0 && m != 0xee {
			if _, err := r.Discard(n); err != nil {
				return 0, errJPEGHeader
			}
			continue
		}
		if cap(seg) < n {
			seg = make([]byte, n)
		}
		seg = seg[:n]
		if _, err := io.ReadFull(r, seg); err != nil {
			return 0, errJPEGHeader
		}
		switch m {
		case 0xc0, 0xc1, 0xc2: // baseline, extended sequential, progressive: what image/jpeg decodes
			if len(seg) < 6 || len(seg) < 6+3*int(seg[5]) {
				return 0, errJPEGHeader
			}
			progressive = m == 0xc2
			comps = comps[:0]
			for i := range int(seg[5]) {
				f := seg[7+3*i]
				comps = append(comps, component{id: int(seg[6+3*i]), h: int(f >> 4), v: int(f & 15)})
			}
		case 0xe0:
			jfif = jfif || len(seg) >= 5 && string(seg[:5]) == "JFIF\x00"
		case 0xee:
			if len(seg) >= 12 && string(seg[:5]) == "Adobe" {
				adobe, adobeTransform = true, seg[11]
			}
		}
	}
	switch len(comps) {
	case 1:
		comps[0].h, comps[0].v = 1, 1 // a single component is not interleaved
	case 3, 4:
	default:
		return 0, errJPEGHeader
	}
	hmax, vmax := 1, 1
	for _, c := range comps {
		if c.h < 1 || c.h > 4 || c.v < 1 || c.v > 4 {
			return 0, errJPEGHeader
		}
		hmax, vmax = max(hmax, c.h), max(vmax, c.v)
	}
	mxx, myy := int64((w+8*hmax-1)/(8*hmax)), int64((h+8*vmax-1)/(8*vmax))
	pw, ph := 8*int64(hmax)*mxx, 8*int64(vmax)*myy // padded to whole MCUs
	px := int64(w) * int64(h)
	total := pw * ph
	if len(comps) > 1 {
		hr, vr := comps[0].h/comps[1].h, comps[0].v/comps[1].v
		if hr < 1 || vr < 1 {
			return 0, errJPEGHeader
		}
		total += 2 * ((pw + int64(hr) - 1) / int64(hr)) * ((ph + int64(vr) - 1) / int64(vr))
		rgb := comps[0].id == 'R' && comps[1].id == 'G' && comps[2].id == 'B' || !jfif && adobe && adobeTransform == 0
		switch {
		case len(comps) == 4:
			total += 64*int64(comps[3].h*comps[3].v)*mxx*myy + 4*px
		case rgb:
			total += 4 * px
		}
	}
	if progressive {
		for _, c := range comps {
			total += 256 * int64(c.h*c.v) * mxx * myy
		}
	}
	return total, nil
}

// atOrigin returns img as a w×h image whose bounds start at the origin:
// the first frame of a GIF may cover only part of its canvas, or sit
// elsewhere on it.
func atOrigin(img image.Image, w, h int) image.Image {
	full := image.Rect(0, 0, w, h)
	if img.Bounds() == full {
		return img
	}
	canvas := image.NewRGBA(full)
	draw.Draw(canvas, img.Bounds(), img, img.Bounds().Min, draw.Src)
	return canvas
}

// Thumbnails are scaled from a chain of halvings of the decoded image:
// level 0 is the image, level k+1 is level k halved by averaging 2×2
// pixels (a box filter, which is what bilinear sampling at exactly half
// the size is), and each thumbnail comes from the smallest level still
// at least its size, by one Catmull-Rom pass. That pass keeps a buffer
// of 32 bytes per destination column and source row (x/image/draw's
// Kernel.Scale), which from level 0 of a 5000×5000 image would be
// hundreds of megabytes; from a level under twice the thumbnail's size
// it stays under 64 bytes per thumbnail pixel.

// maxLevel bounds the chain; 2^30 is more than any image's side.
const maxLevel = 30

// levelSize is the size of level k of a w×h image.
func levelSize(w, h, k int) (int, int) {
	return max(w>>k, 1), max(h>>k, 1)
}

// levelRect maps r, a rectangle of the w×h image, onto level k: the
// smallest rectangle of that level that covers it, at least 1×1.
func levelRect(r image.Rectangle, w, h, k int) image.Rectangle {
	lw, lh := levelSize(w, h, k)
	x0 := int64(r.Min.X) * int64(lw) / int64(w)
	y0 := int64(r.Min.Y) * int64(lh) / int64(h)
	x1 := (int64(r.Max.X)*int64(lw) + int64(w) - 1) / int64(w)
	y1 := (int64(r.Max.Y)*int64(lh) + int64(h) - 1) / int64(h)
	out := image.Rect(int(x0), int(y0), int(max(x1, x0+1)), int(max(y1, y0+1)))
	return out.Intersect(image.Rect(0, 0, lw, lh))
}

// level is the level of a w×h image that target t is scaled from: the
// smallest one whose part under t.src is still at least t.out's size.
func (t thumbTarget) level(w, h int) int {
	k := 0
	for ; k < maxLevel; k++ {
		if lw, lh := levelSize(w, h, k); lw == 1 && lh == 1 {
			break // nothing left to halve
		}
		next := levelRect(t.src, w, h, k+1)
		if next.Dx() < t.out.Dx() || next.Dy() < t.out.Dy() {
			break
		}
	}
	return k
}

// chain holds the levels made so far of one decoded image.
type chain struct {
	levels []image.Image // levels[0] is the image, at the origin
}

// level returns level k, making the levels up to it.
func (c *chain) level(k int) image.Image {
	for len(c.levels) <= k {
		prev := c.levels[len(c.levels)-1]
		b := prev.Bounds()
		next := image.NewRGBA(image.Rect(0, 0, max(b.Dx()/2, 1), max(b.Dy()/2, 1)))
		draw.ApproxBiLinear.Scale(next, next.Bounds(), prev, b, draw.Src, nil)
		c.levels = append(c.levels, next)
	}
	return c.levels[k]
}

// codecBytes is what decoding and encoding take once per decode beyond
// the pixels: the decoder's inflate or Huffman state and buffers, and
// the PNG encoder's deflate state, reused for each thumbnail (render), or
// the JPEG encoder's tables and buffer.
const codecBytes = 3 << 19

// scaleBytes is the working memory of making target t of a w×h image:
// the kernel's buffer and its weights, the thumbnail itself, and the PNG
// encoder's rows for it.
func (t thumbTarget) scaleBytes(w, h int) int64 {
	src := levelRect(t.src, w, h, t.level(w, h))
	dw, dh := int64(t.out.Dx()), int64(t.out.Dy())
	// A kernel cell is a [4]float64; under a 2:1 ratio Catmull-Rom
	// weighs at most 10 source pixels of 16 bytes for each destination
	// column and row.
	const kernelCell, weight = 32, 10 * 16
	return dw*int64(src.Dy())*kernelCell + (dw+dh)*weight + dw*dh*4 + 5*(4*dw+1)
}

// chainBytes is the memory of levels 1 to k of a w×h image (RGBA).
func chainBytes(w, h, k int) int64 {
	var n int64
	for i := 1; i <= k; i++ {
		lw, lh := levelSize(w, h, i)
		n += int64(lw) * int64(lh) * 4
	}
	return n
}
