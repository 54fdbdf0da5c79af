package mediadb_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/atoll-matrix/atoll/sidecars/media/mediadb"
	"github.com/atoll-matrix/atoll/sidecars/media/mediadb/mediadbtest"
)

func TestMigrateConcurrently(t *testing.T) {
	schema := mediadbtest.Schema(t)
	url := mediadbtest.URL(t)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			db, err := mediadb.Open(context.Background(), url, schema, 2)
			if err == nil {
				db.Close()
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestTenantIsolationAndQuota(t *testing.T) {
	db, _ := mediadbtest.Open(t)
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Microsecond)
	a := mediadb.Media{TenantID: "a", MediaID: "m1", UserID: "@u:a", ContentType: "text/plain", Size: 60, ObjectKey: "local/m1", CreatedAt: now}
	if err := db.InsertLocal(ctx, a, 100); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Get(ctx, mediadb.Ref{TenantID: "b", MediaID: "m1"}); !errors.Is(err, mediadb.ErrNotFound) {
		t.Fatalf("tenant b sees tenant a's media: %v", err)
	}
	got, err := db.Get(ctx, mediadb.Ref{TenantID: "a", MediaID: "m1"})
	if err != nil || got.Size != 60 || got.UploadedAt == nil || !got.CreatedAt.Equal(now) {
		t.Fatalf("Get = %+v, %v", got, err)
	}
	for _, tc := range []struct {
		name    string
		m       mediadb.Media
		wantErr error
	}{
		{"over quota", mediadb.Media{TenantID: "a", MediaID: "m2", UserID: "@u:a", Size: 41, CreatedAt: now}, mediadb.ErrQuotaExceeded},
		{"at quota", mediadb.Media{TenantID: "a", MediaID: "m3", UserID: "@u:a", Size: 40, CreatedAt: now}, nil},
		{"other user", mediadb.Media{TenantID: "a", MediaID: "m4", UserID: "@v:a", Size: 90, CreatedAt: now}, nil},
		{"other tenant", mediadb.Media{TenantID: "b", MediaID: "m1", UserID: "@u:a", Size: 90, CreatedAt: now}, nil},
		{"duplicate id", mediadb.Media{TenantID: "a", MediaID: "m1", UserID: "@v:a", Size: 1, CreatedAt: now}, mediadb.ErrExists},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := db.InsertLocal(ctx, tc.m, 100); !errors.Is(err, tc.wantErr) {
				t.Fatalf("InsertLocal err = %v, want %v", err, tc.wantErr)
			}
		})
	}
}

func TestPending(t *testing.T) {
	db, _ := mediadbtest.Open(t)
	ctx := context.Background()
	now := time.Now()
	for i, id := range []string{"p1", "p2"} {
		err := db.CreatePending(ctx, "a", id, "@u:a", now, now.Add(time.Hour), 1)
		if want := []error{nil, mediadb.ErrTooManyPending}[i]; !errors.Is(err, want) {
			t.Fatalf("CreatePending %s: %v, want %v", id, err, want)
		}
	}
	done := mediadb.Media{TenantID: "a", MediaID: "p1", UserID: "@u:a", Size: 3, ObjectKey: "local/p1", CreatedAt: now}
	for _, tc := range []struct {
		name    string
		m       mediadb.Media
		wantErr error
	}{
		{"other user", mediadb.Media{TenantID: "a", MediaID: "p1", UserID: "@v:a", CreatedAt: now}, mediadb.ErrNotOwner},
		{"unknown", mediadb.Media{TenantID: "a", MediaID: "nope", UserID: "@u:a", CreatedAt: now}, mediadb.ErrNotFound},
		{"ok", done, nil},
		{"twice", done, mediadb.ErrAlreadyUploaded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := db.CompletePending(ctx, tc.m, 0); !errors.Is(err, tc.wantErr) {
				t.Fatalf("CompletePending err = %v, want %v", err, tc.wantErr)
			}
		})
	}
	if err := db.CreatePending(ctx, "a", "p3", "@u:a", now, now.Add(-time.Minute), 1); err != nil {
		t.Fatal(err)
	}
	expired, err := db.ExpiredPending(ctx, now, 10)
	if err != nil || len(expired) != 1 || expired[0].MediaID != "p3" {
		t.Fatalf("ExpiredPending = %v, %v", expired, err)
	}
}

func TestDeleteAndQuarantine(t *testing.T) {
	db, _ := mediadbtest.Open(t)
	ctx := context.Background()
	now := time.Now()
	ref := mediadb.Ref{TenantID: "a", MediaID: "m"}
	if err := db.InsertLocal(ctx, mediadb.Media{TenantID: "a", MediaID: "m", UserID: "@u:a", ObjectKey: "local/m", CreatedAt: now.Add(-48 * time.Hour)}, 0); err != nil {
		t.Fatal(err)
	}
	if err := db.InsertThumbnail(ctx, ref, mediadb.Thumbnail{Width: 32, Height: 32, Method: "crop", ContentType: "image/png", ObjectKey: "thumb/local/m/32x32-crop"}, now); err != nil {
		t.Fatal(err)
	}
	if err := db.InsertThumbnail(ctx, mediadb.Ref{TenantID: "a", MediaID: "gone"}, mediadb.Thumbnail{Method: "crop"}, now); !errors.Is(err, mediadb.ErrNotFound) {
		t.Fatalf("thumbnail of missing media: %v", err)
	}
	if err := db.InsertRemote(ctx, mediadb.Media{TenantID: "a", Origin: "b.example", MediaID: "r", ObjectKey: "remote/b.example/r", CreatedAt: now.Add(-48 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	old, err := db.Older(ctx, true, now.Add(-time.Hour), 10)
	if err != nil || len(old) != 1 || old[0].Origin != "b.example" {
		t.Fatalf("Older(remote) = %v, %v", old, err)
	}
	if n, err := db.QuarantineUser(ctx, "a", "@u:a", now); err != nil || n != 1 {
		t.Fatalf("QuarantineUser = %d, %v", n, err)
	}
	if changed, err := db.Quarantine(ctx, ref, now); err != nil || changed {
		t.Fatalf("second quarantine changed=%v err=%v", changed, err)
	}
	keys, err := db.ObjectKeys(ctx, ref)
	if err != nil || len(keys) != 2 {
		t.Fatalf("ObjectKeys = %v, %v", keys, err)
	}
	if ok, err := db.Delete(ctx, ref); err != nil || !ok {
		t.Fatalf("Delete = %v, %v", ok, err)
	}
	if _, err := db.GetThumbnail(ctx, ref, 32, 32, "crop"); !errors.Is(err, mediadb.ErrNotFound) {
		t.Fatalf("thumbnail row survived: %v", err)
	}
	if n, err := db.DeleteTenant(ctx, "a"); err != nil || n != 1 {
		t.Fatalf("DeleteTenant = %d, %v", n, err)
	}
}
