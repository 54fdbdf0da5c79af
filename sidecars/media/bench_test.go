package media_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/atoll-matrix/atoll/sidecars/media/mediastore"
	"github.com/minio/minio-go/v7"
)

// Benchmarks compare the sidecar with minio-go talking to the same MinIO directly; the figure
// that matters is the ratio of the Via and Direct throughputs (MB/s), measured in one run:
//
//	go test -run '^$' -bench 'Upload|Download' -benchtime 10x ./sidecars/media/
const benchSize = 32 << 20

func benchClient(b *testing.B, e *env) *minio.Client {
	b.Helper()
	c, err := mediastore.NewClient(mediastore.ClientOptions{Endpoint: e.s3.Endpoint, AccessKey: e.s3.AccessKey, SecretKey: e.s3.SecretKey, MaxRetries: 1})
	if err != nil {
		b.Fatal(err)
	}
	return c
}

func BenchmarkUploadViaSidecar(b *testing.B) {
	e := newEnv(b)
	b.SetBytes(benchSize)
	b.ResetTimer()
	for b.Loop() {
		resp := e.request(http.MethodPost, hostA, "/_matrix/media/v3/upload", aliceToken, io.LimitReader(zeros{}, benchSize), benchSize, nil)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("upload: %d", resp.StatusCode)
		}
	}
}

func BenchmarkUploadDirect(b *testing.B) {
	e := newEnv(b)
	c := benchClient(b, e)
	bucket := e.s3.Bucket
	b.SetBytes(benchSize)
	b.ResetTimer()
	i := 0
	for b.Loop() {
		i++
		_, err := c.PutObject(context.Background(), bucket, "direct/"+strings.Repeat("x", i%7+1), io.LimitReader(zeros{}, benchSize), benchSize,
			minio.PutObjectOptions{ContentType: "application/octet-stream", PartSize: e.cfg.S3.PartSize})
		if err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDownloadViaSidecar(b *testing.B) {
	e := newEnv(b)
	resp := e.request(http.MethodPost, hostA, "/_matrix/media/v3/upload", aliceToken, io.LimitReader(zeros{}, benchSize), benchSize, nil)
	var out struct {
		ContentURI string `json:"content_uri"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		b.Fatal(err)
	}
	resp.Body.Close()
	path := "/_matrix/client/v1/media/download/" + strings.TrimPrefix(out.ContentURI, "mxc://")
	b.SetBytes(benchSize)
	b.ResetTimer()
	for b.Loop() {
		resp := e.request(http.MethodGet, hostA, path, aliceToken, nil, -1, nil)
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || n != benchSize {
			b.Fatalf("download: %d bytes, %v", n, err)
		}
	}
}

func BenchmarkDownloadDirect(b *testing.B) {
	e := newEnv(b)
	c := benchClient(b, e)
	ctx := context.Background()
	if _, err := c.PutObject(ctx, e.s3.Bucket, "direct", io.LimitReader(zeros{}, benchSize), benchSize, minio.PutObjectOptions{PartSize: e.cfg.S3.PartSize}); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(benchSize)
	b.ResetTimer()
	for b.Loop() {
		obj, err := c.GetObject(ctx, e.s3.Bucket, "direct", minio.GetObjectOptions{})
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, obj)
		obj.Close()
		if err != nil || n != benchSize {
			b.Fatalf("download: %d bytes, %v", n, err)
		}
	}
}
