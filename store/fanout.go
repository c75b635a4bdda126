package store

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Verifier checks an object read from one store before repair copies it to
// another, so that a corrupt copy is never spread. It returns nil for keys
// it has no opinion on.
type Verifier func(key string, data []byte) error

// Fanout writes every object to all its stores in parallel. Put returns once
// MinCopies stores hold the object. A store that fails is skipped by later
// writes (while enough others remain) and brought up to date by Repair when
// it answers again, so an outage of one cloud never slows the others.
type Fanout struct {
	stores    []Store
	minCopies int
	log       *zap.Logger

	mu      sync.Mutex
	state   []storeState
	blocked bool // fewer than minCopies stores reachable; logged once
	// unadmitted marks stores that did not answer at start (SetDown): they
	// take no writes until Repair has run Admit on them.
	unadmitted []bool
	admitErr   []string // last Admit refusal per store, logged once
	// repairFilter, when set, names keys Repair must not copy back.
	repairFilter func(ctx context.Context) (func(key string) bool, error)

	bg sync.WaitGroup

	// AttemptTimeout bounds one upload attempt, so a hanging store cannot
	// stall the stream (default 30s).
	AttemptTimeout time.Duration
	// QuickTries is how many attempts a store gets for an object before it is
	// marked failing and left to Repair (default 3).
	QuickTries int
	// MaxBackoff caps the wait between retries while too few stores are
	// reachable (default 5s).
	MaxBackoff time.Duration
	// Verify, if set, checks objects before Repair copies them.
	Verify Verifier
	// OnWrite, if set, is told of every write attempt to a store (err nil:
	// the store holds key), for metrics. It must not block.
	OnWrite func(store int, key string, size int64, err error)
	// Admit, if set, is run by Repair on a store marked with SetDown once it
	// answers, before anything is written to it: the store was never
	// checked against the archive (its identity, its encryption keys), so
	// Admit checks it and copies what must precede everything else. While
	// Admit fails the store stays failing and takes no writes.
	Admit func(ctx context.Context, store int) error
	// AuditPrefix, if set, makes RunRepair compare the keys under it in
	// every store every AuditEvery, and mark a healthy store that lacks a
	// key another store holds lagging, so that Repair backfills it. Failed
	// writes mark a store by themselves, but another writer's objects are
	// never seen here: a `wayback backup` run while a store did not answer
	// it leaves that store without the backup, and this fan-out may have
	// seen no failure at all.
	AuditPrefix string
	// AuditEvery is how often RunRepair audits AuditPrefix (default 1m).
	AuditEvery time.Duration
	// DropFailing, if set, is for a writer that must end in bounded time
	// with each store it kept holding everything it wrote (`wayback
	// backup`), rather than hold until enough stores answer (the agent,
	// which must not advance the slot past a segment too few stores hold).
	// Put then waits for every store still taking writes, not just
	// MinCopies of them, so that an object written after another (a
	// manifest) is never in a store that lacks the first; a store whose
	// QuickTries for an object all fail is dropped for good and takes
	// nothing more from this fan-out (Dropped names it); and once fewer
	// than MinCopies stores are left, Put fails with a
	// *TooFewCopiesError instead of holding. A Put thus takes at most
	// about QuickTries × AttemptTimeout, and Repair is not meant to run.
	// Set it before the first write.
	DropFailing bool
	dropped     []error         // per store: why DropFailing dropped it
	dropSig     []chan struct{} // per store: closed when it is dropped
}

// TooFewCopiesError says that a write of a fan-out with DropFailing could
// not reach MinCopies stores, because stores failed while it ran.
type TooFewCopiesError struct {
	// Key is the object whose write failed.
	Key string
	// Required is MinCopies; Left how many stores still take writes.
	Required, Left int
	// URLs and Errs name each store dropped and why.
	URLs []string
	Errs []error
}

func (e *TooFewCopiesError) Error() string {
	return fmt.Sprintf("put %s: %d left taking writes but min_copies is %d, after failures (%s)",
		e.Key, e.Left, e.Required, e.Stores())
}

// Stores says which stores were dropped, and why, on one line.
func (e *TooFewCopiesError) Stores() string { return Failures(e.URLs, e.Errs) }

// Unwrap returns the dropped stores' errors.
func (e *TooFewCopiesError) Unwrap() []error { return e.Errs }

// StoreState is the health of one store as the fan-out sees it.
type StoreState int

// Store states.
const (
	Healthy StoreState = iota // takes writes and holds everything
	Lagging                   // takes writes but lacks objects: Repair will copy them
	Failing                   // the last write failed: skipped until Repair reaches it
)

func (s StoreState) String() string {
	return [...]string{"healthy", "lagging", "failing"}[s]
}

type storeState struct {
	state   StoreState
	lastErr error
	since   time.Time
}

// NewFanout returns a Fanout over stores needing minCopies durable copies.
// Every store starts lagging, so the first Repair pass compares it with
// the others: a store added to the configuration, or one that missed
// objects before a restart, is backfilled.
func NewFanout(stores []Store, minCopies int, log *zap.Logger) *Fanout {
	if log == nil {
		log = zap.NewNop()
	}
	st := make([]storeState, len(stores))
	for i := range st {
		st[i] = storeState{state: Lagging, since: time.Now()}
	}
	sig := make([]chan struct{}, len(stores))
	for i := range sig {
		sig[i] = make(chan struct{})
	}
	return &Fanout{stores: stores, minCopies: minCopies, log: log, state: st,
		unadmitted: make([]bool, len(stores)), admitErr: make([]string, len(stores)), dropped: make([]error, len(stores)), dropSig: sig,
		AttemptTimeout: 30 * time.Second, QuickTries: 3, MaxBackoff: 5 * time.Second}
}

// SetDown marks store i as unreachable from the start (it did not answer
// the start-up check): it is failing, as if it had failed while running,
// so writes go to the others and Repair backfills it once it answers. Until
// then it takes no writes at all, not even when too few stores answer, and
// Repair runs Admit on it before copying anything. Call it before the
// first write.
func (f *Fanout) SetDown(i int, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.state[i] = storeState{state: Failing, lastErr: err, since: time.Now()}
	f.unadmitted[i] = true
}

// Stores returns the underlying stores in configuration order.
func (f *Fanout) Stores() []Store { return f.stores }

// MinCopies is the number of stores an object must reach to be durable.
func (f *Fanout) MinCopies() int { return f.minCopies }

// State returns store i's state.
func (f *Fanout) State(i int) StoreState {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.state[i].state
}

// source produces a fresh reader for each attempt.
type source func() (io.ReadSeeker, int64, func(), error)

func bytesSource(data []byte) source {
	return func() (io.ReadSeeker, int64, func(), error) {
		return bytes.NewReader(data), int64(len(data)), func() {}, nil
	}
}

func fileSource(path string) source {
	return func() (io.ReadSeeker, int64, func(), error) {
		fh, err := os.Open(path)
		if err != nil {
			return nil, 0, nil, err
		}
		st, err := fh.Stat()
		if err != nil {
			fh.Close()
			return nil, 0, nil, err
		}
		return fh, st.Size(), func() { fh.Close() }, nil
	}
}

// Put writes data under key.
func (f *Fanout) Put(ctx context.Context, key string, data []byte) error {
	return f.put(ctx, key, bytesSource(data))
}

// PutFile writes the local file at path under key. The file must stay in
// place until PutFile returns.
func (f *Fanout) PutFile(ctx context.Context, key, path string) error {
	return f.put(ctx, key, fileSource(path))
}

func (f *Fanout) put(ctx context.Context, key string, src source) error {
	if f.DropFailing {
		return f.putOrDrop(ctx, key, src)
	}
	// Failing stores are skipped while the others can reach min_copies;
	// Repair brings them back.
	var try []int
	f.mu.Lock()
	usable := 0
	for _, s := range f.state {
		if s.state != Failing {
			usable++
		}
	}
	for i, s := range f.state {
		if f.unadmitted[i] {
			continue
		}
		if s.state != Failing || usable < f.minCopies {
			try = append(try, i)
		} else {
			f.state[i].state = Failing // stays failing; it lacks this object
		}
	}
	f.mu.Unlock()

	type result struct {
		i   int
		err error
	}
	done := make(chan result, len(f.stores))
	// Attempts continue after Put returns (bounded by QuickTries ×
	// AttemptTimeout) so a slow store still gets its copy when it can.
	for _, i := range try {
		f.bg.Add(1)
		go func() {
			defer f.bg.Done()
			done <- result{i, f.tryStore(context.WithoutCancel(ctx), i, key, src, f.QuickTries)}
		}()
	}
	ok := 0
	var errs []error
	pending := len(try)
	for pending > 0 {
		select {
		case r := <-done:
			pending--
			if r.err == nil {
				ok++
			} else {
				errs = append(errs, r.err)
			}
		case <-ctx.Done():
			return fmt.Errorf("put %s: %w", key, ctx.Err())
		}
		if ok >= f.minCopies {
			f.setBlocked(false, nil)
			return nil
		}
	}
	// Too few copies: hold here (the caller does not advance the slot) and
	// keep trying every store that lacks the object until enough answer.
	f.setBlocked(true, errors.Join(errs...))
	backoff := 200 * time.Millisecond
	for {
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return fmt.Errorf("put %s: only %d of %d required copies: %w", key, ok, f.minCopies, ctx.Err())
		}
		backoff = min(backoff*2, f.MaxBackoff)
		ok = 0
		for i := range f.stores {
			if f.isUnadmitted(i) {
				continue
			}
			if f.holds(ctx, i, key) || f.tryStore(ctx, i, key, src, 1) == nil {
				ok++
			}
		}
		if ok >= f.minCopies {
			f.setBlocked(false, nil)
			return nil
		}
	}
}

// putOrDrop is put with DropFailing: every store still taking writes
// gets its QuickTries, and is waited for; those that fail are dropped.
func (f *Fanout) putOrDrop(ctx context.Context, key string, src source) error {
	var try []int
	f.mu.Lock()
	for i := range f.stores {
		if !f.unadmitted[i] && f.dropped[i] == nil {
			try = append(try, i)
		}
	}
	f.mu.Unlock()
	if err := f.tooFew(key); err != nil {
		return err // another write dropped stores meanwhile
	}
	done := make(chan error, len(try))
	for _, i := range try {
		f.bg.Add(1)
		go func() {
			defer f.bg.Done()
			// Once another write drops the store, this one stops waiting
			// on it too: the run's delay is one write's tries, not several
			// in a row.
			sctx, cancel := context.WithCancel(ctx)
			defer cancel()
			go func() {
				select {
				case <-f.dropSig[i]:
					cancel()
				case <-sctx.Done():
				}
			}()
			err := f.tryStore(sctx, i, key, src, f.QuickTries)
			var local *sourceError
			if err != nil && ctx.Err() == nil && !errors.As(err, &local) {
				f.drop(i, err)
				err = nil // the store's failure, counted by tooFew
			}
			done <- err
		}()
	}
	var errs []error
	for range try {
		// tryStore gives up as soon as ctx ends.
		if err := <-done; err != nil {
			errs = append(errs, err)
		}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("put %s: %w", key, errors.Join(errs...))
	}
	return f.tooFew(key)
}

// drop takes store i out of a DropFailing fan-out's writes for good.
func (f *Fanout) drop(i int, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.dropped[i] != nil {
		return
	}
	f.dropped[i] = err
	close(f.dropSig[i])
	f.state[i] = storeState{state: Failing, lastErr: err, since: time.Now()}
	f.log.Warn("store failed while being written: it takes nothing more from this run, and lacks what it missed until it is backfilled",
		zap.String("store", f.stores[i].URL()), zap.Error(err))
}

// tooFew returns a *TooFewCopiesError when DropFailing has left fewer
// than MinCopies stores taking writes, nil otherwise.
func (f *Fanout) tooFew(key string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	e := &TooFewCopiesError{Key: key, Required: f.minCopies}
	for i, err := range f.dropped {
		switch {
		case err != nil:
			e.URLs = append(e.URLs, f.stores[i].URL())
			e.Errs = append(e.Errs, err)
		case !f.unadmitted[i]:
			e.Left++
		}
	}
	if e.Left >= f.minCopies {
		return nil
	}
	return e
}

// Dropped returns, per store (in the order of Stores), why a fan-out with
// DropFailing stopped writing to it, nil for the others: these stores
// lack objects written since.
func (f *Fanout) Dropped() []error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.dropped)
}

func (f *Fanout) isUnadmitted(i int) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.unadmitted[i]
}

// admit runs Admit on store i if it was down at start and has not been
// admitted yet. Once admitted, the other stores are compared with it again
// (they become lagging): it may hold objects they lack, written while they
// were failing before this start.
func (f *Fanout) admit(ctx context.Context, i int) error {
	if !f.isUnadmitted(i) {
		return nil
	}
	url := f.stores[i].URL()
	if f.Admit != nil {
		if err := f.Admit(ctx, i); err != nil {
			if ctx.Err() != nil {
				return err
			}
			f.mu.Lock()
			if f.admitErr[i] != err.Error() {
				f.admitErr[i] = err.Error()
				f.log.Error("store down at start answers, but is not admitted: nothing is written to it", zap.String("store", url), zap.Error(err))
			}
			f.mu.Unlock()
			return fmt.Errorf("admit %s: %w", url, err)
		}
	}
	f.mu.Lock()
	f.unadmitted[i] = false
	f.admitErr[i] = ""
	f.state[i] = storeState{state: Lagging, since: time.Now()}
	for j := range f.state {
		if j != i && f.state[j].state == Healthy {
			f.state[j] = storeState{state: Lagging, since: time.Now()}
		}
	}
	f.mu.Unlock()
	f.log.Info("store down at start answers now: backfilling what it missed", zap.String("store", url))
	return nil
}

// holds reports whether store i already has key (as far as a quick Get
// can tell), used only on the slow path when too few stores answer.
func (f *Fanout) holds(ctx context.Context, i int, key string) bool {
	actx, cancel := context.WithTimeout(ctx, f.AttemptTimeout)
	defer cancel()
	rc, err := f.stores[i].Get(actx, key)
	if err != nil {
		return false
	}
	rc.Close()
	return true
}

// tryStore makes up to tries attempts to write key to store i.
func (f *Fanout) tryStore(ctx context.Context, i int, key string, src source, tries int) error {
	s := f.stores[i]
	backoff := 100 * time.Millisecond
	var err error
	for attempt := 0; attempt < max(tries, 1); attempt++ {
		if attempt > 0 {
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return ctx.Err()
			}
			backoff *= 3
		}
		var r io.ReadSeeker
		var size int64
		var closeFn func()
		r, size, closeFn, err = src()
		if err != nil {
			return &sourceError{fmt.Errorf("open source for %s: %w", key, err)}
		}
		actx, cancel := context.WithTimeout(ctx, f.AttemptTimeout)
		err = s.Put(actx, key, r, size)
		cancel()
		closeFn()
		if err == nil {
			f.markOK(i)
			if f.OnWrite != nil {
				f.OnWrite(i, key, size, nil)
			}
			return nil
		}
		if f.OnWrite != nil && ctx.Err() == nil {
			f.OnWrite(i, key, size, err)
		}
		if ctx.Err() != nil {
			return err
		}
	}
	f.markFailing(i, err)
	return fmt.Errorf("store %s: %w", s.URL(), err)
}

// sourceError is a failure to read what is being written, which is no
// store's fault.
type sourceError struct{ error }

func (e *sourceError) Unwrap() error { return e.error }

func (f *Fanout) markOK(i int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.dropped[i] != nil {
		return // a write that began before the drop; it stays dropped
	}
	if f.state[i].state == Failing {
		// It answers again but has missed objects: Repair will tell.
		f.state[i] = storeState{state: Lagging, since: time.Now()}
		f.log.Info("store answering again; backfill pending", zap.String("store", f.stores[i].URL()))
	}
}

// markFailing logs a state change, not every retry, so that an outage
// produces two lines rather than thousands.
func (f *Fanout) markFailing(i int, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.state[i].state != Failing && !f.DropFailing { // drop says it then
		f.log.Warn("store failing: skipping it and backfilling when it answers again",
			zap.String("store", f.stores[i].URL()), zap.Error(err))
	}
	f.state[i] = storeState{state: Failing, lastErr: err, since: time.Now()}
}

func (f *Fanout) setBlocked(b bool, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if b == f.blocked {
		return
	}
	f.blocked = b
	if b {
		f.log.Error("fewer than min_copies stores reachable: holding the replication slot until they answer",
			zap.Int("min_copies", f.minCopies), zap.Error(err))
	} else {
		f.log.Info("min_copies reachable again: shipping resumed", zap.Int("min_copies", f.minCopies))
	}
}

// RunRepair backfills lagging and failing stores every interval until ctx
// ends.
func (f *Fanout) RunRepair(ctx context.Context, interval time.Duration) {
	lastAudit := time.Now() // every store starts lagging: the first pass compares them all
	for {
		if f.AuditPrefix != "" && time.Since(lastAudit) >= cmp.Or(f.AuditEvery, time.Minute) {
			lastAudit = time.Now()
			f.audit(ctx)
		}
		for i := range f.stores {
			if f.State(i) == Healthy {
				continue
			}
			n, err := f.Repair(ctx, i)
			if err != nil && ctx.Err() == nil {
				f.log.Debug("repair pass incomplete", zap.String("store", f.stores[i].URL()), zap.Int("copied", n), zap.Error(err))
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
	}
}

// audit marks lagging every healthy store that lacks a key under
// AuditPrefix which another store holds and the repair filter does not
// skip (an expired backup being deleted is not missing). Stores that are
// failing or cannot be listed are left to Repair, which finds them by
// itself.
func (f *Fanout) audit(ctx context.Context) {
	f.mu.Lock()
	filter := f.repairFilter
	f.mu.Unlock()
	skip := func(string) bool { return false }
	if filter != nil {
		var err error
		if skip, err = filter(ctx); err != nil {
			f.log.Debug("audit skipped: cannot read what retention expired", zap.Error(err))
			return
		}
	}
	held := make([]map[string]bool, len(f.stores))
	all := map[string]bool{}
	for i, s := range f.stores {
		// A failing store is compared in full once it answers; listing it
		// here would only wait on it.
		if f.isUnadmitted(i) || f.State(i) == Failing {
			continue
		}
		lctx, cancel := context.WithTimeout(ctx, f.AttemptTimeout)
		objs, err := s.List(lctx, f.AuditPrefix)
		cancel()
		if err != nil {
			continue
		}
		held[i] = make(map[string]bool, len(objs))
		for _, o := range objs {
			held[i][o.Key] = true
			if !skip(o.Key) {
				all[o.Key] = true
			}
		}
	}
	for i, have := range held {
		if have == nil {
			continue
		}
		for k := range all {
			if have[k] {
				continue
			}
			f.mu.Lock()
			lagging := f.state[i].state == Healthy
			if lagging {
				f.state[i] = storeState{state: Lagging, since: time.Now()}
			}
			f.mu.Unlock()
			if lagging {
				f.log.Info("store lacks objects another store holds (written while it did not answer another writer, such as 'wayback backup'): backfilling",
					zap.String("store", f.stores[i].URL()), zap.String("first", k))
			}
			break
		}
	}
}

// SetRepairFilter installs a function Repair calls once per pass; the
// predicate it returns says which keys must not be copied (objects that
// retention is deleting on purpose). A nil filter copies everything.
func (f *Fanout) SetRepairFilter(fn func(ctx context.Context) (skip func(key string) bool, err error)) {
	f.mu.Lock()
	f.repairFilter = fn
	f.mu.Unlock()
}

// Repair copies to store i every object another store holds and i lacks:
// archive metadata first, then segments in stream order, then backups with
// each manifest after the objects it lists, so that a store is never left
// claiming a backup it does not hold. It returns how many objects it
// copied; when nothing is left to copy the store is healthy.
func (f *Fanout) Repair(ctx context.Context, i int) (int, error) {
	target := f.stores[i]
	// Bounded: a store that holds requests without answering (a
	// black-holed route) must not stall the repair of the others.
	if err := CheckWithin(ctx, target, f.AttemptTimeout); err != nil {
		return 0, err
	}
	if err := f.admit(ctx, i); err != nil {
		return 0, err
	}
	have, err := target.List(ctx, "")
	if err != nil {
		return 0, err
	}
	present := map[string]bool{}
	for _, o := range have {
		present[o.Key] = true
	}
	f.mu.Lock()
	filter := f.repairFilter
	f.mu.Unlock()
	skip := func(string) bool { return false }
	if filter != nil {
		if skip, err = filter(ctx); err != nil {
			return 0, fmt.Errorf("repair %s: %w", target.URL(), err)
		}
	}
	sources := map[string][]int{} // key -> stores holding it
	for j, s := range f.stores {
		if j == i || f.isUnadmitted(j) {
			continue // an unadmitted store may hold another archive
		}
		objs, err := s.List(ctx, "")
		if err != nil {
			continue
		}
		for _, o := range objs {
			if !present[o.Key] && !skip(o.Key) {
				sources[o.Key] = append(sources[o.Key], j)
			}
		}
	}
	keys := make([]string, 0, len(sources))
	for k := range sources {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(a, b int) bool { return repairOrder(keys[a]) < repairOrder(keys[b]) })
	copied := 0
	for _, k := range keys {
		if err := f.copyObject(ctx, k, sources[k], i); err != nil {
			return copied, err
		}
		copied++
	}
	f.mu.Lock()
	if f.state[i].state != Healthy {
		f.log.Info("store caught up", zap.String("store", target.URL()), zap.Int("objects_copied", copied))
	}
	f.state[i] = storeState{state: Healthy, since: time.Now()}
	f.mu.Unlock()
	return copied, nil
}

// repairOrder sorts keys for backfill: archive.json, segments (in LSN
// order), backup objects, manifests last.
func repairOrder(key string) string {
	switch {
	case !strings.Contains(key, "/"):
		return "0" + key
	case strings.HasPrefix(key, "segments/"):
		return "1" + key
	case strings.HasSuffix(key, "/manifest.json"):
		return "3" + key
	}
	return "2" + key
}

func (f *Fanout) copyObject(ctx context.Context, key string, from []int, to int) error {
	var errs []error
	for _, j := range from {
		err := func() error {
			// Stream through a temporary file: backup objects can be large.
			tmp, err := os.CreateTemp("", "wayback-repair-*")
			if err != nil {
				return err
			}
			defer os.Remove(tmp.Name())
			defer tmp.Close()
			rc, err := f.stores[j].Get(ctx, key)
			if err != nil {
				return err
			}
			_, err = io.Copy(tmp, rc)
			rc.Close()
			if err != nil {
				return fmt.Errorf("read from %s: %w", f.stores[j].URL(), err)
			}
			if f.Verify != nil {
				if err := f.verifyFile(key, tmp); err != nil {
					return fmt.Errorf("copy in %s is invalid: %w", f.stores[j].URL(), err)
				}
			}
			r, size, closeFn, err := fileSource(tmp.Name())()
			if err != nil {
				return err
			}
			defer closeFn()
			actx, cancel := context.WithTimeout(ctx, f.AttemptTimeout)
			defer cancel()
			return f.stores[to].Put(actx, key, r, size)
		}()
		if err == nil {
			return nil
		}
		errs = append(errs, err)
	}
	return fmt.Errorf("backfill %s to %s: %w", key, f.stores[to].URL(), errors.Join(errs...))
}

// verifyFile runs Verify on objects small enough to check in memory
// (segments, manifests); large backup objects are checked at restore.
func (f *Fanout) verifyFile(key string, fh *os.File) error {
	st, err := fh.Stat()
	if err != nil || st.Size() > 256<<20 {
		return err
	}
	data, err := os.ReadFile(fh.Name())
	if err != nil {
		return err
	}
	return f.Verify(key, data)
}

// Wait blocks until outstanding background uploads and backfills finish;
// the stores stay open, for callers that keep using them.
func (f *Fanout) Wait() { f.bg.Wait() }

// Close waits for outstanding uploads and closes the stores.
func (f *Fanout) Close() error {
	f.Wait()
	var first error
	for _, s := range f.stores {
		if err := s.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}
