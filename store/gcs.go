package store

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"cloud.google.com/go/storage"
	"github.com/googleapis/gax-go/v2"
	"go.uber.org/zap"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/iterator"
	"google.golang.org/api/option"
)

// Defaults for GCS.
const (
	// DefaultGCSChunkSize is the chunk size of resumable uploads; objects
	// larger than one chunk go up in several requests, each retried alone.
	DefaultGCSChunkSize = 16 << 20
	// DefaultGCSMaxAttempts is how many times a request is tried (first try
	// included) unless the URL says otherwise. The client library's own
	// default is to retry until the context ends.
	DefaultGCSMaxAttempts = 5
)

var gcsParams = []string{"endpoint", "max_attempts", "max_backoff"}

var crc32cTable = crc32.MakeTable(crc32.Castagnoli)

// GCS is a Store in a Google Cloud Storage bucket: gs://bucket/prefix.
//
// Credentials are Application Default Credentials
// (GOOGLE_APPLICATION_CREDENTIALS, gcloud's application-default login, the
// metadata server). STORAGE_EMULATOR_HOST is honoured, and then no
// credentials are used. URL query parameters:
//
//	endpoint=http://127.0.0.1:4443   like STORAGE_EMULATOR_HOST, for this store only
//	max_attempts=5                   tries per request, first included
//	max_backoff=30s                  cap on the wait between tries
//
// Uploads are resumable, in ChunkSize chunks, and carry the object's CRC32C
// so that the server refuses a corrupted upload; reads of whole objects are
// checked against the stored CRC32C by the client library. Every request,
// uploads included, is retried on 429, 5xx and connection errors (a Put is
// idempotent here: it writes the same bytes again).
type GCS struct {
	// ChunkSize is the resumable upload chunk size (DefaultGCSChunkSize when
	// zero, rounded up to a multiple of 256 KiB by the library). Each Put
	// buffers one chunk. Set it before the first Put.
	ChunkSize int

	client      *storage.Client
	retry       []storage.RetryOption
	maxAttempts int
	bucketName  string
	prefix      string // "" or ends in "/"
	endpoint    string // for messages
	emulated    bool
	url         string // redacted
}

func openGCS(ctx context.Context, u *url.URL, log *zap.Logger) (Store, error) {
	if log == nil {
		log = zap.NewNop()
	}
	redacted := Redact(u.String())
	fail := func(format string, a ...any) error {
		return fmt.Errorf("store URL %q: %s", redacted, fmt.Sprintf(format, a...))
	}
	if u.Host == "" {
		return nil, fail("missing bucket (expected gs://bucket/prefix)")
	}
	q := u.Query()
	for k := range q {
		if !contains(gcsParams, k) {
			return nil, fail("unknown parameter %q (known: %s)", k, strings.Join(gcsParams, ", "))
		}
	}
	g := &GCS{bucketName: u.Host, prefix: cleanPrefix(u.Path), url: redacted, endpoint: "https://storage.googleapis.com"}

	maxAttempts := DefaultGCSMaxAttempts
	if v := q.Get("max_attempts"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return nil, fail("max_attempts=%q: want a positive integer", v)
		}
		maxAttempts = n
	}
	backoff := gax.Backoff{Initial: time.Second, Max: 30 * time.Second, Multiplier: 2}
	if v := q.Get("max_backoff"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return nil, fail("max_backoff=%q: want a duration such as 5s", v)
		}
		backoff.Max = d
		backoff.Initial = min(backoff.Initial, d)
	}

	var opts []option.ClientOption
	if ep := q.Get("endpoint"); ep != "" {
		if !strings.Contains(ep, "://") {
			ep = "http://" + ep // as STORAGE_EMULATOR_HOST
		}
		eu, err := url.Parse(ep)
		if err != nil || eu.Host == "" || (eu.Scheme != "http" && eu.Scheme != "https") {
			return nil, fail("endpoint %q is not an http(s) URL", q.Get("endpoint"))
		}
		g.endpoint = eu.Scheme + "://" + eu.Host
		g.emulated = true
		opts = append(opts,
			option.WithEndpoint(g.endpoint+"/storage/v1/"),
			option.WithoutAuthentication(),
		)
	} else if h := os.Getenv("STORAGE_EMULATOR_HOST"); h != "" {
		g.endpoint = h
		if !strings.Contains(h, "://") {
			g.endpoint = "http://" + h
		}
		g.emulated = true
	}
	if g.emulated {
		// No telemetry export towards Google from tests and emulators.
		opts = append(opts, storage.WithDisabledClientMetrics())
	}
	client, err := storage.NewClient(ctx, opts...)
	if err != nil {
		return nil, fail("no usable Google credentials (set GOOGLE_APPLICATION_CREDENTIALS or run `gcloud auth application-default login`): %v", err)
	}
	// Retry options go on each handle, never on the client: a handle's
	// Retryer merges its options into the parent's configuration in place.
	g.retry = []storage.RetryOption{
		storage.WithPolicy(storage.RetryAlways),
		storage.WithMaxAttempts(maxAttempts),
		storage.WithBackoff(backoff),
	}
	g.maxAttempts = maxAttempts
	g.client = client
	log.Debug("opened GCS store", zap.String("url", g.url), zap.String("endpoint", g.endpoint), zap.Bool("emulator", g.emulated))
	return g, nil
}

// URL implements Store.
func (g *GCS) URL() string { return g.url }

// Check implements Store: the bucket's metadata must be readable.
func (g *GCS) Check(ctx context.Context) error {
	_, err := g.bucket().Attrs(ctx)
	if err == nil {
		return nil
	}
	var gerr *googleapi.Error
	var netErr net.Error
	var urlErr *url.Error
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("store %s: check bucket %q at %s: %w", g.url, g.bucketName, g.endpoint, err)
	case errors.Is(err, storage.ErrBucketNotExist):
		return fmt.Errorf("store %s: bucket %q does not exist at %s: create it or fix the store URL: %w", g.url, g.bucketName, g.endpoint, err)
	case errors.As(err, &gerr) && (gerr.Code == http.StatusUnauthorized || gerr.Code == http.StatusForbidden):
		return fmt.Errorf("store %s: credentials rejected by %s (HTTP %d): check GOOGLE_APPLICATION_CREDENTIALS and that the account may use bucket %q (roles/storage.objectAdmin): %w", g.url, g.endpoint, gerr.Code, g.bucketName, err)
	case errors.As(err, &gerr) && gerr.Code == http.StatusNotFound:
		return fmt.Errorf("store %s: bucket %q does not exist at %s: create it or fix the store URL: %w", g.url, g.bucketName, g.endpoint, err)
	case errors.As(err, &urlErr) || errors.As(err, &netErr):
		return fmt.Errorf("store %s: cannot reach %s: %w", g.url, g.endpoint, err)
	default:
		return fmt.Errorf("store %s: check bucket %q at %s: %w", g.url, g.bucketName, g.endpoint, err)
	}
}

// bucket returns a handle with a retry configuration of its own.
func (g *GCS) bucket() *storage.BucketHandle {
	return g.client.Bucket(g.bucketName).Retryer(g.retry...)
}

// object returns a handle with a retry configuration of its own, extra
// options included.
func (g *GCS) object(key string, extra ...storage.RetryOption) *storage.ObjectHandle {
	return g.client.Bucket(g.bucketName).Object(g.prefix + key).Retryer(append(slices.Clip(g.retry), extra...)...)
}

// Put implements Store.
func (g *GCS) Put(ctx context.Context, key string, r io.ReadSeeker, size int64) error {
	if err := checkObjectKey(key); err != nil {
		return err
	}
	if size < 0 {
		return fmt.Errorf("put %s to %s: negative size %d", key, g.url, size)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("put %s to %s: %w", key, g.url, err)
	}
	if err := g.put(ctx, key, r, size); err != nil {
		return fmt.Errorf("put %s to %s: %w", key, g.url, err)
	}
	return nil
}

func (g *GCS) put(ctx context.Context, key string, r io.ReadSeeker, size int64) error {
	start, err := r.Seek(0, io.SeekCurrent)
	if err != nil {
		return err
	}
	body := newSectionSeeker(r, start, size)
	crc := crc32.New(crc32cTable)
	if n, err := io.Copy(crc, body); err != nil {
		return err
	} else if n != size {
		return fmt.Errorf("read %d bytes, expected %d", n, size)
	}
	if _, err := body.Seek(0, io.SeekStart); err != nil {
		return err
	}

	// Uploads ignore WithMaxAttempts (the library retries each chunk until
	// ChunkRetryDeadline); count failures per chunk here instead.
	var failures atomic.Int32
	shouldRetry := func(err error) bool {
		return storage.ShouldRetry(err) && int(failures.Add(1)) < g.maxAttempts
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w := g.object(key, storage.WithErrorFunc(shouldRetry)).NewWriter(wctx)
	w.ProgressFunc = func(int64) { failures.Store(0) } // after each chunk
	chunk := int64(g.ChunkSize)
	if chunk <= 0 {
		chunk = DefaultGCSChunkSize
	}
	// The writer buffers a whole chunk: no bigger than the object needs
	// (one 256 KiB quantum past it, so that it fits in a single request).
	const quantum = 256 << 10
	w.ChunkSize = int(min(chunk, (size/quantum+1)*quantum))
	w.ContentType = "application/octet-stream"
	w.CRC32C = crc.Sum32()
	w.SendCRC32C = true
	if _, err := io.Copy(w, body); err != nil {
		cancel() // makes Close give up the upload
		_ = w.Close()
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	// GCS refuses an upload whose declared CRC32C does not match, but not
	// every server implementing the API does (fake-gcs-server forgets it
	// after the first chunk of a resumable upload). An object whose stored
	// checksum matches corrupted bytes would pass every later read check,
	// so remove it.
	// (A zero CRC32C in the answer means the server did not report one.)
	if a := w.Attrs(); a != nil && a.CRC32C != 0 && a.CRC32C != w.CRC32C {
		derr := g.object(key).If(storage.Conditions{GenerationMatch: a.Generation}).Delete(context.WithoutCancel(ctx))
		return fmt.Errorf("server stored CRC32C %08x, sent %08x: upload corrupted in transit (corrupt copy deleted: %v)", a.CRC32C, w.CRC32C, derr == nil)
	}
	return nil
}

// Get implements Store.
func (g *GCS) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	if err := checkObjectKey(key); err != nil {
		return nil, err
	}
	rc, err := g.object(key).NewReader(ctx)
	if errors.Is(err, storage.ErrObjectNotExist) {
		return nil, fmt.Errorf("get %s from %s: %w", key, g.url, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get %s from %s: %w", key, g.url, err)
	}
	return rc, nil
}

// List implements Store.
func (g *GCS) List(ctx context.Context, prefix string) ([]Object, error) {
	q := &storage.Query{Prefix: g.prefix + prefix}
	if err := q.SetAttrSelection([]string{"Name", "Size", "Updated"}); err != nil {
		return nil, err
	}
	it := g.bucket().Objects(ctx, q)
	it.PageInfo().MaxSize = 1000 // GCS's own maximum; emulators may default to everything
	var out []Object
	for {
		a, err := it.Next()
		if err == iterator.Done {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("list %s in %s: %w", prefix, g.url, err)
		}
		key := strings.TrimPrefix(a.Name, g.prefix)
		if key == "" || strings.HasSuffix(key, "/") {
			continue // "directory" placeholders made by consoles
		}
		out = append(out, Object{Key: key, Size: a.Size, Modified: a.Updated})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

// Delete implements Store.
func (g *GCS) Delete(ctx context.Context, key string) error {
	if err := checkObjectKey(key); err != nil {
		return err
	}
	err := g.object(key).Delete(ctx)
	if err != nil && !errors.Is(err, storage.ErrObjectNotExist) {
		return fmt.Errorf("delete %s from %s: %w", key, g.url, err)
	}
	return nil
}

// Close implements Store.
func (g *GCS) Close() error { return g.client.Close() }
