package media_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/atoll-matrix/atoll/sidecars/media/config"
	"github.com/atoll-matrix/atoll/sidecars/media/mediastore"
)

// blackholeS3 accepts connections, reads whatever is sent and never answers: a stalled S3.
func blackholeS3(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() { _, _ = io.Copy(io.Discard, c) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestS3Faults(t *testing.T) {
	for _, tc := range []struct {
		name       string
		endpoint   func(testing.TB) string
		wantStatus int
	}{
		{"unreachable", closedPort, http.StatusBadGateway},
		{"stalled", blackholeS3, http.StatusGatewayTimeout},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			_, existing := e.upload(hostA, aliceToken, "text/plain", "stored before the fault")
			// The sidecar restarts with S3 broken.
			e.cfg.S3.ResponseHeaderTimeout, e.cfg.S3.DialTimeout = 500*time.Millisecond, 500*time.Millisecond
			client, err := mediastore.NewClient(mediastore.ClientOptions{Endpoint: tc.endpoint(t), AccessKey: e.s3.AccessKey, SecretKey: e.s3.SecretKey,
				DialTimeout: 500 * time.Millisecond, ResponseHeaderTimeout: 500 * time.Millisecond, MaxRetries: 1})
			if err != nil {
				t.Fatal(err)
			}
			e.start(client)

			for _, size := range []int{100, 20 << 20} { // single PUT and multipart
				start := time.Now()
				status, body, _ := e.do(http.MethodPost, hostA, "/_matrix/media/v3/upload", aliceToken, strings.Repeat("x", size), nil)
				wantError(t, status, body, tc.wantStatus, "M_UNKNOWN")
				if d := time.Since(start); d > 15*time.Second {
					t.Fatalf("upload of %d bytes took %v to fail", size, d)
				}
			}
			status, body, _ := e.do(http.MethodGet, hostA, "/_matrix/client/v1/media/download/a.example/"+existing, aliceToken, "", nil)
			wantError(t, status, body, tc.wantStatus, "M_UNKNOWN")
			// Nothing half-done: one row, one object, no pending multipart uploads.
			if n := e.rowCount(tenantA, false); n != 1 {
				t.Fatalf("rows = %d, want 1", n)
			}
			if keys := e.objects(tenantA); len(keys) != 1 {
				t.Fatalf("objects = %v", keys)
			}
			bucket, _, _ := e.store.Location(tenantA)
			for u := range e.s3.Client.ListIncompleteUploads(context.Background(), bucket, "", true) {
				t.Fatalf("incomplete upload left: %+v", u)
			}
			if got := e.counter("atoll_media_s3_errors_total"); got == 0 {
				t.Fatal("atoll_media_s3_errors_total not counted")
			}
		})
	}
}

// slowReader hands out data in pieces, stopping at pause until released.
type slowReader struct {
	left    int64
	pauseAt int64
	paused  chan struct{}
	release chan struct{}
	once    sync.Once
}

func (r *slowReader) Read(p []byte) (int, error) {
	if r.left <= 0 {
		return 0, io.EOF
	}
	if r.left <= r.pauseAt {
		r.once.Do(func() { close(r.paused) })
		<-r.release
		return 0, io.ErrClosedPipe
	}
	n := min(int64(len(p)), r.left-r.pauseAt, 1<<20)
	for i := range p[:n] {
		p[i] = 'z'
	}
	r.left -= n
	return int(n), nil
}

func TestRestartDuringUpload(t *testing.T) {
	e := newEnv(t)
	acked := map[string]string{}
	for i := range 3 {
		content := fmt.Sprintf("acknowledged %d", i)
		_, id := e.upload(hostA, aliceToken, "text/plain", content)
		acked[id] = content
	}
	for _, size := range []int64{-1, 40 << 20} { // chunked and with Content-Length
		body := &slowReader{left: 40 << 20, pauseAt: 15 << 20, paused: make(chan struct{}), release: make(chan struct{})}
		errc := make(chan error, 1)
		go func() {
			req, _ := http.NewRequest(http.MethodPost, e.http.URL+"/_matrix/media/v3/upload", body)
			req.Host, req.ContentLength = hostA, size
			req.Header.Set("Authorization", "Bearer "+aliceToken)
			resp, err := http.DefaultClient.Do(req)
			if err == nil {
				resp.Body.Close()
				err = fmt.Errorf("upload answered %d", resp.StatusCode)
			}
			errc <- err
		}()
		<-body.paused
		// The sidecar dies mid-transfer: connections cut, server gone.
		e.http.CloseClientConnections()
		close(body.release)
		e.http.Close()
		if err := <-errc; err == nil || strings.Contains(err.Error(), "answered 200") {
			t.Fatalf("interrupted upload: %v", err)
		}
		// ... and starts again over the same database and buckets.
		client, err := mediastore.NewClient(mediastore.ClientOptions{Endpoint: e.s3.Endpoint, AccessKey: e.s3.AccessKey, SecretKey: e.s3.SecretKey, MaxRetries: 1})
		if err != nil {
			t.Fatal(err)
		}
		e.start(client)
	}
	for id, content := range acked {
		status, body, _ := e.do(http.MethodGet, hostA, "/_matrix/client/v1/media/download/a.example/"+id, aliceToken, "", nil)
		if status != 200 || string(body) != content {
			t.Fatalf("acknowledged %s after restart: %d %q", id, status, body)
		}
	}
	if n := e.rowCount(tenantA, false); n != 3 {
		t.Fatalf("rows = %d, want the 3 acknowledged", n)
	}
	// The interrupted uploads left nothing: no object, no pending multipart upload.
	bucket, _, _ := e.store.Location(tenantA)
	deadline := time.Now().Add(10 * time.Second)
	for {
		keys := e.objects(tenantA)
		var incomplete []string
		for u := range e.s3.Client.ListIncompleteUploads(context.Background(), bucket, "", true) {
			incomplete = append(incomplete, u.Key)
		}
		if len(keys) == 3 && len(incomplete) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("left behind: objects %v, incomplete uploads %v", keys, incomplete)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// rawRequest writes req verbatim and returns the status of the answer (0: connection closed).
func (e *env) rawRequest(raw string, closeWrite bool) int {
	e.t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(e.http.URL, "http://"))
	if err != nil {
		e.t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		e.t.Fatal(err)
	}
	if closeWrite {
		_ = c.(*net.TCPConn).CloseWrite()
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestBadInput(t *testing.T) {
	e := newEnv(t, withConfig(func(c *config.Config) { c.MaxUploadBytes = 1 << 20 }))
	head := "POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: a.example\r\nAuthorization: Bearer " + aliceToken + "\r\n"
	for _, tc := range []struct {
		name       string
		raw        string
		closeWrite bool
		wantStatus int
	}{
		{"body shorter than Content-Length", head + "Content-Length: 100\r\n\r\n0123456789", true, 400},
		{"truncated chunked body", head + "Transfer-Encoding: chunked\r\n\r\n10\r\n0123", true, 400},
		{"bad chunk size", head + "Transfer-Encoding: chunked\r\n\r\nzz\r\n0123\r\n0\r\n\r\n", false, 400},
		{"declared too large", head + "Content-Length: 2000000\r\n\r\n", false, 413},
		{"negative Content-Length", head + "Content-Length: -5\r\n\r\n", false, 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := e.rawRequest(tc.raw, tc.closeWrite)
			if got != tc.wantStatus && !(tc.closeWrite && got == 0) {
				t.Fatalf("status %d, want %d", got, tc.wantStatus)
			}
		})
	}
	// Chunked upload over the limit: refused once the limit is passed.
	resp := e.request(http.MethodPost, hostA, "/_matrix/media/v3/upload", aliceToken, io.LimitReader(zeros{}, 3<<20), -1, nil)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	wantError(t, resp.StatusCode, b, 413, "M_TOO_LARGE")
	// Longer body than Content-Length: exactly Content-Length bytes are the upload (the rest
	// is a malformed next request, which net/http refuses).
	if got := e.rawRequest(head+"Content-Length: 5\r\n\r\n0123456789", false); got != 200 {
		t.Fatalf("body longer than Content-Length: status %d", got)
	}
	refs, err := e.db.Older(context.Background(), false, time.Now().Add(time.Hour), 10)
	if err != nil || len(refs) != 1 {
		t.Fatalf("after bad uploads: rows %v, %v; want only the 5-byte upload", refs, err)
	}
	if m, err := e.db.Get(context.Background(), refs[0]); err != nil || m.Size != 5 {
		t.Fatalf("stored %d bytes, %v; want 5", m.Size, err)
	}
	if keys := e.objects(tenantA); len(keys) != 1 {
		t.Fatalf("objects %v; want only the 5-byte upload", keys)
	}
	var status int
	var body []byte

	for _, path := range []string{
		"/_matrix/client/v1/media/download/a.example/..",
		"/_matrix/client/v1/media/download/a.example/..%2F..%2Fetc%2Fpasswd",
		"/_matrix/client/v1/media/download/a.example/a%00b",
		"/_matrix/client/v1/media/download/a.example/a.b",
		"/_matrix/client/v1/media/download/a.example/%2e%2e",
		"/_matrix/client/v1/media/download/a.example/" + strings.Repeat("a", 300),
		"/_matrix/client/v1/media/download/a.example:99999/abc",
		"/_matrix/client/v1/media/download/%5B::1/abc",
		"/_matrix/client/v1/media/download/a.example/abc%2F..%2F..%2Fx",
		"/_matrix/client/v1/media/thumbnail/a.example/..?width=32&height=32",
		"/_matrix/client/v1/media/download/../../../etc/passwd",
	} {
		t.Run(path, func(t *testing.T) {
			status, body, _ := e.do(http.MethodGet, hostA, path, aliceToken, "", nil)
			switch status {
			case 404:
				if !strings.Contains(string(body), `"M_NOT_FOUND"`) && !strings.Contains(string(body), `"M_UNRECOGNIZED"`) {
					t.Fatalf("404 without a Matrix error: %s", body)
				}
			case 301, 400:
			default:
				t.Fatalf("status %d %s", status, body)
			}
		})
	}
	// Bad JSON to admin endpoints.
	status, body, _ = e.do(http.MethodPost, hostA, "/_atoll/media/v1/tenants/tenant_a/quarantine/media", e.hs.AdminToken, `{"mxc_uris": 5}`, nil)
	wantError(t, status, body, 400, "M_BAD_JSON")
	status, body, _ = e.do(http.MethodPost, hostA, "/_atoll/media/v1/tenants/tenant_a/quarantine/media", e.hs.AdminToken, `{"server_name":"a.example","mxc_uris":["mxc://a.example/../x"]}`, nil)
	wantError(t, status, body, 400, "M_INVALID_PARAM")
	status, body, _ = e.do(http.MethodPut, hostA, "/_atoll/media/v1/tenants/Bad..Tenant", e.hs.AdminToken, "", nil)
	wantError(t, status, body, 400, "M_INVALID_PARAM")
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// randomReader yields size deterministic pseudo-random bytes without holding them.
type randomReader struct {
	rng  *rand.ChaCha8
	left int64
}

func newRandomReader(seed byte, size int64) *randomReader {
	var s [32]byte
	s[0] = seed
	return &randomReader{rng: rand.NewChaCha8(s), left: size}
}

func (r *randomReader) Read(p []byte) (int, error) {
	if r.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	_, _ = r.rng.Read(p)
	r.left -= int64(len(p))
	return len(p), nil
}

// memWatch samples the Go heap and the process RSS until stopped.
type memWatch struct {
	base, peakHeap uint64
	peakRSS        uint64
	stop           chan struct{}
	done           chan struct{}
}

func rssBytes() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func watchMemory() *memWatch {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	w := &memWatch{base: ms.HeapAlloc, peakHeap: ms.HeapAlloc, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			w.peakHeap = max(w.peakHeap, ms.HeapAlloc)
			w.peakRSS = max(w.peakRSS, rssBytes())
			select {
			case <-w.stop:
				return
			case <-t.C:
			}
		}
	}()
	return w
}

func (w *memWatch) Stop() { close(w.stop); <-w.done }

func TestLargeTransferMemoryBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("100 MiB transfer skipped in -short mode")
	}
	const size = 100 << 20
	e := newEnv(t)
	sum := sha256.New()
	w := watchMemory()
	start := time.Now()
	resp := e.request(http.MethodPost, hostA, "/_matrix/media/v3/upload", aliceToken, io.TeeReader(newRandomReader(7, size), sum), size, nil)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("upload: %d %s", resp.StatusCode, body)
	}
	up := time.Since(start)
	id := strings.TrimSuffix(strings.SplitN(string(body), "a.example/", 2)[1], "\"}\n")
	start = time.Now()
	resp = e.request(http.MethodGet, hostA, "/_matrix/client/v1/media/download/a.example/"+id, aliceToken, nil, -1, nil)
	got := sha256.New()
	n, err := io.Copy(got, resp.Body)
	resp.Body.Close()
	down := time.Since(start)
	w.Stop()
	if err != nil || n != size || string(got.Sum(nil)) != string(sum.Sum(nil)) {
		t.Fatalf("download: %d bytes, %v, hash match %v", n, err, string(got.Sum(nil)) == string(sum.Sum(nil)))
	}
	growth := int64(w.peakHeap) - int64(w.base)
	t.Logf("100 MiB: upload %v (%.0f MiB/s), download %v (%.0f MiB/s); Go heap base %.1f MiB, peak %.1f MiB (growth %.1f MiB); peak RSS %.1f MiB",
		up, float64(size>>20)/up.Seconds(), down, float64(size>>20)/down.Seconds(),
		float64(w.base)/(1<<20), float64(w.peakHeap)/(1<<20), float64(growth)/(1<<20), float64(w.peakRSS)/(1<<20))
	if growth > 64<<20 {
		t.Fatalf("heap grew by %d MiB during a 100 MiB transfer", growth>>20)
	}
}

// stallProxy relays to S3 until stalled; while stalled it swallows what clients send and
// forwards nothing, so S3 neither gets the request nor answers.
type stallProxy struct {
	addr    string
	stalled atomic.Bool
}

func newStallProxy(t testing.TB, upstream string) *stallProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &stallProxy{addr: ln.Addr().String()}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	track := func(c net.Conn) {
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
	}
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", upstream)
			if err != nil {
				c.Close()
				continue
			}
			track(c)
			track(up)
			wg.Go(func() {
				buf := make([]byte, 64<<10)
				for {
					n, err := c.Read(buf)
					if n > 0 && !p.stalled.Load() {
						if _, werr := up.Write(buf[:n]); werr != nil {
							return
						}
					}
					if err != nil {
						up.Close()
						return
					}
				}
			})
			wg.Go(func() { _, _ = io.Copy(c, up); c.Close() })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return p
}

// stallAfter flips the proxy to stalled once n bytes were read from it.
type stallAfter struct {
	r io.Reader
	n int64
	p *stallProxy
}

func (s *stallAfter) Read(b []byte) (int, error) {
	if s.n <= 0 {
		s.p.stalled.Store(true)
	}
	n, err := s.r.Read(b)
	s.n -= int64(n)
	return n, err
}

func TestS3StallMidTransfer(t *testing.T) {
	e := newEnv(t, withConfig(func(c *config.Config) { c.Retention.AbandonedUploadAge = time.Nanosecond }))
	proxy := newStallProxy(t, e.s3.Endpoint)
	client, err := mediastore.NewClient(mediastore.ClientOptions{Endpoint: proxy.addr, AccessKey: e.s3.AccessKey, SecretKey: e.s3.SecretKey,
		DialTimeout: time.Second, ResponseHeaderTimeout: 500 * time.Millisecond, MaxRetries: 1})
	if err != nil {
		t.Fatal(err)
	}
	e.start(client)
	_, before := e.upload(hostA, aliceToken, "text/plain", "before the stall") // bucket known from here on

	for _, tc := range []struct {
		name      string
		size      int64
		stallAt   int64
		chunked   bool
		wantCodes []int
	}{
		{"single put stalls", 1 << 20, 0, false, []int{504}},
		{"multipart stalls after the first part", 40 << 20, 20 << 20, false, []int{504}},
		{"chunked multipart stalls", 40 << 20, 20 << 20, true, []int{504}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			proxy.stalled.Store(false)
			size := tc.size
			if tc.chunked {
				size = -1
			}
			start := time.Now()
			resp := e.request(http.MethodPost, hostA, "/_matrix/media/v3/upload", aliceToken,
				&stallAfter{r: io.LimitReader(zeros{}, tc.size), n: tc.stallAt, p: proxy}, size, nil)
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			wantError(t, resp.StatusCode, b, 504, "M_UNKNOWN")
			t.Logf("failed with %d after %v", resp.StatusCode, time.Since(start))
		})
	}
	status, body, _ := e.do(http.MethodGet, hostA, "/_matrix/client/v1/media/download/a.example/"+before, aliceToken, "", nil)
	wantError(t, status, body, 504, "M_UNKNOWN")

	// S3 recovers: the sidecar works again, and nothing of the failed uploads remains once
	// retention has aborted what S3 could not be told to abort while stalled.
	proxy.stalled.Store(false)
	status, body, _ = e.do(http.MethodGet, hostA, "/_matrix/client/v1/media/download/a.example/"+before, aliceToken, "", nil)
	if status != 200 || string(body) != "before the stall" {
		t.Fatalf("after recovery: %d %s", status, body)
	}
	status, body, _ = e.do(http.MethodPost, hostA, "/_atoll/media/v1/retention/run", e.hs.AdminToken, "", nil)
	if status != 200 {
		t.Fatalf("retention: %d %s", status, body)
	}
	t.Logf("retention after the stall: %s", body)
	if n := e.rowCount(tenantA, false); n != 1 {
		t.Fatalf("rows = %d, want 1", n)
	}
	if keys := e.objects(tenantA); len(keys) != 1 {
		t.Fatalf("objects = %v, want only the upload from before the stall", keys)
	}
	bucket, _, _ := e.store.Location(tenantA)
	for u := range e.s3.Client.ListIncompleteUploads(context.Background(), bucket, "", true) {
		t.Fatalf("incomplete upload left: %+v", u)
	}
}
