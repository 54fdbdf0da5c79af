// Package thumbnail makes thumbnails from JPEG, PNG, GIF and WebP images, refusing images whose
// declared dimensions exceed a pixel budget before decoding them and capping how many images are
// decoded at once, so a hostile upload cannot exhaust memory.
package thumbnail

import (
	"context"
	"errors"
	"fmt"
	"image"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"

	"golang.org/x/image/draw"
	"golang.org/x/image/webp"
)

// Methods.
const (
	Crop  = "crop"
	Scale = "scale"
)

var (
	// ErrUnsupported is returned for content that is not an image this package decodes.
	ErrUnsupported = errors.New("unsupported image format")
	// ErrTooLarge is returned for images whose dimensions exceed the pixel budget.
	ErrTooLarge = errors.New("image too large to thumbnail")
)

// SupportedContentType reports whether a thumbnail can be made from media of this type.
func SupportedContentType(ct string) bool {
	switch ct {
	case "image/jpeg", "image/jpg", "image/png", "image/gif", "image/webp":
		return true
	}
	return false
}

// Generator makes thumbnails. It is safe for concurrent use.
type Generator struct {
	sem       chan struct{}
	maxPixels int64
}

// New returns a Generator decoding at most maxConcurrent images at once and none larger than
// maxPixels.
func New(maxConcurrent int, maxPixels int64) *Generator {
	return &Generator{sem: make(chan struct{}, maxConcurrent), maxPixels: maxPixels}
}

// Result describes a generated thumbnail.
type Result struct {
	ContentType string
	Width       int
	Height      int
}

type decoder struct {
	config func(io.Reader) (image.Config, error)
	decode func(io.Reader) (image.Image, error)
}

var decoders = map[string]decoder{
	"jpeg": {jpeg.DecodeConfig, jpeg.Decode},
	"png":  {png.DecodeConfig, png.Decode},
	"gif":  {gif.DecodeConfig, gif.Decode}, // first frame
	"webp": {webp.DecodeConfig, webp.Decode},
}

// sniff names the format from the first bytes, independent of the declared content type.
func sniff(r io.ReadSeeker) (string, error) {
	var head [16]byte
	n, err := io.ReadFull(r, head[:])
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read image header: %w", err)
	}
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		return "", fmt.Errorf("rewind image: %w", err)
	}
	h := head[:n]
	switch {
	case len(h) >= 3 && h[0] == 0xff && h[1] == 0xd8 && h[2] == 0xff:
		return "jpeg", nil
	case len(h) >= 8 && string(h[:8]) == "\x89PNG\r\n\x1a\n":
		return "png", nil
	case len(h) >= 6 && (string(h[:6]) == "GIF87a" || string(h[:6]) == "GIF89a"):
		return "gif", nil
	case len(h) >= 12 && string(h[:4]) == "RIFF" && string(h[8:12]) == "WEBP":
		return "webp", nil
	}
	return "", ErrUnsupported
}

// Generate decodes src and writes a thumbnail of at most width x height to dst. Crop fills the
// box exactly (cutting the overflow, centred); scale fits inside it keeping the aspect ratio.
// Neither enlarges the image. JPEG sources give JPEG thumbnails, the others PNG.
func (g *Generator) Generate(ctx context.Context, src io.ReadSeeker, width, height int, method string, dst io.Writer) (Result, error) {
	if width < 1 || height < 1 || (method != Crop && method != Scale) {
		return Result{}, fmt.Errorf("thumbnail %dx%d %q: invalid request", width, height, method)
	}
	format, err := sniff(src)
	if err != nil {
		return Result{}, err
	}
	dec := decoders[format]
	cfg, err := dec.config(src)
	if err != nil {
		return Result{}, fmt.Errorf("decode %s header: %w", format, errors.Join(ErrUnsupported, err))
	}
	if cfg.Width < 1 || cfg.Height < 1 || int64(cfg.Width)*int64(cfg.Height) > g.maxPixels {
		return Result{}, fmt.Errorf("%dx%d %s: %w", cfg.Width, cfg.Height, format, ErrTooLarge)
	}
	if _, err := src.Seek(0, io.SeekStart); err != nil {
		return Result{}, fmt.Errorf("rewind image: %w", err)
	}

	select {
	case g.sem <- struct{}{}:
	case <-ctx.Done():
		return Result{}, fmt.Errorf("wait to thumbnail: %w", ctx.Err())
	}
	defer func() { <-g.sem }()

	img, err := dec.decode(src)
	if err != nil {
		return Result{}, fmt.Errorf("decode %s: %w", format, errors.Join(ErrUnsupported, err))
	}
	out := resize(img, width, height, method)
	res := Result{Width: out.Bounds().Dx(), Height: out.Bounds().Dy()}
	if format == "jpeg" {
		res.ContentType = "image/jpeg"
		err = jpeg.Encode(dst, out, &jpeg.Options{Quality: 80})
	} else {
		res.ContentType = "image/png"
		err = (&png.Encoder{CompressionLevel: png.BestSpeed}).Encode(dst, out)
	}
	if err != nil {
		return Result{}, fmt.Errorf("encode thumbnail: %w", err)
	}
	return res, nil
}

// Dimensions returns the output size Generate would produce for a source of sw x sh.
func Dimensions(sw, sh, width, height int, method string) (int, int) {
	if method == Crop {
		// The largest source region with the box's aspect ratio, shrunk to the box.
		cw, ch := sw, sw*height/width
		if ch > sh {
			cw, ch = sh*width/height, sh
		}
		if cw > width {
			return width, height
		}
		return max(cw, 1), max(ch, 1)
	}
	if sw <= width && sh <= height {
		return sw, sh
	}
	// Fit: whichever side limits.
	if sw*height > sh*width {
		return width, max(sh*width/sw, 1)
	}
	return max(sw*height/sh, 1), height
}

func resize(img image.Image, width, height int, method string) image.Image {
	b := img.Bounds()
	sw, sh := b.Dx(), b.Dy()
	ow, oh := Dimensions(sw, sh, width, height, method)
	srcRect := b
	if method == Crop {
		cw, ch := sw, sw*height/width
		if ch > sh {
			cw, ch = sh*width/height, sh
		}
		cw, ch = max(cw, 1), max(ch, 1)
		x0 := b.Min.X + (sw-cw)/2
		y0 := b.Min.Y + (sh-ch)/2
		srcRect = image.Rect(x0, y0, x0+cw, y0+ch)
	}
	dst := image.NewRGBA(image.Rect(0, 0, ow, oh))
	draw.BiLinear.Scale(dst, dst.Bounds(), img, srcRect, draw.Src, nil)
	return dst
}
