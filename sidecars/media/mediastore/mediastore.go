// Package mediastore keeps media objects in S3, in a bucket per tenant ("<prefix><tenant>") or
// under "<tenant>/" in one shared bucket, streaming every transfer and measuring every S3 call.
package mediastore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/prometheus/client_golang/prometheus"
)

// Modes.
const (
	ModeBucket = "bucket"
	ModePrefix = "prefix"
)

var (
	// ErrNotFound is returned for a missing object.
	ErrNotFound = errors.New("object not found")
	// ErrUnavailable wraps S3 failures: unreachable, refusing or erroring.
	ErrUnavailable = errors.New("object store unavailable")
	// ErrTimeout wraps S3 calls that did not answer in time.
	ErrTimeout = errors.New("object store timed out")
	// ErrInvalidTenant is returned for tenant IDs that cannot name a bucket.
	ErrInvalidTenant = errors.New("invalid tenant id")
)

// Options configure a Store.
type Options struct {
	Mode         string
	BucketPrefix string // bucket mode
	SharedBucket string // prefix mode
	Region       string
	PartSize     uint64
}

// Store is safe for concurrent use.
type Store struct {
	c  *minio.Client
	o  Options
	m  *metrics
	mu sync.Mutex
	// ready remembers buckets known to exist, so uploads do not ask every time.
	ready map[string]bool
}

// ClientOptions build a minio client with bounded waits.
type ClientOptions struct {
	Endpoint, AccessKey, SecretKey, Region string
	Secure                                 bool
	// DialTimeout and ResponseHeaderTimeout bound connecting and waiting for an answer; a
	// stalled S3 turns into ErrTimeout instead of a hung request.
	DialTimeout           time.Duration
	ResponseHeaderTimeout time.Duration
	MaxRetries            int
}

// NewClient returns a minio client with a transport honouring o's timeouts.
func NewClient(o ClientOptions) (*minio.Client, error) {
	if o.DialTimeout == 0 {
		o.DialTimeout = 5 * time.Second
	}
	if o.ResponseHeaderTimeout == 0 {
		o.ResponseHeaderTimeout = 30 * time.Second
	}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: o.DialTimeout, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   o.DialTimeout,
		ResponseHeaderTimeout: o.ResponseHeaderTimeout,
		ExpectContinueTimeout: time.Second,
		WriteBufferSize:       64 << 10,
		ReadBufferSize:        64 << 10,
	}
	c, err := minio.New(o.Endpoint, &minio.Options{
		Creds:      credentials.NewStaticV4(o.AccessKey, o.SecretKey, ""),
		Secure:     o.Secure,
		Region:     o.Region,
		Transport:  tr,
		MaxRetries: o.MaxRetries,
	})
	if err != nil {
		return nil, fmt.Errorf("s3 client: %w", err)
	}
	return c, nil
}

// New returns a Store. In prefix mode the shared bucket must exist or be creatable.
func New(c *minio.Client, o Options, reg prometheus.Registerer) (*Store, error) {
	if o.Mode != ModeBucket && o.Mode != ModePrefix {
		return nil, fmt.Errorf("mediastore mode %q: want bucket or prefix", o.Mode)
	}
	if o.PartSize == 0 {
		o.PartSize = 16 << 20
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	return &Store{c: c, o: o, m: m, ready: map[string]bool{}}, nil
}

// Client returns the underlying client (tests and tools).
func (s *Store) Client() *minio.Client { return s.c }

// ValidTenantID reports whether id can name a tenant's bucket or prefix: lower-case letters,
// digits, '-' and '_', starting with a letter or digit, at most 40 characters.
func ValidTenantID(id string) bool {
	if id == "" || len(id) > 40 || id[0] == '-' || id[0] == '_' {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// Location returns where tenant's objects live: a bucket and a key prefix ("" in bucket mode).
func (s *Store) Location(tenant string) (bucket, prefix string, err error) {
	if !ValidTenantID(tenant) {
		return "", "", fmt.Errorf("tenant %q: %w", tenant, ErrInvalidTenant)
	}
	if s.o.Mode == ModePrefix {
		return s.o.SharedBucket, tenant + "/", nil
	}
	b := s.o.BucketPrefix + strings.ReplaceAll(tenant, "_", "-")
	if len(b) > 63 || len(b) < 3 || strings.HasSuffix(b, "-") {
		return "", "", fmt.Errorf("tenant %q: bucket name %q: %w", tenant, b, ErrInvalidTenant)
	}
	return b, "", nil
}

// LocalKey, RemoteKey and ThumbnailKey name objects within a tenant's location. Callers pass
// only validated server names and media IDs (package mediaid).
func LocalKey(mediaID string) string { return "local/" + mediaID }

// RemoteKey names a cached copy of remote media.
func RemoteKey(serverName, mediaID string) string { return "remote/" + serverName + "/" + mediaID }

// ThumbnailKey names a thumbnail of the object at key.
func ThumbnailKey(key string, width, height int, method string) string {
	return "thumb/" + key + "/" + strconv.Itoa(width) + "x" + strconv.Itoa(height) + "-" + method
}

// classify wraps err with ErrNotFound, ErrTimeout or ErrUnavailable.
func classify(err error) error {
	if err == nil {
		return nil
	}
	switch code := errorCode(err); {
	case code == "NoSuchKey" || code == "NoSuchBucket":
		return errors.Join(ErrNotFound, err)
	case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
		return errors.Join(ErrTimeout, err)
	case errors.Is(err, context.Canceled):
		return err
	}
	return errors.Join(ErrUnavailable, err)
}

// errorCode is the S3 error code in err's chain ("" if none).
func errorCode(err error) string {
	var er minio.ErrorResponse
	if errors.As(err, &er) {
		return er.Code
	}
	return ""
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || strings.Contains(err.Error(), "timeout awaiting response headers")
}

func (s *Store) observe(op string, start time.Time, err error) error {
	s.m.latency.WithLabelValues(op).Observe(time.Since(start).Seconds())
	if err != nil && !errors.Is(err, context.Canceled) {
		if code := errorCode(err); code != "NoSuchKey" {
			s.m.errors.WithLabelValues(op).Inc()
		}
	}
	return classify(err)
}

// CreateTenant makes the tenant's bucket (bucket mode) or makes sure the shared bucket exists.
func (s *Store) CreateTenant(ctx context.Context, tenant string) error {
	bucket, _, err := s.Location(tenant)
	if err != nil {
		return err
	}
	return s.ensureBucket(ctx, bucket)
}

func (s *Store) ensureBucket(ctx context.Context, bucket string) error {
	s.mu.Lock()
	ok := s.ready[bucket]
	s.mu.Unlock()
	if ok {
		return nil
	}
	start := time.Now()
	exists, err := s.c.BucketExists(ctx, bucket)
	if err = s.observe("bucket_exists", start, err); err != nil {
		return fmt.Errorf("check bucket %s: %w", bucket, err)
	}
	if !exists {
		start = time.Now()
		err := s.c.MakeBucket(ctx, bucket, minio.MakeBucketOptions{Region: s.o.Region})
		if errorCode(err) == "BucketAlreadyOwnedByYou" {
			err = nil
		}
		if err = s.observe("make_bucket", start, err); err != nil {
			return fmt.Errorf("make bucket %s: %w", bucket, err)
		}
	}
	s.mu.Lock()
	s.ready[bucket] = true
	s.mu.Unlock()
	return nil
}

// DeleteTenant removes every object of the tenant and, in bucket mode, its bucket.
func (s *Store) DeleteTenant(ctx context.Context, tenant string) error {
	bucket, prefix, err := s.Location(tenant)
	if err != nil {
		return err
	}
	if err := s.removePrefix(ctx, bucket, prefix); err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil // no bucket: nothing stored
		}
		return err
	}
	s.mu.Lock()
	delete(s.ready, bucket)
	s.mu.Unlock()
	if s.o.Mode == ModePrefix {
		return nil
	}
	start := time.Now()
	err = s.c.RemoveBucket(ctx, bucket)
	if errorCode(err) == "NoSuchBucket" {
		err = nil
	}
	if err = s.observe("remove_bucket", start, err); err != nil {
		return fmt.Errorf("remove bucket %s: %w", bucket, err)
	}
	return nil
}

func (s *Store) removePrefix(ctx context.Context, bucket, prefix string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	var listErr error
	objects := make(chan minio.ObjectInfo)
	go func() {
		defer close(objects)
		for o := range s.c.ListObjects(ctx, bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
			if o.Err != nil {
				listErr = o.Err
				return
			}
			select {
			case objects <- o:
			case <-ctx.Done():
				return
			}
		}
	}()
	var rmErr error
	for e := range s.c.RemoveObjects(ctx, bucket, objects, minio.RemoveObjectsOptions{}) {
		rmErr = errors.Join(rmErr, fmt.Errorf("remove %s: %w", e.ObjectName, e.Err))
	}
	// Abandoned multipart uploads hold storage and keep a bucket from being removed.
	for u := range s.c.ListIncompleteUploads(ctx, bucket, prefix, true) {
		if u.Err == nil {
			rmErr = errors.Join(rmErr, s.c.RemoveIncompleteUpload(ctx, bucket, u.Key))
		}
	}
	if err := s.observe("remove_prefix", start, errors.Join(listErr, rmErr)); err != nil {
		return fmt.Errorf("empty %s/%s: %w", bucket, prefix, err)
	}
	return nil
}

// Put streams r into the object at key. size is the exact length, or -1 when unknown (then the
// upload is multipart with PartSize buffers). A failed Put leaves no object behind.
func (s *Store) Put(ctx context.Context, tenant, key string, r io.Reader, size int64, contentType string) (int64, error) {
	bucket, prefix, err := s.Location(tenant)
	if err != nil {
		return 0, err
	}
	if err := s.ensureBucket(ctx, bucket); err != nil {
		return 0, err
	}
	start := time.Now()
	info, err := s.c.PutObject(ctx, bucket, prefix+key, r, size, minio.PutObjectOptions{
		ContentType: contentType,
		PartSize:    s.o.PartSize,
	})
	if errorCode(err) == "NoSuchBucket" {
		// Deleted behind our back (another replica deleted the tenant): ask again next time.
		s.mu.Lock()
		delete(s.ready, bucket)
		s.mu.Unlock()
	}
	if err = s.observe("put", start, err); err != nil {
		// A single PUT that failed stored nothing, but the failure may have come after S3
		// committed the object (a lost answer): remove it.
		// minio-go aborts a failed multipart upload itself, but not when the abort is what
		// failed (a cancelled context): clear both here with a context of our own.
		rmCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		_ = s.c.RemoveIncompleteUpload(rmCtx, bucket, prefix+key)
		_ = s.c.RemoveObject(rmCtx, bucket, prefix+key, minio.RemoveObjectOptions{})
		cancel()
		return 0, fmt.Errorf("put %s/%s%s: %w", bucket, prefix, key, err)
	}
	if size >= 0 && info.Size != size {
		_ = s.Remove(context.WithoutCancel(ctx), tenant, key)
		return 0, fmt.Errorf("put %s/%s%s: stored %d of %d bytes: %w", bucket, prefix, key, info.Size, size, ErrUnavailable)
	}
	return info.Size, nil
}

// Object is an open object: a ReadSeeker suitable for http.ServeContent.
type Object struct {
	*minio.Object
	Size        int64
	ContentType string
	ModTime     time.Time
}

// Get opens the object at key after checking that it exists.
func (s *Store) Get(ctx context.Context, tenant, key string) (*Object, error) {
	bucket, prefix, err := s.Location(tenant)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	obj, err := s.c.GetObject(ctx, bucket, prefix+key, minio.GetObjectOptions{})
	if err != nil {
		return nil, fmt.Errorf("get %s/%s%s: %w", bucket, prefix, key, s.observe("get", start, err))
	}
	st, err := obj.Stat()
	if err = s.observe("get", start, err); err != nil {
		obj.Close()
		return nil, fmt.Errorf("get %s/%s%s: %w", bucket, prefix, key, err)
	}
	return &Object{Object: obj, Size: st.Size, ContentType: st.ContentType, ModTime: st.LastModified}, nil
}

// Remove deletes objects; missing objects are not an error.
func (s *Store) Remove(ctx context.Context, tenant string, keys ...string) error {
	bucket, prefix, err := s.Location(tenant)
	if err != nil {
		return err
	}
	var errs error
	for _, k := range keys {
		start := time.Now()
		err := s.c.RemoveObject(ctx, bucket, prefix+k, minio.RemoveObjectOptions{})
		if code := errorCode(err); code == "NoSuchKey" || code == "NoSuchBucket" {
			err = nil
		}
		if err = s.observe("remove", start, err); err != nil {
			errs = errors.Join(errs, fmt.Errorf("remove %s/%s%s: %w", bucket, prefix, k, err))
		}
	}
	return errs
}

// RemovePrefix deletes every object of tenant whose key starts with keyPrefix.
func (s *Store) RemovePrefix(ctx context.Context, tenant, keyPrefix string) error {
	bucket, prefix, err := s.Location(tenant)
	if err != nil {
		return err
	}
	err = s.removePrefix(ctx, bucket, prefix+keyPrefix)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	return err
}

// AbortStaleUploads aborts multipart uploads begun more than age ago in the buckets this store
// uses: uploads whose abort failed (S3 unreachable at the time) or whose process died.
func (s *Store) AbortStaleUploads(ctx context.Context, age time.Duration, now time.Time) (int, error) {
	var buckets []string
	if s.o.Mode == ModePrefix {
		buckets = []string{s.o.SharedBucket}
	} else {
		start := time.Now()
		all, err := s.c.ListBuckets(ctx)
		if err = s.observe("list_buckets", start, err); err != nil {
			return 0, fmt.Errorf("list buckets: %w", err)
		}
		for _, b := range all {
			if strings.HasPrefix(b.Name, s.o.BucketPrefix) {
				buckets = append(buckets, b.Name)
			}
		}
	}
	n := 0
	var errs error
	for _, b := range buckets {
		start := time.Now()
		for u := range s.c.ListIncompleteUploads(ctx, b, "", true) {
			if u.Err != nil {
				errs = errors.Join(errs, s.observe("list_uploads", start, u.Err))
				break
			}
			if u.Initiated.After(now.Add(-age)) {
				continue
			}
			if err := s.c.RemoveIncompleteUpload(ctx, b, u.Key); err != nil {
				errs = errors.Join(errs, s.observe("abort_upload", start, err))
				continue
			}
			n++
		}
	}
	if errs != nil {
		return n, fmt.Errorf("abort stale uploads: %w", errs)
	}
	return n, nil
}
