package s3test_test

import (
	"context"
	"strings"
	"testing"

	"github.com/atoll-matrix/atoll/internal/atolltest/s3test"
	"github.com/minio/minio-go/v7"
)

func TestNew(t *testing.T) {
	var bucket, extra string
	t.Run("inner", func(t *testing.T) {
		s := s3test.New(t)
		bucket, extra = s.Bucket, s.Prefix+"tenant-x"
		if !strings.HasPrefix(s.Bucket, "testnew-inner-") {
			t.Fatalf("bucket %q not named after the test", s.Bucket)
		}
		ctx := context.Background()
		if _, err := s.Client.PutObject(ctx, s.Bucket, "a/b", strings.NewReader("hi"), 2, minio.PutObjectOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := s.Client.MakeBucket(ctx, extra, minio.MakeBucketOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Client.PutObject(ctx, extra, "k", strings.NewReader("x"), 1, minio.PutObjectOptions{}); err != nil {
			t.Fatal(err)
		}
		if got := s.Objects(t, s.Bucket, ""); len(got) != 1 || got[0] != "a/b" {
			t.Fatalf("objects = %v", got)
		}
	})
	if bucket == "" {
		t.Skip("inner test skipped")
	}
	s := s3test.New(t)
	for _, b := range []string{bucket, extra} {
		if s.BucketExists(t, b) {
			t.Errorf("bucket %s survived cleanup", b)
		}
	}
}
