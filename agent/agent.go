// Package agent is the long-running sidecar: it streams the source's
// logical changes into segments, ships them to every store, advances the
// replication slot only past what is durable, and takes base backups.
package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/wayback-pitr/wayback/basebackup"
	"github.com/wayback-pitr/wayback/config"
	"github.com/wayback-pitr/wayback/crypt"
	"github.com/wayback-pitr/wayback/metrics"
	"github.com/wayback-pitr/wayback/pitr"
	"github.com/wayback-pitr/wayback/store"
	"github.com/wayback-pitr/wayback/wal"
)

// Options configures an Agent.
type Options struct {
	Config config.Config
	Fanout *store.Fanout
	Log    *zap.Logger
	// NoInitialBackup stops the agent from taking a base backup on start
	// when the archive has none.
	NoInitialBackup bool
	// StatusInterval is how often the slot position is reported to the
	// server when nothing else prompts it (default 10s).
	StatusInterval time.Duration
	// RepairInterval is how often lagging or failing stores are checked and
	// backfilled (default 10s).
	RepairInterval time.Duration
	// SlotInterval is how often the slot's retained WAL and status are
	// checked (default 5s).
	SlotInterval time.Duration
	// Down holds, per store (in Fanout order), why it did not answer when
	// the archive was opened, nil for stores that answered. Run does not
	// check those again: they start failing, as if they had failed while
	// running, and are backfilled once they answer. Run checks the others
	// itself, so Down may be nil.
	Down []error
}

// Agent ships the change stream of one database.
type Agent struct {
	opts  Options
	log   *zap.Logger
	stats Stats
	mu    sync.Mutex

	metrics   *metrics.Metrics
	identity  pitr.ArchiveInfo     // this source, as archive.json names it
	serverEnd wal.LSN              // newest server WAL end seen on the stream
	streaming bool                 // a replication session is open
	commits   map[string]time.Time // segment key -> newest commit, for per-store metrics
}

// Stats are the agent's counters, for status output, metrics and tests.
type Stats struct {
	Segments    int64
	Bytes       int64 // stored (compressed) segment bytes
	Txns        int64
	DurableLSN  wal.LSN
	LastDurable time.Time // commit time of the newest durable transaction
	// RPO holds, per shipped segment with transactions, the delay from its
	// newest commit to the moment it was durable in min_copies stores.
	RPO []time.Duration
	// Backup is the state of scheduled base backups.
	Backup BackupStatus
}

// New returns an agent; Run starts it.
func New(o Options) *Agent {
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.StatusInterval <= 0 {
		o.StatusInterval = 10 * time.Second
	}
	if o.RepairInterval <= 0 {
		o.RepairInterval = 10 * time.Second
	}
	if o.SlotInterval <= 0 {
		o.SlotInterval = 5 * time.Second
	}
	a := &Agent{opts: o, log: o.Log}
	a.metrics = metrics.New(metrics.Sources{Lag: a.lag})
	for _, s := range o.Fanout.Stores() {
		a.metrics.AddStore(store.Redact(s.URL()))
	}
	o.Fanout.OnWrite = a.onWrite
	return a
}

// Stats returns a copy of the counters.
func (a *Agent) Stats() Stats {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.stats
	s.RPO = append([]time.Duration(nil), a.stats.RPO...)
	return s
}

// Run streams until ctx is cancelled, then drains: everything received and
// committed is made durable and acknowledged before it returns. Connection
// failures are retried; configuration errors are returned at once.
func (a *Agent) Run(ctx context.Context) error {
	up, down, err := a.checkStores(ctx)
	if err != nil {
		return err
	}
	// Everything read at start comes from the stores that answered; what
	// needs the whole archive refuses to guess while a store is down.
	if err := a.ensureArchive(ctx, up, down); err != nil {
		return err
	}
	cat, err := pitr.Load(ctx, up, a.log)
	if err != nil {
		return err
	}
	if err := a.checkResume(ctx, cat, down); err != nil {
		return err
	}
	a.opts.Fanout.Admit = a.admit
	for _, b := range cat.Backups {
		a.metrics.BaseBackup(b.FinishedAt, b.FinishedAt.Sub(b.StartedAt))
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var fatalMu sync.Mutex
	var fatal error
	fail := func(err error) {
		fatalMu.Lock()
		if fatal == nil {
			fatal = err
			a.log.Error("stopping", zap.Error(err))
		}
		fatalMu.Unlock()
		cancel()
	}
	failed := func() error {
		fatalMu.Lock()
		defer fatalMu.Unlock()
		return fatal
	}
	if addr := a.opts.Config.Metrics.Listen; addr != "" {
		done, err := metrics.Serve(ctx, addr, a.metrics.Handler(a.Ready), a.log)
		if err != nil {
			return fatalError{err}
		}
		defer func() { <-done }()
	}
	var bg sync.WaitGroup
	defer bg.Wait()
	bg.Add(1)
	go func() {
		defer bg.Done()
		a.watchSlot(ctx, fail)
	}()
	// Backfill stores that missed objects (an outage, a store added to the
	// configuration) beside the live stream, never in its way.
	a.opts.Fanout.Verify = pitr.CheckObject
	// Retention deletes on purpose what backfill must not copy back. One
	// readable copy of retention.json is enough: every store gets one.
	a.opts.Fanout.SetRepairFilter(func(ctx context.Context) (func(string) bool, error) {
		st, err := pitr.ReadRetentionState(ctx, a.opts.Fanout.Stores())
		if st == nil && err != nil {
			return nil, err
		}
		return st.Gone, nil
	})
	// Backups are also written by `wayback backup`, which skips a store
	// that does not answer it: every sixth pass (a minute by default) the
	// stores' backups are compared, so that such a store is backfilled
	// although the stream's own writes to it never failed.
	a.opts.Fanout.AuditPrefix = basebackup.Prefix
	a.opts.Fanout.AuditEvery = 6 * a.opts.RepairInterval
	bg.Add(1)
	go func() {
		defer bg.Done()
		a.opts.Fanout.RunRepair(ctx, a.opts.RepairInterval)
	}()
	first := false
	if !a.opts.NoInitialBackup {
		first = len(cat.Backups) == 0
	}
	bg.Add(1)
	go func() {
		defer bg.Done()
		a.runSchedule(ctx, first)
	}()
	bg.Add(1)
	go func() {
		defer bg.Done()
		a.recordSequences(ctx)
	}()
	backoff := time.Second
	for {
		err := a.session(ctx)
		if f := failed(); f != nil {
			return f
		}
		if ctx.Err() != nil {
			return nil
		}
		if isFatal(err) {
			return err
		}
		a.log.Warn("replication session ended; reconnecting", zap.Error(err), zap.Duration("in", backoff))
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return failed()
		}
		backoff = min(backoff*2, 30*time.Second)
	}
}

// ErrNeedsOperator classifies (errors.Is) the errors Run stops on that
// restarting the agent cannot fix: a lost or missing slot, a slot ahead of
// the archive, a store holding another database's archive. A supervisor
// should not restart on them (the CLI exits with status 3); everything else
// Run returns is worth a restart after a pause.
var ErrNeedsOperator = errors.New("needs an operator")

// fatalError marks problems that retrying cannot fix.
type fatalError struct{ error }

func (f fatalError) Unwrap() []error { return []error{f.error, ErrNeedsOperator} }

func isFatal(err error) bool {
	var f fatalError
	return errors.As(err, &f)
}

// slotState reads the slot's resume position.
func (a *Agent) slotState(ctx context.Context) (wal.LSN, error) {
	cfg := a.opts.Config
	conn, err := pgx.Connect(ctx, cfg.Postgres.DSN)
	if err != nil {
		return 0, fmt.Errorf("connect to source: %w", err)
	}
	defer conn.Close(context.Background())
	var confirmed *string
	var walStatus *string
	err = conn.QueryRow(ctx, `SELECT confirmed_flush_lsn::text, wal_status FROM pg_replication_slots
		WHERE slot_name = $1 AND database = current_database() AND plugin = 'pgoutput'`, cfg.Postgres.Slot).Scan(&confirmed, &walStatus)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, fatalError{fmt.Errorf("replication slot %q does not exist in this database: run 'wayback setup' first", cfg.Postgres.Slot)}
	}
	if err != nil {
		return 0, fmt.Errorf("read slot %q: %w", cfg.Postgres.Slot, err)
	}
	if walStatus != nil && *walStatus == "lost" {
		return 0, fatalError{fmt.Errorf("replication slot %q was invalidated (wal_status lost): the WAL it needed is gone, so the archive has a gap. Drop the slot, run 'wayback setup' and 'wayback backup' to start a new restorable range", cfg.Postgres.Slot)}
	}
	if confirmed == nil {
		return 0, fatalError{fmt.Errorf("replication slot %q has no confirmed position", cfg.Postgres.Slot)}
	}
	return wal.ParseLSN(*confirmed)
}

// checkStores checks every store not already known to be down (all at
// once, each for at most store.CheckTimeout). The agent starts when at
// least min_copies answer: the others start failing in the fan-out and are
// backfilled when they answer, exactly as after an outage while running.
// It returns the stores that answered and the URLs of those that did not.
func (a *Agent) checkStores(ctx context.Context) (up []store.Store, down []string, err error) {
	stores := a.opts.Fanout.Stores()
	errs := make([]error, len(stores))
	var check []store.Store
	var at []int
	for i, s := range stores {
		if i < len(a.opts.Down) && a.opts.Down[i] != nil {
			errs[i] = a.opts.Down[i]
			continue
		}
		check, at = append(check, s), append(at, i)
	}
	for j, err := range store.CheckAll(ctx, check, store.CheckTimeout) {
		errs[at[j]] = err
	}
	if ctx.Err() != nil {
		return nil, nil, ctx.Err()
	}
	unreachable := &store.UnreachableError{Required: a.opts.Fanout.MinCopies()}
	for i, err := range errs {
		if err != nil {
			unreachable.URLs = append(unreachable.URLs, stores[i].URL())
			unreachable.Errs = append(unreachable.Errs, err)
			continue
		}
		up = append(up, stores[i])
	}
	if len(up) < unreachable.Required {
		unreachable.Answered = len(up)
		return nil, nil, unreachable
	}
	for i, err := range errs {
		if err == nil {
			continue
		}
		a.opts.Fanout.SetDown(i, err)
		a.metrics.StoreUp(store.Redact(stores[i].URL()), false)
		a.log.Warn("store did not answer at start: shipping to the stores that did; it is backfilled with everything it missed once it answers",
			zap.String("store", stores[i].URL()), zap.Int("answered", len(up)), zap.Int("min_copies", unreachable.Required), zap.Error(err))
	}
	// The slot itself is checked against the archive by checkResume.
	return up, unreachable.URLs, nil
}

// ensureArchive writes archive.json where the archive lacks it and refuses
// to mix two databases' streams in one archive. It reads only the stores
// that answered (up); down names the others. A store lacking archive.json
// gets a copy of the one the others hold, so the archive keeps one
// identity. When no store that answered holds one, a new one is written
// only if no store is down: the down store may hold the archive's
// identity, and a second one must not be invented beside it.
func (a *Agent) ensureArchive(ctx context.Context, up []store.Store, down []string) error {
	conn, err := pgx.Connect(ctx, a.opts.Config.Postgres.DSN)
	if err != nil {
		return fmt.Errorf("connect to source: %w", err)
	}
	defer conn.Close(context.Background())
	info := pitr.ArchiveInfo{Format: "wayback", Version: pitr.ArchiveVersion, Created: time.Now().UTC()}
	if err := conn.QueryRow(ctx, "SELECT (SELECT system_identifier::text FROM pg_control_system()), current_database()").Scan(&info.SystemID, &info.Database); err != nil {
		return fmt.Errorf("identify source: %w", err)
	}
	a.identity = info
	var found *pitr.ArchiveInfo
	var missing []store.Store
	for _, s := range up {
		existing, err := pitr.ReadArchiveInfo(ctx, []store.Store{s})
		if err != nil {
			return err
		}
		if existing == nil {
			missing = append(missing, s)
			continue
		}
		if err := a.sameSource(s, existing); err != nil {
			return fatalError{err}
		}
		if found == nil {
			found = existing
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if found == nil && len(down) > 0 {
		return fmt.Errorf("no store that answered holds archive.json (the archive's identity), and %s did not answer: it may hold it, so no new archive is started beside it. Start again when it answers, or remove it from the configuration if it is gone for good",
			strings.Join(down, ", "))
	}
	if found == nil {
		found = &info
	}
	b, err := json.MarshalIndent(found, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", pitr.ArchiveKey, err)
	}
	for _, s := range missing {
		if err := store.PutBytes(ctx, s, pitr.ArchiveKey, b); err != nil {
			return fmt.Errorf("write %s to %s: %w", pitr.ArchiveKey, s.URL(), err)
		}
	}
	return nil
}

// sameSource refuses an archive.json naming another database.
func (a *Agent) sameSource(s store.Store, existing *pitr.ArchiveInfo) error {
	info := a.identity
	if existing.SystemID != info.SystemID || existing.Database != info.Database {
		return fmt.Errorf("store %s holds the archive of another database (system %s, database %q; this is system %s, database %q): give each database its own store prefix",
			s.URL(), existing.SystemID, existing.Database, info.SystemID, info.Database)
	}
	return nil
}

// admit is the fan-out's Admit: a store that was down at start is checked
// as start-up would have checked it before anything is written to it. Its
// archive.json must name this source (backfill copies it when absent), and
// with encryption it first receives the archive's key objects, so that
// everything backfilled or shipped to it afterwards can be read from it
// alone.
func (a *Agent) admit(ctx context.Context, i int) error {
	s := a.opts.Fanout.Stores()[i]
	existing, err := pitr.ReadArchiveInfo(ctx, []store.Store{s})
	if err != nil {
		return fmt.Errorf("read %s: %w", pitr.ArchiveKey, err)
	}
	if existing != nil {
		if err := a.sameSource(s, existing); err != nil {
			return err
		}
	}
	if cs, ok := s.(*crypt.Store); ok {
		if err := cs.SyncKeys(ctx); err != nil {
			return err
		}
	}
	return nil
}

type pending struct {
	key  string
	data []byte
	info wal.SegmentInfo
}

// session runs one replication connection until it fails or ctx ends.
func (a *Agent) session(ctx context.Context) error {
	cfg := a.opts.Config
	start, err := a.slotState(ctx)
	if err != nil {
		return err
	}
	st, err := wal.StartStream(ctx, cfg.Postgres.DSN, cfg.Postgres.Slot, cfg.Postgres.Publication, start)
	if err != nil {
		return err
	}
	defer st.Close(context.Background())
	a.log.Info("streaming", zap.String("slot", cfg.Postgres.Slot), zap.Stringer("from", start))
	a.setStreaming(true)
	defer a.setStreaming(false)

	// The uploader runs beside the receiver so that decoding continues
	// while a segment is in flight; acknowledgements stay in order because
	// segments are uploaded one after another.
	upCtx, upCancel := context.WithCancel(context.WithoutCancel(ctx))
	defer upCancel()
	queue := make(chan pending, 4)
	var durable atomic.Uint64
	durable.Store(uint64(start))
	upErr := make(chan error, 1)
	go func() {
		defer close(upErr)
		for p := range queue {
			if err := a.opts.Fanout.Put(upCtx, p.key, p.data); err != nil {
				upErr <- err
				return
			}
			durable.Store(uint64(p.info.To))
			a.recordDurable(p)
		}
	}()

	flushEvery := time.Duration(cfg.FlushInterval)
	idleEvery := max(10*flushEvery, 10*time.Second)
	b := wal.NewBuilder(start)
	acked := start
	var firstPending time.Time // when the oldest unshipped commit arrived
	lastCut := time.Now()
	nextStatus := time.Now()
	inflight := 0

	cut := func() error {
		data, info, err := b.Cut(true)
		if err != nil {
			return err
		}
		lastCut, firstPending = time.Now(), time.Time{}
		p := pending{key: wal.SegmentKey(info.From, info.To), data: data, info: info}
		a.noteSegment(p.key, info.LastCommit)
		for {
			select {
			case queue <- p:
				inflight++
				return nil
			case err := <-upErr:
				return fmt.Errorf("ship segment: %w", err)
			case <-time.After(a.opts.StatusInterval / 2):
				// Stores are slow or down: keep the walsender from timing
				// us out while we wait, without acknowledging anything new.
				if err := st.Ack(ctx, wal.LSN(durable.Load()), false); err != nil {
					return err
				}
			}
		}
	}
	drain := func() error {
		b.Abandon()
		if b.Txns() > 0 || b.To() > b.From() {
			if err := cut(); err != nil {
				return err
			}
		}
		close(queue)
		done := make(chan struct{})
		go func() {
			for range upErr {
			}
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			upCancel()
			<-done
			a.log.Warn("shutdown: stores did not confirm the last segment in 30s; it will be re-sent after restart")
		}
		d := wal.LSN(durable.Load())
		if err := st.Ack(context.Background(), d, false); err != nil {
			return err
		}
		a.log.Info("stopped", zap.Stringer("durable_lsn", d))
		return nil
	}

	for {
		if ctx.Err() != nil {
			return drain()
		}
		now := time.Now()
		due := now.Add(time.Hour)
		switch {
		case b.Txns() > 0:
			due = firstPending.Add(flushEvery)
		case b.To() > b.From():
			due = lastCut.Add(idleEvery)
		}
		if b.Len() >= int(cfg.MaxSegment) || (b.Txns() > 0 || b.To() > b.From()) && !now.Before(due) {
			if err := cut(); err != nil {
				return err
			}
			continue
		}
		if d := wal.LSN(durable.Load()); d > acked || !now.Before(nextStatus) {
			// Ask for a keepalive when idle: its position lets an empty
			// segment cover the quiet stretch, so the slot can advance.
			if err := st.Ack(ctx, d, b.Txns() == 0 && !b.InTxn()); err != nil {
				return err
			}
			if d > acked {
				inflight = 0
			}
			acked, nextStatus = d, now.Add(a.opts.StatusInterval)
		}
		deadline := earliest(due, nextStatus)
		if inflight > 0 {
			deadline = earliest(deadline, now.Add(20*time.Millisecond))
		}
		ev, err := st.Receive(ctx, deadline)
		if wal.IsTimeout(err) {
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				return drain()
			}
			return err
		}
		select {
		case err, ok := <-upErr:
			if ok && err != nil {
				return fmt.Errorf("ship segment: %w", err)
			}
		default:
		}
		a.noteServerEnd(ev.ServerWALEnd)
		if ev.Keepalive {
			b.Extend(ev.ServerWALEnd, ev.ServerTime)
			if ev.ReplyRequested {
				if err := st.Ack(ctx, wal.LSN(durable.Load()), false); err != nil {
					return err
				}
			}
			continue
		}
		committed, err := b.AddAt(ev.Msg, ev.WALStart)
		if err != nil {
			return fmt.Errorf("decode stream: %w", err)
		}
		if committed && firstPending.IsZero() {
			firstPending = time.Now()
		}
	}
}

func (a *Agent) recordDurable(p pending) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.stats.Segments++
	a.stats.Bytes += int64(len(p.data))
	a.stats.Txns += int64(p.info.Txns)
	a.stats.DurableLSN = p.info.To
	if p.info.Txns > 0 {
		a.stats.LastDurable = p.info.LastCommit
		lag := time.Since(p.info.LastCommit)
		a.metrics.Durable(lag)
		a.stats.RPO = append(a.stats.RPO, lag)
		if len(a.stats.RPO) > 100000 {
			a.stats.RPO = a.stats.RPO[len(a.stats.RPO)-50000:]
		}
		a.log.Debug("segment durable", zap.String("key", p.key), zap.Uint32("txns", p.info.Txns), zap.Int("bytes", len(p.data)), zap.Duration("commit_to_durable", lag))
	}
}

func (a *Agent) setStreaming(on bool) {
	a.mu.Lock()
	a.streaming = on
	a.mu.Unlock()
	a.metrics.Streaming(on)
}

func (a *Agent) noteServerEnd(l wal.LSN) {
	a.mu.Lock()
	a.serverEnd = max(a.serverEnd, l)
	a.mu.Unlock()
}

func earliest(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// recordSequences writes the source's sequence positions into the stream
// (a transactional logical message, prefix wayback.seq) whenever they have
// moved, checking once per flush interval while transactions are shipped.
// Sequences are not in PostgreSQL 15's logical stream; these snapshots let
// a restore put each sequence where the source had it.
func (a *Agent) recordSequences(ctx context.Context) {
	every := time.Duration(a.opts.Config.FlushInterval)
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	var lastTxns int64 = -1
	last := ""
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
		if txns := a.Stats().Txns; txns == lastTxns {
			continue
		} else {
			lastTxns = txns
		}
		err := func() error {
			if conn == nil {
				c, err := pgx.Connect(ctx, a.opts.Config.Postgres.DSN)
				if err != nil {
					return err
				}
				conn = c
			}
			var snap string
			err := conn.QueryRow(ctx, `SELECT coalesce(json_agg(json_build_object('s', schemaname, 'n', sequencename, 'v', last_value)
				ORDER BY schemaname, sequencename), '[]')::text FROM pg_sequences WHERE last_value IS NOT NULL`).Scan(&snap)
			if err != nil || snap == last {
				return err
			}
			if _, err := conn.Exec(ctx, "SELECT pg_logical_emit_message(true, 'wayback.seq', $1)", snap); err != nil {
				return err
			}
			last = snap
			return nil
		}()
		if err != nil && ctx.Err() == nil {
			if !failing {
				a.log.Warn("cannot record sequence positions; restores will set sequences past the largest value in their columns", zap.Error(err))
			}
			failing = true
			if conn != nil {
				conn.Close(context.Background())
				conn = nil
			}
		} else if err == nil && failing {
			failing = false
			a.log.Info("recording sequence positions again")
		}
	}
}
