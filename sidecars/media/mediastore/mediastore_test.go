package mediastore_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/atoll-matrix/atoll/internal/atolltest/s3test"
	"github.com/atoll-matrix/atoll/sidecars/media/mediastore"
	"github.com/prometheus/client_golang/prometheus"
)

func TestLocation(t *testing.T) {
	bucketStore, _ := mediastore.New(nil, mediastore.Options{Mode: mediastore.ModeBucket, BucketPrefix: "atoll-"}, prometheus.NewRegistry())
	prefixStore, _ := mediastore.New(nil, mediastore.Options{Mode: mediastore.ModePrefix, SharedBucket: "media"}, prometheus.NewRegistry())
	for _, tc := range []struct {
		store              *mediastore.Store
		tenant             string
		wantBucket, wantPx string
		wantErr            bool
	}{
		{store: bucketStore, tenant: "acme_clinic", wantBucket: "atoll-acme-clinic"},
		{store: prefixStore, tenant: "acme_clinic", wantBucket: "media", wantPx: "acme_clinic/"},
		{store: bucketStore, tenant: "Acme", wantErr: true},
		{store: bucketStore, tenant: "../x", wantErr: true},
		{store: bucketStore, tenant: "a_", wantErr: true}, // bucket would end in '-'
		{store: prefixStore, tenant: "", wantErr: true},
		{store: bucketStore, tenant: strings.Repeat("a", 41), wantErr: true},
	} {
		t.Run(tc.tenant, func(t *testing.T) {
			b, p, err := tc.store.Location(tc.tenant)
			if tc.wantErr {
				if !errors.Is(err, mediastore.ErrInvalidTenant) {
					t.Fatalf("err = %v, want ErrInvalidTenant", err)
				}
				return
			}
			if err != nil || b != tc.wantBucket || p != tc.wantPx {
				t.Fatalf("Location = %q, %q, %v", b, p, err)
			}
		})
	}
}

func TestStore(t *testing.T) {
	for _, mode := range []string{mediastore.ModeBucket, mediastore.ModePrefix} {
		t.Run(mode, func(t *testing.T) {
			s3 := s3test.New(t)
			client, err := mediastore.NewClient(mediastore.ClientOptions{Endpoint: s3.Endpoint, AccessKey: s3.AccessKey, SecretKey: s3.SecretKey, MaxRetries: 1})
			if err != nil {
				t.Fatal(err)
			}
			st, err := mediastore.New(client, mediastore.Options{Mode: mode, BucketPrefix: s3.Prefix, SharedBucket: s3.Bucket}, prometheus.NewRegistry())
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			if err := st.CreateTenant(ctx, "acme"); err != nil {
				t.Fatal(err)
			}
			for _, size := range []int64{5, -1} {
				if n, err := st.Put(ctx, "acme", mediastore.LocalKey("a"), strings.NewReader("hello"), size, "text/plain"); err != nil || n != 5 {
					t.Fatalf("Put(size %d) = %d, %v", size, n, err)
				}
			}
			obj, err := st.Get(ctx, "acme", mediastore.LocalKey("a"))
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(obj)
			obj.Close()
			if string(b) != "hello" || obj.Size != 5 || obj.ContentType != "text/plain" {
				t.Fatalf("got %q size %d type %q", b, obj.Size, obj.ContentType)
			}
			// A short body for a declared size stores nothing.
			if _, err := st.Put(ctx, "acme", mediastore.LocalKey("short"), strings.NewReader("abc"), 10, "text/plain"); err == nil {
				t.Fatal("short body accepted")
			}
			if _, err := st.Get(ctx, "acme", mediastore.LocalKey("short")); !errors.Is(err, mediastore.ErrNotFound) {
				t.Fatalf("short body left an object: %v", err)
			}
			if err := st.Remove(ctx, "acme", mediastore.LocalKey("a"), mediastore.LocalKey("missing")); err != nil {
				t.Fatal(err)
			}
			if _, err := st.Get(ctx, "acme", mediastore.LocalKey("a")); !errors.Is(err, mediastore.ErrNotFound) {
				t.Fatalf("removed object still there: %v", err)
			}
			if _, err := st.Put(ctx, "acme", mediastore.LocalKey("b"), strings.NewReader("x"), 1, ""); err != nil {
				t.Fatal(err)
			}
			bucket, prefix, _ := st.Location("acme")
			if err := st.DeleteTenant(ctx, "acme"); err != nil {
				t.Fatal(err)
			}
			if mode == mediastore.ModeBucket && s3.BucketExists(t, bucket) {
				t.Fatal("tenant bucket survived DeleteTenant")
			}
			if keys := s3.Objects(t, bucket, prefix); len(keys) != 0 {
				t.Fatalf("objects left after DeleteTenant: %v", keys)
			}
		})
	}
}
