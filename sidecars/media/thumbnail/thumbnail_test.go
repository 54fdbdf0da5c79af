package thumbnail_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"os"
	"testing"

	"github.com/atoll-matrix/atoll/sidecars/media/thumbnail"
)

func encode(t testing.TB, format string, w, h int) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.Set(x, y, color.RGBA{uint8(x), uint8(y), 100, 255})
		}
	}
	var buf bytes.Buffer
	var err error
	switch format {
	case "jpeg":
		err = jpeg.Encode(&buf, img, nil)
	case "png":
		err = png.Encode(&buf, img)
	case "gif":
		err = gif.Encode(&buf, img, nil)
	case "webp":
		// No WebP encoder exists in Go's standard library or x/image: use sample files.
		name := "testdata/video-001.lossy.webp" // 150x103
		if w == 150 && h == 100 {
			name = "testdata/blue-purple-pink.lossless.webp"
		}
		var b []byte
		b, err = os.ReadFile(name)
		buf.Write(b)
	}
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestGenerate(t *testing.T) {
	g := thumbnail.New(2, 10_000_000)
	for _, tc := range []struct {
		format       string
		sw, sh       int
		w, h         int
		method       string
		wantW, wantH int
		wantType     string
	}{
		{"jpeg", 1000, 500, 32, 32, thumbnail.Crop, 32, 32, "image/jpeg"},
		{"jpeg", 1000, 500, 96, 96, thumbnail.Crop, 96, 96, "image/jpeg"},
		{"png", 1000, 500, 320, 240, thumbnail.Scale, 320, 160, "image/png"},
		{"png", 500, 1000, 640, 480, thumbnail.Scale, 240, 480, "image/png"},
		{"gif", 1000, 750, 800, 600, thumbnail.Scale, 800, 600, "image/png"},
		{"gif", 100, 50, 800, 600, thumbnail.Scale, 100, 50, "image/png"},
		{"webp", 150, 103, 32, 32, thumbnail.Crop, 32, 32, "image/png"},
		{"webp", 150, 100, 320, 240, thumbnail.Scale, 150, 100, "image/png"},
		{"webp", 150, 100, 100, 100, thumbnail.Scale, 100, 66, "image/png"},
	} {
		t.Run(tc.format+"/"+tc.method, func(t *testing.T) {
			src := encode(t, tc.format, tc.sw, tc.sh)
			var out bytes.Buffer
			res, err := g.Generate(context.Background(), bytes.NewReader(src), tc.w, tc.h, tc.method, &out)
			if err != nil {
				t.Fatal(err)
			}
			if res.Width != tc.wantW || res.Height != tc.wantH || res.ContentType != tc.wantType {
				t.Fatalf("got %+v, want %dx%d %s", res, tc.wantW, tc.wantH, tc.wantType)
			}
			cfg, format, err := image.DecodeConfig(bytes.NewReader(out.Bytes()))
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Width != tc.wantW || cfg.Height != tc.wantH || "image/"+format != tc.wantType {
				t.Fatalf("encoded %dx%d %s, want %dx%d %s", cfg.Width, cfg.Height, format, tc.wantW, tc.wantH, tc.wantType)
			}
		})
	}
}

// bombPNG declares 100000x100000 pixels in its header with almost no data behind it.
func bombPNG(t testing.TB) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := png.Encode(&buf, image.NewGray(image.Rect(0, 0, 1, 1))); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	// IHDR: length at 8, type at 12, width at 16, height at 20, CRC (over type and data) at 29.
	binary.BigEndian.PutUint32(b[16:20], 100000)
	binary.BigEndian.PutUint32(b[20:24], 100000)
	binary.BigEndian.PutUint32(b[29:33], crc32.ChecksumIEEE(b[12:29]))
	return b
}

func TestGenerateRefuses(t *testing.T) {
	g := thumbnail.New(1, 1_000_000)
	for _, tc := range []struct {
		name string
		src  []byte
		want error
	}{
		{"decompression bomb", bombPNG(t), thumbnail.ErrTooLarge},
		{"over budget", encode(t, "png", 2000, 1000), thumbnail.ErrTooLarge},
		{"not an image", []byte("%PDF-1.7 hello"), thumbnail.ErrUnsupported},
		{"empty", nil, thumbnail.ErrUnsupported},
		{"truncated jpeg", encode(t, "jpeg", 100, 100)[:200], thumbnail.ErrUnsupported},
		{"svg", []byte(`<svg xmlns="http://www.w3.org/2000/svg"/>`), thumbnail.ErrUnsupported},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			_, err := g.Generate(context.Background(), bytes.NewReader(tc.src), 96, 96, thumbnail.Crop, &out)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestDimensions(t *testing.T) {
	for _, tc := range []struct {
		sw, sh, w, h int
		method       string
		ww, wh       int
	}{
		{4000, 3000, 800, 600, thumbnail.Scale, 800, 600},
		{3000, 4000, 800, 600, thumbnail.Scale, 450, 600},
		{10, 10, 800, 600, thumbnail.Scale, 10, 10},
		{4000, 3000, 32, 32, thumbnail.Crop, 32, 32},
		{20, 10, 32, 32, thumbnail.Crop, 10, 10},
		{1, 10000, 96, 96, thumbnail.Crop, 1, 1},
	} {
		if gw, gh := thumbnail.Dimensions(tc.sw, tc.sh, tc.w, tc.h, tc.method); gw != tc.ww || gh != tc.wh {
			t.Errorf("Dimensions(%d,%d,%d,%d,%s) = %d,%d want %d,%d", tc.sw, tc.sh, tc.w, tc.h, tc.method, gw, gh, tc.ww, tc.wh)
		}
	}
}
