package store

import (
	"context"
	"errors"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
)

// switchable wraps a store whose writes, reads and listings can be cut off.
type switchable struct {
	Store
	down atomic.Bool
	hang atomic.Bool // writes wait for their context to end
}

var errDown = errors.New("store is down")

func (s *switchable) Put(ctx context.Context, key string, r io.ReadSeeker, size int64) error {
	if s.hang.Load() {
		<-ctx.Done()
		return ctx.Err()
	}
	if s.down.Load() {
		return errDown
	}
	return s.Store.Put(ctx, key, r, size)
}

func (s *switchable) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	if s.down.Load() {
		return nil, errDown
	}
	return s.Store.Get(ctx, key)
}

func (s *switchable) List(ctx context.Context, prefix string) ([]Object, error) {
	if s.down.Load() {
		return nil, errDown
	}
	return s.Store.List(ctx, prefix)
}

func (s *switchable) Check(ctx context.Context) error {
	if s.down.Load() {
		return errDown
	}
	return s.Store.Check(ctx)
}

func keys(t *testing.T, s Store) []string {
	t.Helper()
	objs, err := s.List(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, o := range objs {
		out = append(out, o.Key)
	}
	return out
}

func newPair(t *testing.T, minCopies int) (*Fanout, *switchable, *switchable) {
	a := &switchable{Store: NewFile(t.TempDir())}
	b := &switchable{Store: NewFile(t.TempDir())}
	f := NewFanout([]Store{a, b}, minCopies, zaptest.NewLogger(t))
	f.QuickTries = 2
	f.AttemptTimeout = time.Second
	f.MaxBackoff = 50 * time.Millisecond
	t.Cleanup(func() { f.Close() })
	return f, a, b
}

func TestFanoutOutageWithOneCopyRequired(t *testing.T) {
	ctx := context.Background()
	f, a, b := newPair(t, 1)
	if err := f.Put(ctx, "segments/1", []byte("one")); err != nil {
		t.Fatal(err)
	}
	b.down.Store(true)
	for _, k := range []string{"segments/2", "backups/x/data", "backups/x/manifest.json", "segments/3"} {
		if err := f.Put(ctx, k, []byte(k)); err != nil {
			t.Fatalf("put %s with one store down: %v", k, err)
		}
	}
	f.bg.Wait() // let B's quick retries finish failing
	if f.State(1) != Failing {
		t.Fatalf("store B state %s, want failing", f.State(1))
	}
	if n, err := f.Repair(ctx, 1); err == nil {
		t.Fatalf("repair of a down store succeeded (%d copied)", n)
	}
	b.down.Store(false)
	n, err := f.Repair(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if n != 4 {
		t.Fatalf("repair copied %d objects, want 4", n)
	}
	if got, want := keys(t, b), keys(t, a); len(got) != len(want) {
		t.Fatalf("after repair B has %v, A has %v", got, want)
	}
	if f.State(1) != Healthy {
		t.Fatalf("store B state %s after repair", f.State(1))
	}
}

func TestFanoutHoldsUntilMinCopies(t *testing.T) {
	ctx := context.Background()
	f, _, b := newPair(t, 2)
	b.down.Store(true)
	done := make(chan error, 1)
	go func() { done <- f.Put(ctx, "segments/1", []byte("x")) }()
	select {
	case err := <-done:
		t.Fatalf("Put returned %v with only one of two required stores up", err)
	case <-time.After(500 * time.Millisecond):
	}
	b.down.Store(false)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Put did not complete after the store came back")
	}
	if len(keys(t, b)) != 1 {
		t.Fatal("the held object did not reach store B")
	}
}

func TestRepairRefusesCorruptSource(t *testing.T) {
	ctx := context.Background()
	f, _, b := newPair(t, 1)
	f.Verify = func(key string, data []byte) error {
		if string(data) == "bad" {
			return errors.New("corrupt")
		}
		return nil
	}
	b.down.Store(true)
	f.Put(ctx, "segments/ok", []byte("good"))
	f.Put(ctx, "segments/zz", []byte("bad"))
	f.bg.Wait()
	b.down.Store(false)
	if _, err := f.Repair(ctx, 1); err == nil {
		t.Fatal("repair copied a corrupt object")
	}
	if got := keys(t, b); len(got) != 1 || got[0] != "segments/ok" {
		t.Fatalf("B holds %v", got)
	}
}

// TestRepairFilterKeepsExpiredObjectsGone: what the filter names (objects
// retention is deleting store by store) is not copied back; the rest is.
func TestRepairFilterKeepsExpiredObjectsGone(t *testing.T) {
	ctx := context.Background()
	a, b := NewFile(t.TempDir()), NewFile(t.TempDir())
	for _, k := range []string{"segments/expired", "segments/live"} {
		if err := PutBytes(ctx, a, k, []byte(k)); err != nil {
			t.Fatal(err)
		}
	}
	f := NewFanout([]Store{a, b}, 1, zaptest.NewLogger(t))
	f.SetRepairFilter(func(context.Context) (func(string) bool, error) {
		return func(k string) bool { return k == "segments/expired" }, nil
	})
	n, err := f.Repair(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got := keys(t, b); n != 1 || len(got) != 1 || got[0] != "segments/live" {
		t.Fatalf("repair copied %d objects, store b holds %v; want only segments/live", n, got)
	}
}

// TestFanoutStoreDownAtStart: a store marked down before the first write
// takes no writes (not even while too few stores answer), is admitted by
// Repair only once Admit accepts it, is then backfilled, and the other
// stores get what only it held.
func TestFanoutStoreDownAtStart(t *testing.T) {
	ctx := context.Background()
	f, a, b := newPair(t, 1)
	// B holds an object A lacks (written while A was failing before this
	// start), and is down now.
	if err := PutBytes(ctx, b, "backups/old/manifest.json", []byte("old")); err != nil {
		t.Fatal(err)
	}
	b.down.Store(true)
	f.SetDown(1, errDown)
	var refuse atomic.Bool
	refuse.Store(true)
	admitted := 0
	f.Admit = func(ctx context.Context, i int) error {
		if i != 1 {
			t.Errorf("Admit called for store %d", i)
		}
		if refuse.Load() {
			return errors.New("holds another archive")
		}
		admitted++
		return nil
	}
	if _, err := f.Repair(ctx, 0); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"archive.json", "segments/1", "segments/2"} {
		if err := f.Put(ctx, k, []byte(k)); err != nil {
			t.Fatal(err)
		}
	}
	b.down.Store(false)
	// Answering, but Admit refuses: no writes, no backfill, and A does not
	// take B's objects either.
	if err := f.Put(ctx, "segments/3", []byte("3")); err != nil {
		t.Fatal(err)
	}
	f.bg.Wait()
	if n, err := f.Repair(ctx, 1); err == nil {
		t.Fatalf("repair of a refused store succeeded (%d copied)", n)
	}
	if got := keys(t, b); len(got) != 1 {
		t.Fatalf("refused store B was written to: %v", got)
	}
	if f.State(1) != Failing {
		t.Fatalf("refused store B is %s, want failing", f.State(1))
	}
	if _, err := f.Repair(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if got := keys(t, a); len(got) != 4 {
		t.Fatalf("A copied from a refused store: %v", got)
	}
	// Admitted: B is backfilled, then A (lagging again) gets B's object.
	refuse.Store(false)
	if n, err := f.Repair(ctx, 1); err != nil || n != 4 {
		t.Fatalf("repair of admitted B: %d copied, %v; want 4", n, err)
	}
	if admitted != 1 {
		t.Fatalf("Admit accepted %d times, want 1", admitted)
	}
	if f.State(0) != Lagging {
		t.Fatalf("A is %s after B was admitted, want lagging", f.State(0))
	}
	if n, err := f.Repair(ctx, 0); err != nil || n != 1 {
		t.Fatalf("repair of A after B's admission: %d copied, %v; want 1", n, err)
	}
	if ka, kb := keys(t, a), keys(t, b); len(ka) != 5 || len(kb) != 5 {
		t.Fatalf("after both repairs A has %v, B has %v", ka, kb)
	}
}

// TestFanoutDownAtStartHoldsWithoutQuorum: with min_copies 2 and one store
// down at start, a write holds until that store is admitted; it is never
// written before Admit ran.
func TestFanoutDownAtStartHoldsWithoutQuorum(t *testing.T) {
	ctx := context.Background()
	f, _, b := newPair(t, 2)
	b.down.Store(true)
	f.SetDown(1, errDown)
	var admitted atomic.Bool
	f.Admit = func(ctx context.Context, i int) error {
		if n := len(keys(t, b)); n != 0 {
			t.Errorf("B held %d objects before Admit", n)
		}
		admitted.Store(true)
		return nil
	}
	done := make(chan error, 1)
	go func() { done <- f.Put(ctx, "segments/1", []byte("x")) }()
	b.down.Store(false)
	select {
	case err := <-done:
		t.Fatalf("Put returned %v before the down store was admitted", err)
	case <-time.After(500 * time.Millisecond):
	}
	if _, err := f.Repair(ctx, 1); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Put did not complete after the store was admitted")
	}
	if !admitted.Load() || len(keys(t, b)) != 1 {
		t.Fatalf("admitted %v, B holds %v", admitted.Load(), keys(t, b))
	}
}

// TestFanoutAuditFindsAnotherWritersObjects: a backup another writer put
// in store A alone (B did not answer it) is invisible to this fan-out,
// whose own writes to B never failed; the audit of backups/ in RunRepair
// marks B lagging and the next pass backfills it, manifest included, while
// an expired backup (the repair filter) and keys outside the prefix do not
// make it lag.
func TestFanoutAuditFindsAnotherWritersObjects(t *testing.T) {
	ctx := context.Background()
	f, a, b := newPair(t, 2)
	f.AuditPrefix = "backups/"
	f.AuditEvery = 20 * time.Millisecond
	f.SetRepairFilter(func(context.Context) (func(string) bool, error) {
		return func(k string) bool { return k == "backups/expired/manifest.json" }, nil
	})
	for i := range 2 {
		if _, err := f.Repair(ctx, i); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Put(ctx, "segments/1", []byte("1")); err != nil {
		t.Fatal(err)
	}
	// Neither an expired backup left in A nor a segment only A holds is a
	// backup B misses.
	for _, k := range []string{"backups/expired/manifest.json", "segments/other"} {
		if err := PutBytes(ctx, a, k, []byte(k)); err != nil {
			t.Fatal(err)
		}
	}
	f.audit(ctx)
	if f.State(0) != Healthy || f.State(1) != Healthy {
		t.Fatalf("after auditing nothing missing: A %s, B %s; want both healthy", f.State(0), f.State(1))
	}
	for _, k := range []string{"backups/b1/data/00001.copy.lz4", "backups/b1/manifest.json"} {
		if err := PutBytes(ctx, a, k, []byte(k)); err != nil {
			t.Fatal(err)
		}
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.RunRepair(rctx, 10*time.Millisecond)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := b.Store.List(ctx, "backups/b1/")
		if err != nil {
			t.Fatal(err)
		}
		if len(got) == 2 {
			break
		}
		if time.Now().After(deadline) {
			cancel()
			<-done
			t.Fatalf("B was not backfilled with the backup A alone holds: B has %v", keys(t, b))
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	for _, k := range keys(t, b) {
		if k == "backups/expired/manifest.json" {
			t.Fatal("the audit's backfill copied an expired backup back")
		}
	}
}

// TestFanoutDropFailing: with DropFailing (wayback backup), a store that
// fails partway is dropped for good while MinCopies stores are left (it
// gets nothing more, not even once it answers again, so never a manifest
// after missing an object), and Dropped names it. With too few left a Put
// fails with a *TooFewCopiesError, within QuickTries × AttemptTimeout even
// when the store hangs, and every later Put fails at once without writing.
func TestFanoutDropFailing(t *testing.T) {
	ctx := context.Background()
	f, a, b := newPair(t, 1)
	f.DropFailing = true
	if err := f.Put(ctx, "backups/x/data/1", []byte("1")); err != nil {
		t.Fatal(err)
	}
	b.down.Store(true)
	if err := f.Put(ctx, "backups/x/data/2", []byte("2")); err != nil {
		t.Fatalf("put with one of two stores failing and min_copies 1: %v", err)
	}
	b.down.Store(false)
	if err := f.Put(ctx, "backups/x/manifest.json", []byte("m")); err != nil {
		t.Fatal(err)
	}
	f.Wait()
	if d := f.Dropped(); d[0] != nil || !errors.Is(d[1], errDown) {
		t.Fatalf("Dropped() = %v, want B alone, for errDown", d)
	}
	if got := keys(t, b); len(got) != 1 || got[0] != "backups/x/data/1" {
		t.Fatalf("dropped store B holds %v, want only what it took before failing", got)
	}
	if got := keys(t, a); len(got) != 3 {
		t.Fatalf("store A holds %v, want all three objects", got)
	}

	for _, mode := range []string{"down", "hang"} {
		t.Run(mode, func(t *testing.T) {
			f, a, b := newPair(t, 2)
			f.DropFailing = true
			if err := f.Put(ctx, "backups/y/data/1", []byte("1")); err != nil {
				t.Fatal(err)
			}
			if mode == "down" {
				b.down.Store(true)
			} else {
				b.hang.Store(true)
			}
			began := time.Now()
			err := f.Put(ctx, "backups/y/data/2", []byte("2"))
			took := time.Since(began)
			var few *TooFewCopiesError
			if !errors.As(err, &few) || few.Required != 2 || few.Left != 1 || len(few.URLs) != 1 || few.URLs[0] != b.URL() {
				t.Fatalf("put with min_copies 2 and B %s: want a TooFewCopiesError naming B, got %v", mode, err)
			}
			// QuickTries 2 × AttemptTimeout 1s, plus a 100ms backoff.
			if took > 4*time.Second {
				t.Fatalf("put with B %s took %s, want it bounded by the quick tries", mode, took)
			}
			b.down.Store(false)
			b.hang.Store(false)
			if err := f.Put(ctx, "backups/y/manifest.json", []byte("m")); !errors.As(err, &few) {
				t.Fatalf("put after B was dropped below min_copies: want a TooFewCopiesError, got %v", err)
			}
			f.Wait()
			if got := keys(t, a); len(got) != 2 || got[1] != "backups/y/data/2" {
				t.Fatalf("store A holds %v: want the objects before the manifest, and no manifest", got)
			}
		})
	}
}

// TestFanoutDropFailingStopsWaitingOnDropped: writes in flight to a store
// that hangs stop waiting on it once one of them drops it, so a run is
// delayed by one write's tries rather than by several in a row.
func TestFanoutDropFailingStopsWaitingOnDropped(t *testing.T) {
	ctx := context.Background()
	f, _, b := newPair(t, 1)
	f.DropFailing = true
	f.AttemptTimeout = 2 * time.Second // QuickTries 2: dropped after about 4.1s
	b.hang.Store(true)
	began := time.Now()
	first := make(chan error, 1)
	go func() { first <- f.Put(ctx, "backups/z/data/1", []byte("1")) }()
	time.Sleep(3 * time.Second)
	// Left to its own tries this would wait on B until about 7.1s.
	if err := f.Put(ctx, "backups/z/data/2", []byte("2")); err != nil {
		t.Fatalf("second put with B hanging and min_copies 1: %v", err)
	}
	if took := time.Since(began); took > 5500*time.Millisecond {
		t.Fatalf("second put returned %s after the first began: it kept waiting on B after the first put dropped it", took)
	}
	if err := <-first; err != nil {
		t.Fatalf("first put with B hanging and min_copies 1: %v", err)
	}
	if d := f.Dropped(); d[1] == nil {
		t.Fatal("B was not dropped")
	}
}
