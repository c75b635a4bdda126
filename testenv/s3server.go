package testenv

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
)

// Defaults of S3Options.
const (
	// S3DefaultAccessKeyID is the access key StartS3 accepts unless
	// S3Options says otherwise.
	S3DefaultAccessKeyID = "wayback-test"
	// S3DefaultSecretAccessKey is the matching secret key.
	S3DefaultSecretAccessKey = "wayback-test-secret"
	// S3Region is the region in the URLs S3Server hands out.
	S3Region = "us-east-1"
)

// S3Options configures StartS3.
type S3Options struct {
	// AccessKeyID and SecretAccessKey are the credentials URL embeds; they
	// default to S3DefaultAccessKeyID and S3DefaultSecretAccessKey. The
	// server rejects requests signed with another access key ID with 403
	// InvalidAccessKeyId. (gofakes3 itself checks no credentials, and the
	// signature is not verified: only the key ID is compared.)
	AccessKeyID     string
	SecretAccessKey string
	// Buckets are created before StartS3 returns.
	Buckets []string
	// Faults controls fault injection; StartS3 makes a new controller when
	// it is nil.
	Faults *Faults
	// NoIntegrityCheck turns off gofakes3's Content-MD5 verification.
	NoIntegrityCheck bool
	// Listen is the address to listen on; "" is 127.0.0.1 on a free port.
	// cmd/wayback-teststores sets it to serve other containers.
	Listen string
}

// S3Server is an in-process S3 server (gofakes3 with the in-memory backend)
// on a 127.0.0.1 listener, behind a fault injector.
type S3Server struct {
	// Faults injects failures into every request the server receives.
	Faults *Faults

	accessKey, secretKey string
	backend              *s3mem.Backend
	srv                  *httptest.Server
	stop                 chan struct{} // closed by Close: ends hangs
	closeOnce            sync.Once
}

// StartS3 starts an S3 server. Close it when done.
func StartS3(ctx context.Context, opts S3Options) (*S3Server, error) {
	s := &S3Server{
		Faults:    opts.Faults,
		accessKey: opts.AccessKeyID,
		secretKey: opts.SecretAccessKey,
		backend:   s3mem.New(),
		stop:      make(chan struct{}),
	}
	if s.Faults == nil {
		s.Faults = NewFaults()
	}
	if s.accessKey == "" {
		s.accessKey = S3DefaultAccessKeyID
	}
	if s.secretKey == "" {
		s.secretKey = S3DefaultSecretAccessKey
	}
	fake := gofakes3.New(s.backend, gofakes3.WithIntegrityCheck(!opts.NoIntegrityCheck))
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", cmp.Or(opts.Listen, "127.0.0.1:0"))
	if err != nil {
		return nil, fmt.Errorf("testenv: S3 listener: %w", err)
	}
	s.srv = httptest.NewUnstartedServer(s.Faults.wrap(s.checkAccessKey(fake.Server()), flavorS3, s.stop))
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

// NewS3 starts an S3 server for a test and closes it in t.Cleanup. It fails
// the test if the server cannot start.
func NewS3(t testing.TB) *S3Server {
	t.Helper()
	s, err := StartS3(context.Background(), S3Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// checkAccessKey answers 403 InvalidAccessKeyId to requests whose SigV4
// credential scope names another access key ID (or none).
func (s *S3Server) checkAccessKey(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if id := sigV4AccessKeyID(r); id != s.accessKey {
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprint(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>InvalidAccessKeyId</Code>`+
				`<Message>The AWS Access Key Id you provided does not exist in our records.</Message></Error>`)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// sigV4AccessKeyID extracts the access key ID from an Authorization header
// ("AWS4-HMAC-SHA256 Credential=AKID/date/region/s3/aws4_request, ...") or
// a presigned URL's X-Amz-Credential.
func sigV4AccessKeyID(r *http.Request) string {
	cred := r.URL.Query().Get("X-Amz-Credential")
	if auth := r.Header.Get("Authorization"); auth != "" {
		_, rest, ok := strings.Cut(auth, "Credential=")
		if !ok {
			return ""
		}
		cred, _, _ = strings.Cut(rest, ",")
	}
	id, _, _ := strings.Cut(strings.TrimSpace(cred), "/")
	return id
}

// Endpoint returns the server's base URL, http://127.0.0.1:PORT.
func (s *S3Server) Endpoint() string { return s.srv.URL }

// URL returns the store URL of prefix in bucket on this server:
// s3://bucket/prefix?access_key_id=..&endpoint=http://127.0.0.1:PORT&path_style=true&region=us-east-1&secret_access_key=..
// Tests may append more parameters, such as "&max_attempts=2".
// The credentials are in the URL so that tests need no environment
// variables; store.Redact and the store's URL method hide them.
func (s *S3Server) URL(bucket, prefix string) string {
	q := url.Values{}
	q.Set("endpoint", s.srv.URL)
	q.Set("region", S3Region)
	q.Set("path_style", "true")
	q.Set("access_key_id", s.accessKey)
	q.Set("secret_access_key", s.secretKey)
	u := url.URL{Scheme: "s3", Host: bucket, Path: "/" + strings.Trim(prefix, "/"), RawQuery: q.Encode()}
	return u.String()
}

// AccessKeyID returns the access key ID the server accepts.
func (s *S3Server) AccessKeyID() string { return s.accessKey }

// SecretAccessKey returns the secret key that goes with AccessKeyID.
func (s *S3Server) SecretAccessKey() string { return s.secretKey }

// CreateBucket creates a bucket; creating an existing bucket is not an error.
func (s *S3Server) CreateBucket(_ context.Context, name string) error {
	err := s.backend.CreateBucket(name)
	if err != nil && !gofakes3.HasErrorCode(err, gofakes3.ErrBucketAlreadyExists) {
		return fmt.Errorf("testenv: create S3 bucket %q: %w", name, err)
	}
	return nil
}

// ReadObject returns an object's stored bytes, bypassing the fault
// injector. key is the full object name, store prefix included.
func (s *S3Server) ReadObject(_ context.Context, bucket, key string) ([]byte, error) {
	obj, err := s.backend.GetObject(bucket, key, nil)
	if err != nil {
		return nil, fmt.Errorf("testenv: read s3://%s/%s: %w", bucket, key, err)
	}
	defer obj.Contents.Close()
	return io.ReadAll(obj.Contents)
}

// CorruptObject rewrites an object in place with its middle byte inverted,
// bypassing the fault injector, as bit rot would. gofakes3 keeps the
// object's metadata, including the x-amz-checksum-crc32c header the upload
// carried, so the SDK fails a whole-object read of a single-part upload
// with a checksum mismatch; multipart objects (no whole-object checksum)
// read back altered without error. key is the full object name, store
// prefix included.
func (s *S3Server) CorruptObject(ctx context.Context, bucket, key string) error {
	obj, err := s.backend.GetObject(bucket, key, nil)
	if err != nil {
		return fmt.Errorf("testenv: corrupt s3://%s/%s: %w", bucket, key, err)
	}
	data, err := io.ReadAll(obj.Contents)
	obj.Contents.Close()
	if err != nil {
		return err
	}
	if len(data) == 0 {
		return fmt.Errorf("testenv: corrupt s3://%s/%s: object is empty", bucket, key)
	}
	data[len(data)/2] ^= 0xff
	_, err = s.backend.PutObject(bucket, key, obj.Metadata, bytes.NewReader(data), int64(len(data)), nil)
	return err
}

// DeleteObject removes an object, bypassing the fault injector. Deleting a
// missing object is not an error. key is the full object name.
func (s *S3Server) DeleteObject(_ context.Context, bucket, key string) error {
	_, err := s.backend.DeleteObject(bucket, key)
	if err != nil && !errors.Is(err, gofakes3.ErrNoSuchKey) && !gofakes3.HasErrorCode(err, gofakes3.ErrNoSuchKey) {
		return fmt.Errorf("testenv: delete s3://%s/%s: %w", bucket, key, err)
	}
	return nil
}

// Close releases requests held by FaultHang and stops the server. It is
// safe to call more than once.
func (s *S3Server) Close() {
	s.closeOnce.Do(func() {
		close(s.stop)
		s.srv.CloseClientConnections()
		s.srv.Close()
	})
}
