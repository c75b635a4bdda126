package testenv

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/fsouza/fake-gcs-server/fakestorage"
)

// GCSOptions configures StartGCS.
type GCSOptions struct {
	// Buckets are created before StartGCS returns.
	Buckets []string
	// Faults controls fault injection; StartGCS makes a new controller
	// when it is nil.
	Faults *Faults
	// Listen is the address to listen on; "" is 127.0.0.1 on a free port.
	// With an address of its own the server answers under any host name
	// (a container's service name as well as a published port), which
	// fake-gcs-server alone does not: see hostAgnostic.
	Listen string
}

// GCSServer is an in-process Google Cloud Storage server (fake-gcs-server,
// in memory) on a 127.0.0.1 listener, behind a fault injector. It serves the
// JSON API, resumable uploads and XML reads, and checks the CRC32C and MD5
// that clients declare for uploads. It checks no credentials.
type GCSServer struct {
	// Faults injects failures into every request the server receives.
	Faults *Faults

	fake      *fakestorage.Server
	srv       *httptest.Server
	stop      chan struct{} // closed by Close: ends hangs
	closeOnce sync.Once
}

// StartGCS starts a GCS server. Close it when done.
func StartGCS(ctx context.Context, opts GCSOptions) (*GCSServer, error) {
	s := &GCSServer{Faults: opts.Faults, stop: make(chan struct{})}
	if s.Faults == nil {
		s.Faults = NewFaults()
	}
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", cmp.Or(opts.Listen, "127.0.0.1:0"))
	if err != nil {
		return nil, fmt.Errorf("testenv: GCS listener: %w", err)
	}
	addr := ln.Addr().String()
	// The Go client reads objects through the XML API at
	// http://HOST:PORT/bucket/object; fake-gcs-server routes that form only
	// when PublicHost is the address the client uses.
	s.fake, err = fakestorage.NewServerWithOptions(fakestorage.Options{
		NoListener:  true,
		Scheme:      "http",
		PublicHost:  addr,
		ExternalURL: "http://" + addr,
	})
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("testenv: GCS server: %w", err)
	}
	var h http.Handler = s.fake.HTTPHandler()
	if opts.Listen != "" {
		h = hostAgnostic(h, addr)
	}
	s.srv = httptest.NewUnstartedServer(s.Faults.wrap(h, flavorGCS, s.stop))
	s.srv.Listener.Close()
	s.srv.Listener = ln
	s.srv.Start()
	for _, b := range opts.Buckets {
		if err := s.CreateBucket(ctx, b); err != nil {
			s.Close()
			return nil, err
		}
	}
	return s, nil
}

// NewGCS starts a GCS server for a test and closes it in t.Cleanup. It
// fails the test if the server cannot start.
func NewGCS(t testing.TB) *GCSServer {
	t.Helper()
	s, err := StartGCS(context.Background(), GCSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// Endpoint returns the server's base URL, http://127.0.0.1:PORT; it is
// also a valid STORAGE_EMULATOR_HOST value.
func (s *GCSServer) Endpoint() string { return s.srv.URL }

// URL returns the store URL of prefix in bucket on this server:
// gs://bucket/prefix?endpoint=http://127.0.0.1:PORT. Tests may append more
// parameters, such as "&max_attempts=2".
func (s *GCSServer) URL(bucket, prefix string) string {
	q := url.Values{}
	q.Set("endpoint", s.srv.URL)
	u := url.URL{Scheme: "gs", Host: bucket, Path: "/" + strings.Trim(prefix, "/"), RawQuery: q.Encode()}
	return u.String()
}

// CreateBucket creates a bucket; creating an existing bucket is not an error.
func (s *GCSServer) CreateBucket(_ context.Context, name string) (err error) {
	defer func() {
		if p := recover(); p != nil { // fakestorage panics on backend errors
			err = fmt.Errorf("testenv: create GCS bucket %q: %v", name, p)
		}
	}()
	s.fake.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: name})
	return nil
}

// ReadObject returns an object's stored bytes, bypassing the fault
// injector. key is the full object name, store prefix included.
func (s *GCSServer) ReadObject(_ context.Context, bucket, key string) ([]byte, error) {
	obj, err := s.fake.GetObject(bucket, key)
	if err != nil {
		return nil, fmt.Errorf("testenv: read gs://%s/%s: %w", bucket, key, err)
	}
	return obj.Content, nil
}

// CorruptObject inverts the middle byte of a stored object, bypassing the
// fault injector, and keeps its stored CRC32C and MD5, as bit rot would.
// The Go client then fails a whole-object read with a CRC mismatch.
// key is the full object name, store prefix included.
func (s *GCSServer) CorruptObject(_ context.Context, bucket, key string) error {
	b := s.fake.Backend()
	obj, err := b.GetObject(bucket, key)
	if err != nil {
		return fmt.Errorf("testenv: corrupt gs://%s/%s: %w", bucket, key, err)
	}
	data, err := io.ReadAll(obj.Content)
	obj.Content.Close()
	if err != nil {
		return err
	}
	if len(data) == 0 {
		return fmt.Errorf("testenv: corrupt gs://%s/%s: object is empty", bucket, key)
	}
	data[len(data)/2] ^= 0xff
	obj.Content = nopReadSeekCloser{strings.NewReader(string(data))}
	// Same generation: an in-place rewrite of the stored bytes, checksums
	// left as they were.
	if _, err := b.CreateObject(obj, anyGeneration{}); err != nil {
		return fmt.Errorf("testenv: corrupt gs://%s/%s: %w", bucket, key, err)
	}
	return nil
}

// anyGeneration satisfies fake-gcs-server's backend preconditions.
type anyGeneration struct{}

func (anyGeneration) ConditionsMet(int64) bool { return true }

type nopReadSeekCloser struct{ io.ReadSeeker }

func (nopReadSeekCloser) Close() error { return nil }

// DeleteObject removes an object, bypassing the fault injector. Deleting a
// missing object is not an error. key is the full object name.
func (s *GCSServer) DeleteObject(_ context.Context, bucket, key string) error {
	if _, err := s.fake.GetObject(bucket, key); err != nil {
		return nil
	}
	if err := s.fake.Backend().DeleteObject(bucket, key); err != nil {
		return fmt.Errorf("testenv: delete gs://%s/%s: %w", bucket, key, err)
	}
	return nil
}

// Close releases requests held by FaultHang and stops the server. It is
// safe to call more than once.
func (s *GCSServer) Close() {
	s.closeOnce.Do(func() {
		close(s.stop)
		s.srv.CloseClientConnections()
		s.srv.Close()
		s.fake.Stop()
	})
}

// hostAgnostic lets fake-gcs-server, which routes XML-API reads
// (http://HOST/bucket/object) only when HOST is its PublicHost, serve
// clients that reach it under other names: a container's service name
// inside a Docker network and 127.0.0.1:PORT through a published port.
// Each request is handed on with Host set to publicHost, and Location
// headers (resumable uploads) are rewritten back to the name the client
// used.
func hostAgnostic(h http.Handler, publicHost string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked := r.Host
		r.Host = publicHost
		h.ServeHTTP(&locationRewriter{ResponseWriter: w, from: "http://" + publicHost, to: "http://" + asked}, r)
	})
}

type locationRewriter struct {
	http.ResponseWriter
	from, to string
}

func (l *locationRewriter) WriteHeader(code int) {
	if loc := l.Header().Get("Location"); strings.HasPrefix(loc, l.from) {
		l.Header().Set("Location", l.to+strings.TrimPrefix(loc, l.from))
	}
	l.ResponseWriter.WriteHeader(code)
}

func (l *locationRewriter) Write(b []byte) (int, error) {
	if loc := l.Header().Get("Location"); strings.HasPrefix(loc, l.from) {
		l.Header().Set("Location", l.to+strings.TrimPrefix(loc, l.from))
	}
	return l.ResponseWriter.Write(b)
}

func (l *locationRewriter) Flush() {
	if f, ok := l.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
