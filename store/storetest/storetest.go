// Package storetest is a conformance suite for store.Store implementations.
//
// Each backend's tests call Run with a function that opens a fresh, empty
// store (an empty directory, bucket or prefix):
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) store.Store { return store.NewFile(t.TempDir()) })
//	}
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/wayback-pitr/wayback/store"
)

// PaginationObjects is how many objects the pagination test lists: more
// than S3's and GCS's 1000-key page.
const PaginationObjects = 1001

// Run runs the conformance suite as subtests of t. newStore must return a
// new, empty store for each call; Run closes it when the subtest ends.
// Subtests do not run in parallel with each other.
func Run(t *testing.T, newStore func(t *testing.T) store.Store) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"RoundTrip", testRoundTrip},
		{"Overwrite", testOverwrite},
		{"GetMissing", testGetMissing},
		{"List", testList},
		{"ListPagination", testListPagination},
		{"Delete", testDelete},
		{"ConcurrentPuts", testConcurrentPuts},
		{"CancelledPut", testCancelledPut},
		{"NestedKeys", testNestedKeys},
		{"PutFromOffset", testPutFromOffset},
		{"URL", testURL},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			t.Cleanup(func() {
				if err := s.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			tc.fn(t, s)
		})
	}
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute) // a bound, not a speed test: the race detector on a busy machine is slow
	t.Cleanup(cancel)
	return ctx
}

// Data returns n pseudo-random bytes determined by seed.
func Data(seed uint64, n int) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16), byte(seed >> 24)})
	_, _ = r.Read(b)
	return b
}

// MustPut stores data under key or fails the test.
func MustPut(t testing.TB, ctx context.Context, s store.Store, key string, data []byte) {
	t.Helper()
	if err := s.Put(ctx, key, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatalf("Put(%q, %d bytes): %v", key, len(data), err)
	}
}

// MustGet reads the object under key or fails the test.
func MustGet(t testing.TB, ctx context.Context, s store.Store, key string) []byte {
	t.Helper()
	b, err := store.ReadAll(ctx, s, key)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	return b
}

// CheckGet fails the test unless the object under key holds want.
func CheckGet(t testing.TB, ctx context.Context, s store.Store, key string, want []byte) {
	t.Helper()
	got := MustGet(t, ctx, s, key)
	if !bytes.Equal(got, want) {
		t.Fatalf("Get(%q): got %d bytes %s, want %d bytes %s", key, len(got), head(got), len(want), head(want))
	}
}

func head(b []byte) string {
	if len(b) > 16 {
		return fmt.Sprintf("%x...", b[:16])
	}
	return fmt.Sprintf("%x", b)
}

// MustList lists prefix or fails the test.
func MustList(t testing.TB, ctx context.Context, s store.Store, prefix string) []store.Object {
	t.Helper()
	objs, err := s.List(ctx, prefix)
	if err != nil {
		t.Fatalf("List(%q): %v", prefix, err)
	}
	return objs
}

// ListKeys lists the keys under prefix or fails the test.
func ListKeys(t testing.TB, ctx context.Context, s store.Store, prefix string) []string {
	t.Helper()
	return keys(MustList(t, ctx, s, prefix))
}

func keys(objs []store.Object) []string {
	out := make([]string, len(objs))
	for i, o := range objs {
		out[i] = o.Key
	}
	return out
}

func checkKeys(t *testing.T, ctx context.Context, s store.Store, prefix string, want []string) []store.Object {
	t.Helper()
	objs := MustList(t, ctx, s, prefix)
	if got := keys(objs); !slices.Equal(got, want) {
		t.Fatalf("List(%q) = %q, want %q", prefix, got, want)
	}
	return objs
}

func testRoundTrip(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	objects := map[string][]byte{
		"small": []byte("hello, wayback"),
		"empty": {},
		"big":   Data(1, 3<<20+12345), // multi-MiB, not a round size
	}
	for k, v := range objects {
		MustPut(t, ctx, s, k, v)
	}
	for k, v := range objects {
		CheckGet(t, ctx, s, k, v)
	}
	objs := checkKeys(t, ctx, s, "", []string{"big", "empty", "small"})
	for _, o := range objs {
		if want := int64(len(objects[o.Key])); o.Size != want {
			t.Errorf("List: %s has size %d, want %d", o.Key, o.Size, want)
		}
		if o.Modified.IsZero() {
			t.Errorf("List: %s has no modification time", o.Key)
		} else if d := time.Since(o.Modified); d > time.Hour || d < -time.Hour {
			t.Errorf("List: %s modified %v, more than an hour from now", o.Key, o.Modified)
		}
	}
}

func testOverwrite(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	MustPut(t, ctx, s, "obj", Data(2, 5000))
	second := []byte("shorter second version")
	MustPut(t, ctx, s, "obj", second)
	CheckGet(t, ctx, s, "obj", second)
	objs := checkKeys(t, ctx, s, "", []string{"obj"})
	if objs[0].Size != int64(len(second)) {
		t.Errorf("List: size %d after overwrite, want %d", objs[0].Size, len(second))
	}
}

func testGetMissing(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	for _, key := range []string{"missing", "no/such/dir/key"} {
		rc, err := s.Get(ctx, key)
		if err == nil {
			rc.Close()
			t.Fatalf("Get(%q) of a missing object succeeded", key)
		}
		if !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("Get(%q) = %v, want an error wrapping store.ErrNotFound", key, err)
		}
	}
}

func testList(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	all := []string{"a/1", "a/2", "a/10", "ab", "b/1", "b/sub/x", "c"}
	order := slices.Clone(all)
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	for _, k := range order {
		MustPut(t, ctx, s, k, []byte(k))
	}
	sorted := slices.Clone(all)
	slices.Sort(sorted)
	checkKeys(t, ctx, s, "", sorted)
	checkKeys(t, ctx, s, "a/", []string{"a/1", "a/10", "a/2"})
	checkKeys(t, ctx, s, "a", []string{"a/1", "a/10", "a/2", "ab"})
	checkKeys(t, ctx, s, "a/1", []string{"a/1", "a/10"})
	checkKeys(t, ctx, s, "b/", []string{"b/1", "b/sub/x"})
	checkKeys(t, ctx, s, "c", []string{"c"})
	if objs := MustList(t, ctx, s, "zzz"); len(objs) != 0 {
		t.Fatalf("List(zzz) = %q, want nothing", keys(objs))
	}
}

func testListPagination(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	want := make([]string, PaginationObjects)
	for i := range want {
		want[i] = fmt.Sprintf("seg/%05d", i)
	}
	// Write in a scrambled order from a few goroutines to keep it quick.
	order := slices.Clone(want)
	rand.New(rand.NewPCG(3, 4)).Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	putAll(t, ctx, s, order, 16, func(k string) []byte { return []byte(k) })
	// A neighbour that the prefix must exclude.
	MustPut(t, ctx, s, "segment-other", []byte("x"))

	objs := checkKeys(t, ctx, s, "seg/", want)
	for _, o := range objs {
		if o.Size != int64(len(o.Key)) {
			t.Fatalf("List: %s has size %d, want %d", o.Key, o.Size, len(o.Key))
		}
	}
	checkKeys(t, ctx, s, "seg/0099", []string{"seg/00990", "seg/00991", "seg/00992", "seg/00993", "seg/00994",
		"seg/00995", "seg/00996", "seg/00997", "seg/00998", "seg/00999"})
	if n := len(MustList(t, ctx, s, "")); n != PaginationObjects+1 {
		t.Fatalf("List(\"\") returned %d objects, want %d", n, PaginationObjects+1)
	}
}

// putAll stores keys from workers goroutines.
func putAll(t *testing.T, ctx context.Context, s store.Store, keys []string, workers int, data func(string) []byte) {
	t.Helper()
	ch := make(chan string)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range ch {
				d := data(k)
				if err := s.Put(ctx, k, bytes.NewReader(d), int64(len(d))); err != nil {
					errs <- fmt.Errorf("Put(%q): %w", k, err)
					for range ch { // drain
					}
					return
				}
			}
		}()
	}
	for _, k := range keys {
		ch <- k
	}
	close(ch)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func testDelete(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	MustPut(t, ctx, s, "keep", []byte("k"))
	MustPut(t, ctx, s, "dir/gone", []byte("g"))
	if err := s.Delete(ctx, "dir/gone"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := s.Get(ctx, "dir/gone"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get after Delete = %v, want ErrNotFound", err)
	}
	if err := s.Delete(ctx, "dir/gone"); err != nil {
		t.Fatalf("second Delete of the same key: %v (must be idempotent)", err)
	}
	if err := s.Delete(ctx, "never/existed"); err != nil {
		t.Fatalf("Delete of a missing key: %v (must be idempotent)", err)
	}
	checkKeys(t, ctx, s, "", []string{"keep"})
	CheckGet(t, ctx, s, "keep", []byte("k"))
}

func testConcurrentPuts(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	const goroutines, each = 12, 4
	var wg sync.WaitGroup
	errs := make(chan error, goroutines*each*2)
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				key := fmt.Sprintf("c/%02d/%d", g, i)
				d := Data(uint64(g*100+i), 10_000+g*1000+i)
				if err := s.Put(ctx, key, bytes.NewReader(d), int64(len(d))); err != nil {
					errs <- fmt.Errorf("Put(%q): %w", key, err)
				}
				// Everyone also writes the same key: one whole version must win.
				shared := bytes.Repeat([]byte{byte(g)}, 4096)
				if err := s.Put(ctx, "c/shared", bytes.NewReader(shared), int64(len(shared))); err != nil {
					errs <- fmt.Errorf("Put(c/shared): %w", err)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for g := range goroutines {
		for i := range each {
			CheckGet(t, ctx, s, fmt.Sprintf("c/%02d/%d", g, i), Data(uint64(g*100+i), 10_000+g*1000+i))
		}
	}
	shared := MustGet(t, ctx, s, "c/shared")
	if len(shared) != 4096 || !bytes.Equal(shared, bytes.Repeat(shared[:1], 4096)) {
		t.Fatalf("c/shared is a mix of versions (%d bytes, starts %s)", len(shared), head(shared))
	}
	if n := len(MustList(t, ctx, s, "c/")); n != goroutines*each+1 {
		t.Fatalf("List(c/) returned %d objects, want %d", n, goroutines*each+1)
	}
}

func testCancelledPut(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	for _, data := range [][]byte{[]byte("never stored"), Data(5, 1<<20)} {
		err := s.Put(cctx, "cancelled", bytes.NewReader(data), int64(len(data)))
		if err == nil {
			t.Fatalf("Put with a cancelled context (%d bytes) succeeded", len(data))
		}
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Put with a cancelled context = %v, want an error wrapping context.Canceled", err)
		}
	}
	if _, err := s.Get(ctx, "cancelled"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get after a cancelled Put = %v, want ErrNotFound", err)
	}
	// The store still works afterwards.
	MustPut(t, ctx, s, "after", []byte("ok"))
	CheckGet(t, ctx, s, "after", []byte("ok"))
}

func testNestedKeys(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	objs := map[string][]byte{
		"timeline/0001/segments/000000010000000000000001.seg": Data(6, 777),
		"timeline/0001/segments/000000010000000000000002.seg": Data(7, 778),
		"timeline/0001/manifest.json":                         []byte(`{"v":1}`),
		"timeline/0002/base/db.dump":                          Data(8, 100),
	}
	for k, v := range objs {
		MustPut(t, ctx, s, k, v)
	}
	for k, v := range objs {
		CheckGet(t, ctx, s, k, v)
	}
	checkKeys(t, ctx, s, "timeline/0001/segments/", []string{
		"timeline/0001/segments/000000010000000000000001.seg",
		"timeline/0001/segments/000000010000000000000002.seg",
	})
	checkKeys(t, ctx, s, "timeline/0001/", []string{
		"timeline/0001/manifest.json",
		"timeline/0001/segments/000000010000000000000001.seg",
		"timeline/0001/segments/000000010000000000000002.seg",
	})
	checkKeys(t, ctx, s, "timeline/0002/", []string{"timeline/0002/base/db.dump"})
}

// testPutFromOffset: Put sends size bytes from r's current position.
func testPutFromOffset(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	data := []byte("HEADERpayload")
	r := bytes.NewReader(data)
	if _, err := r.Seek(6, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "offset", r, int64(len(data)-6)); err != nil {
		t.Fatalf("Put from offset 6: %v", err)
	}
	CheckGet(t, ctx, s, "offset", []byte("payload"))
}

func testURL(t *testing.T, s store.Store) {
	if s.URL() == "" {
		t.Fatal("URL() is empty")
	}
}
