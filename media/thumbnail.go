package media

import (
	"context"
	"fmt"
	"image"
	_ "image/gif" // decoders registered for image.Decode
	"image/jpeg"
	"image/png"
	"io"
	"os"
	"path/filepath"
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

// maxThumbnailPixels bounds the images we decode (about 100 MB as RGBA),
// checked from the header before decoding so a small file that claims a
// huge image cannot exhaust memory (spec: "Homeservers should not attempt
// to generate thumbnails for images that are too large").
const maxThumbnailPixels = 25_000_000

// maxDecoding is how many thumbnails are made at once.
const maxDecoding = 4

// Thumb is an open thumbnail; the caller closes File.
type Thumb struct {
	File        *os.File
	ContentType string
	// Original is set when the image was already no larger than asked
	// for, so File is the uploaded content itself (spec: servers should
	// return the original rather than upscale).
	Original bool
}

// Thumbnail returns a thumbnail of at least width×height where the image
// allows (never upscaled), made once per output size and method and then
// served from disk. PNG, JPEG, GIF (first frame) and WebP are understood;
// other content fails with ErrNotImage, images past maxThumbnailPixels with
// ErrTooLarge. access and wait are as for Open.
func (r *Repository) Thumbnail(ctx context.Context, id ID, width, height int, method Method, access Access, wait time.Duration) (*Thumb, error) {
	if width < 1 || height < 1 || method != Scale && method != Crop {
		return nil, fmt.Errorf("media: bad thumbnail request %dx%d %q", width, height, method)
	}
	rec, f, err := r.Open(ctx, id, access, wait)
	if err != nil {
		return nil, err
	}
	cfg, format, err := image.DecodeConfig(f)
	if err != nil {
		f.Close()
		return nil, ErrNotImage
	}
	if int64(cfg.Width)*int64(cfg.Height) > maxThumbnailPixels {
		f.Close()
		return nil, ErrTooLarge
	}
	ctype := "image/" + format
	out, src := thumbGeometry(cfg.Width, cfg.Height, width, height, method)
	if out.Dx() >= cfg.Width && out.Dy() >= cfg.Height {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			f.Close()
			return nil, err
		}
		return &Thumb{File: f, ContentType: ctype, Original: true}, nil
	}
	ext, outType := "png", "image/png" // keeps transparency of PNG, GIF, WebP
	if format == "jpeg" {
		ext, outType = "jpg", "image/jpeg"
	}
	path := filepath.Join(r.cfg.Dir, "thumbnails", rec.SHA256[:2], rec.SHA256,
		fmt.Sprintf("%dx%d-%s.%s", out.Dx(), out.Dy(), method, ext))
	if tf, err := os.Open(path); err == nil {
		f.Close()
		return &Thumb{File: tf, ContentType: outType}, nil
	}
	defer f.Close()
	select {
	case r.decoding <- struct{}{}:
		defer func() { <-r.decoding }()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	img, _, err := image.Decode(f)
	if err != nil {
		return nil, ErrNotImage
	}
	dst := image.NewRGBA(out)
	b := img.Bounds()
	draw.CatmullRom.Scale(dst, out, img, src.Add(b.Min), draw.Src, nil)
	if err := writeAtomically(path, func(w io.Writer) error {
		if ext == "jpg" {
			return jpeg.Encode(w, dst, &jpeg.Options{Quality: 85})
		}
		return png.Encode(w, dst)
	}); err != nil {
		return nil, err
	}
	tf, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	return &Thumb{File: tf, ContentType: outType}, nil
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
