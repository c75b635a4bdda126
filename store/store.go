// Package store is the object-store abstraction wayback archives into.
//
// Every backend (file://, s3://, gs://) implements Store. The archive format
// (docs/FORMAT.md) only needs whole-object put/get, ordered listing and
// delete, so any store that gives atomic object visibility is enough; that is
// what lets "any one store" restore on its own (DESIGN invariant 4).
package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
)

// ErrNotFound is returned (wrapped) by Get when the object does not exist.
var ErrNotFound = errors.New("object not found")

// Object describes one stored object.
type Object struct {
	Key      string    // key relative to the store's prefix, '/'-separated
	Size     int64     // bytes
	Modified time.Time // last modification, as the backend reports it
}

// Store is one archive location. Implementations must be safe for concurrent
// use by multiple goroutines.
type Store interface {
	// URL is the store's location with any credentials removed, for logs and
	// error messages.
	URL() string
	// Check verifies, before any data is touched, that the store is reachable,
	// the bucket or directory exists and the credentials work. Its error says
	// what to fix.
	Check(ctx context.Context) error
	// Put writes an object atomically: a reader sees the previous object, or
	// the whole new one, never a part. size is the exact length of r. r is a
	// ReadSeeker so that backends can retry and compute checksums.
	Put(ctx context.Context, key string, r io.ReadSeeker, size int64) error
	// Get opens an object for reading. A missing object gives an error that
	// wraps ErrNotFound.
	Get(ctx context.Context, key string) (io.ReadCloser, error)
	// List returns the objects whose key starts with prefix, sorted by key.
	List(ctx context.Context, prefix string) ([]Object, error)
	// Delete removes an object; deleting a missing object is not an error,
	// so that an interrupted expiry can simply be run again.
	Delete(ctx context.Context, key string) error
	// Close releases the backend's resources.
	Close() error
}

// CheckTimeout bounds a start-up Check. A store that does not answer at
// all (a paused server, a black-holed route) would otherwise block the
// start without a word; bounded, the start fails naming the store, and a
// supervisor retries it.
const CheckTimeout = 30 * time.Second

// CheckWithin runs s.Check, giving up after d with an error that names
// the store and says it did not answer.
func CheckWithin(ctx context.Context, s Store, d time.Duration) error {
	cctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	err := s.Check(cctx)
	if err != nil && ctx.Err() == nil && errors.Is(cctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("store %s did not answer within %s: check that it is up and reachable from here (endpoint, network, firewall): %w", s.URL(), d, err)
	}
	return err
}

// CheckAll runs CheckWithin on every store at once, so that a start with
// several unreachable stores waits d once, not once per store. It returns
// each store's error, nil for the stores that answered.
func CheckAll(ctx context.Context, stores []Store, d time.Duration) []error {
	errs := make([]error, len(stores))
	var wg sync.WaitGroup
	for i, s := range stores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = CheckWithin(ctx, s, d)
		}()
	}
	wg.Wait()
	return errs
}

// UnreachableError says that fewer stores answered at start than must hold
// each object (min_copies), so nothing was written. Retrying later may
// succeed: it is not a configuration error.
type UnreachableError struct {
	// Required is min_copies; Answered how many stores answered.
	Required, Answered int
	// URLs and Errs name each store that did not answer and why.
	URLs []string
	Errs []error
}

func (e *UnreachableError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d of %d stores answered but min_copies is %d, so nothing was written: %s", e.Answered, e.Answered+len(e.URLs), e.Required, Failures(e.URLs, e.Errs))
	b.WriteString(". Start again when enough stores answer (a supervisor restart retries), or lower min_copies to ship to the others meanwhile (the missing store is backfilled when it answers)")
	return b.String()
}

// Unwrap returns the stores' errors.
func (e *UnreachableError) Unwrap() []error { return e.Errs }

// Failures says on one line which stores failed and why: "store URL:
// error; ...", without naming a store twice when its error already starts
// with it.
func Failures(urls []string, errs []error) string {
	parts := make([]string, len(urls))
	for i, u := range urls {
		msg := errs[i].Error()
		if !strings.HasPrefix(msg, "store "+u) {
			msg = "store " + u + ": " + msg
		}
		parts[i] = msg
	}
	return strings.Join(parts, "; ")
}

// Opener builds a Store from a parsed URL. Backends register themselves in
// openers so that this file does not import every cloud SDK's types.
type Opener func(ctx context.Context, u *url.URL, log *zap.Logger) (Store, error)

var openers = map[string]Opener{
	"file": openFile,
	"s3":   openS3,
	"gs":   openGCS,
}

// Open returns the Store for a URL such as file:///var/lib/wayback,
// s3://bucket/prefix or gs://bucket/prefix.
func Open(ctx context.Context, rawURL string, log *zap.Logger) (Store, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("store URL %q: %w (expected file:///path, s3://bucket/prefix or gs://bucket/prefix)", rawURL, err)
	}
	open, ok := openers[u.Scheme]
	if !ok {
		return nil, fmt.Errorf("store URL %q: unknown scheme %q (expected file, s3 or gs)", Redact(rawURL), u.Scheme)
	}
	return open(ctx, u, log)
}

// Redact removes user info and secret-looking query parameters from a store
// URL so that it can be logged.
func Redact(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "<unparseable store URL>"
	}
	u.User = nil
	q := u.Query()
	for k := range q {
		lk := strings.ToLower(k)
		if strings.Contains(lk, "secret") || strings.Contains(lk, "key") || strings.Contains(lk, "token") || strings.Contains(lk, "password") {
			q.Set(k, "REDACTED")
		}
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// ReadAll fetches a whole object into memory; meant for small objects such
// as manifests and segments.
func ReadAll(ctx context.Context, s Store, key string) ([]byte, error) {
	rc, err := s.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return nil, fmt.Errorf("read %s from %s: %w", key, s.URL(), err)
	}
	return b, nil
}

// PutBytes stores a small object held in memory.
func PutBytes(ctx context.Context, s Store, key string, b []byte) error {
	return s.Put(ctx, key, bytes.NewReader(b), int64(len(b)))
}
