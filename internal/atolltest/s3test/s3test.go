// Package s3test gives a test its own bucket, and a bucket-name prefix of its own, on the S3
// service named by ATOLL_TEST_S3_ENDPOINT, ATOLL_TEST_S3_ACCESS_KEY and ATOLL_TEST_S3_SECRET_KEY
// (scripts/minio.sh start writes them). Everything the test created under its names is removed
// on cleanup. Without the variables the test is skipped, or fails when
// ATOLL_TEST_REQUIRE_SERVICES=1.
package s3test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3 is a test's slice of the S3 service.
type S3 struct {
	Client    *minio.Client
	Endpoint  string // host:port
	AccessKey string
	SecretKey string
	// Bucket exists for the test and is emptied and removed on cleanup.
	Bucket string
	// Prefix starts every bucket name the test may create (code under test included, e.g. per
	// tenant buckets); buckets with this prefix are emptied and removed on cleanup.
	Prefix string
}

// Config reads the environment, skipping or failing the test when it is unset.
func Config(t testing.TB) (endpoint, accessKey, secretKey string) {
	t.Helper()
	endpoint = os.Getenv("ATOLL_TEST_S3_ENDPOINT")
	accessKey = os.Getenv("ATOLL_TEST_S3_ACCESS_KEY")
	secretKey = os.Getenv("ATOLL_TEST_S3_SECRET_KEY")
	if endpoint == "" || accessKey == "" || secretKey == "" {
		if os.Getenv("ATOLL_TEST_REQUIRE_SERVICES") == "1" {
			t.Fatal("ATOLL_TEST_S3_ENDPOINT/ACCESS_KEY/SECRET_KEY unset and ATOLL_TEST_REQUIRE_SERVICES=1")
		}
		t.Skip("ATOLL_TEST_S3_ENDPOINT unset; run scripts/minio.sh start DIR and source DIR/env")
	}
	return endpoint, accessKey, secretKey
}

// New creates the test's bucket and registers its removal.
func New(t testing.TB) *S3 {
	t.Helper()
	endpoint, ak, sk := Config(t)
	client, err := minio.New(endpoint, &minio.Options{Creds: credentials.NewStaticV4(ak, sk, ""), Secure: false})
	if err != nil {
		t.Fatalf("s3test: client: %v", err)
	}
	s := &S3{Client: client, Endpoint: endpoint, AccessKey: ak, SecretKey: sk, Prefix: prefixFor(t.Name())}
	s.Bucket = s.Prefix + "main"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := client.MakeBucket(ctx, s.Bucket, minio.MakeBucketOptions{}); err != nil {
		t.Fatalf("s3test: make bucket %s: %v", s.Bucket, err)
	}
	t.Cleanup(func() { s.removeAll(t) })
	return s
}

// prefixFor turns a test name into "<name, lower-case, [a-z0-9-] only, <= 24 chars>-<8 hex>-".
func prefixFor(name string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(name) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			if s := b.String(); s != "" && !strings.HasSuffix(s, "-") {
				b.WriteByte('-')
			}
		}
		if b.Len() >= 24 {
			break
		}
	}
	base := strings.Trim(b.String(), "-")
	if base == "" {
		base = "test"
	}
	var r [4]byte
	_, _ = rand.Read(r[:])
	return base + "-" + hex.EncodeToString(r[:]) + "-"
}

// Objects lists every object key in bucket (test assertions).
func (s *S3) Objects(t testing.TB, bucket, prefix string) []string {
	t.Helper()
	var keys []string
	for o := range s.Client.ListObjects(context.Background(), bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if o.Err != nil {
			if minio.ToErrorResponse(o.Err).Code == "NoSuchBucket" {
				return nil
			}
			t.Fatalf("s3test: list %s: %v", bucket, o.Err)
		}
		keys = append(keys, o.Key)
	}
	return keys
}

// BucketExists reports whether bucket exists.
func (s *S3) BucketExists(t testing.TB, bucket string) bool {
	t.Helper()
	ok, err := s.Client.BucketExists(context.Background(), bucket)
	if err != nil {
		t.Fatalf("s3test: bucket exists %s: %v", bucket, err)
	}
	return ok
}

func (s *S3) removeAll(t testing.TB) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	buckets, err := s.Client.ListBuckets(ctx)
	if err != nil {
		t.Errorf("s3test: list buckets: %v", err)
		return
	}
	for _, b := range buckets {
		if !strings.HasPrefix(b.Name, s.Prefix) {
			continue
		}
		objects := make(chan minio.ObjectInfo)
		go func() {
			defer close(objects)
			for o := range s.Client.ListObjects(ctx, b.Name, minio.ListObjectsOptions{Recursive: true}) {
				if o.Err != nil {
					return
				}
				objects <- o
			}
		}()
		for e := range s.Client.RemoveObjects(ctx, b.Name, objects, minio.RemoveObjectsOptions{}) {
			t.Errorf("s3test: remove %s/%s: %v", b.Name, e.ObjectName, e.Err)
		}
		// Abandoned multipart uploads would keep the bucket from being removed.
		for u := range s.Client.ListIncompleteUploads(ctx, b.Name, "", true) {
			if u.Err == nil {
				_ = s.Client.RemoveIncompleteUpload(ctx, b.Name, u.Key)
			}
		}
		if err := s.Client.RemoveBucket(ctx, b.Name); err != nil {
			t.Errorf("s3test: remove bucket %s: %v", b.Name, err)
		}
	}
}
