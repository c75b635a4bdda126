package wayback

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/wayback-pitr/wayback/agent"
	"github.com/wayback-pitr/wayback/basebackup"
	"github.com/wayback-pitr/wayback/crypt"
	"github.com/wayback-pitr/wayback/pitr"
	"github.com/wayback-pitr/wayback/replay"
	"github.com/wayback-pitr/wayback/store"
	"github.com/wayback-pitr/wayback/wal"
)

// Error kinds, for errors.Is. The errors themselves say what went wrong
// and what to do; these classify them.
var (
	// ErrNoBackup: the archive holds no complete base backup yet.
	ErrNoBackup = pitr.ErrNoBackup
	// ErrBeforeOldestBackup: the restore target is older than every backup.
	ErrBeforeOldestBackup = pitr.ErrBeforeOldestBackup
	// ErrAfterNewest: the restore target is newer than the archive reaches.
	ErrAfterNewest = pitr.ErrAfterNewest
	// ErrGap: no store holds a segment needed to reach the target.
	ErrGap = pitr.ErrGap
	// ErrCorrupt: an object failed its checksum in every store holding it.
	ErrCorrupt = wal.ErrCorrupt
	// ErrNeedsOperator: the agent stopped on something a restart cannot
	// fix (a lost slot, a slot ahead of the archive, a store holding
	// another database's archive); the message says what to do.
	ErrNeedsOperator = agent.ErrNeedsOperator
)

// TargetNotEmptyError (errors.As) is returned by Restore, before anything
// is written, when the target database already holds relations.
type TargetNotEmptyError = replay.TargetNotEmptyError

// NoReplicaIdentityError (errors.As) is returned by Setup when published
// tables lack a primary key and SetupOptions.FixReplicaIdentity is false.
type NoReplicaIdentityError = agent.ErrNoReplicaIdentity

// ArchiveOptions say where an archive lives.
type ArchiveOptions struct {
	// Stores are the URLs of the stores holding the archive: file:///dir,
	// s3://bucket/prefix, gs://bucket/prefix (see the README for options).
	Stores []string
	// Check contacts every store before Open returns, so a wrong bucket or
	// credential fails at once. Writers (agent, backup) want it; readers
	// can do without, since any one store holding a valid copy suffices.
	Check bool
	// Keys encrypt and decrypt the archive (docs/encryption.md); empty:
	// plaintext. An encrypted archive opened without its key fails here,
	// before anything is read. Load keys with crypt.LoadKeyFile.
	Keys crypt.Keyring
	// Write: the caller will write (agent, backup), so with Keys set the
	// archive's data key is created or rotated as needed.
	Write bool
	// MinReachable, with Check, is how many stores must answer for Open to
	// succeed; 0 means every store. Writers pass their min_copies: the
	// stores that do not answer stay in the archive (see Unreachable); an
	// agent started from it ships to the others and backfills them when
	// they answer, and Backup writes to the others. When fewer answer, Open
	// fails with a *store.UnreachableError naming them.
	MinReachable int
	// Log receives structured logs; nil discards them.
	Log *zap.Logger
}

// Archive is the set of stores holding one source's change stream and
// base backups. Its methods are safe to call one after another; an Agent
// started from it shares its stores.
type Archive struct {
	stores []store.Store
	log    *zap.Logger
	owned  bool
	down   []error // per store: why it did not answer the last check
	need   int     // stores that must answer a writer's check; 0: all
}

// Open opens every store of an archive.
func Open(ctx context.Context, o ArchiveOptions) (*Archive, error) {
	if len(o.Stores) == 0 {
		return nil, errors.New("no stores given: name at least one store URL (file://, s3:// or gs://)")
	}
	log := orNop(o.Log)
	var stores []store.Store
	closeAll := func() {
		for _, s := range stores {
			s.Close()
		}
	}
	for _, u := range o.Stores {
		s, err := store.Open(ctx, u, log)
		if err != nil {
			closeAll()
			return nil, err
		}
		stores = append(stores, s)
	}
	var down []error
	var isDown []bool
	need := 0
	if o.Check {
		need = o.MinReachable
		down, isDown = checkStores(ctx, stores)
		if err := reachable(stores, down, o.MinReachable); err != nil {
			closeAll()
			return nil, err
		}
	}
	wrapped, err := crypt.Wrap(ctx, stores, crypt.Options{Keys: o.Keys, Write: o.Write || o.Check, Log: log, Down: isDown})
	if err != nil {
		for _, s := range stores {
			s.Close()
		}
		return nil, err
	}
	return &Archive{stores: wrapped, log: log, owned: true, down: down, need: need}, nil
}

// checkStores checks every store at once and returns each store's error,
// and a flag per store for crypt.Wrap.
func checkStores(ctx context.Context, stores []store.Store) ([]error, []bool) {
	errs := store.CheckAll(ctx, stores, store.CheckTimeout)
	isDown := make([]bool, len(stores))
	for i, err := range errs {
		isDown[i] = err != nil
	}
	return errs, isDown
}

// reachable fails when fewer than need stores (0: all) answered.
func reachable(stores []store.Store, errs []error, need int) error {
	if need <= 0 || need > len(stores) {
		need = len(stores)
	}
	e := &store.UnreachableError{Required: need}
	for i, err := range errs {
		if err != nil {
			e.URLs = append(e.URLs, stores[i].URL())
			e.Errs = append(e.Errs, err)
		} else {
			e.Answered++
		}
	}
	if e.Answered >= need {
		return nil
	}
	return e
}

// Unreachable returns, per store (in the order of Stores), why it did not
// answer the last check (Open's, or the last Backup's) or failed during
// the last Backup, nil for the others (and for every store when nothing
// checked them). After a Backup these are the stores that lack it; later
// Backups of this Archive skip them too. An agent started from the
// archive treats these stores as failing from its start.
func (a *Archive) Unreachable() []error {
	out := make([]error, len(a.stores))
	copy(out, a.down)
	return out
}

// NewArchive wraps stores the caller opened (for example with an
// encryption layer around them). Close leaves them open.
func NewArchive(stores []store.Store, log *zap.Logger) *Archive {
	return &Archive{stores: stores, log: orNop(log)}
}

// Stores returns the archive's stores, in the order given.
func (a *Archive) Stores() []store.Store { return a.stores }

// Close releases the stores Open opened.
func (a *Archive) Close() error {
	if !a.owned {
		return nil
	}
	var first error
	for _, s := range a.stores {
		if err := s.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Catalog lists what the archive holds: base backups and segments per
// store. Log, Restore and Verify read it themselves; it is exported for
// callers that show or inspect the archive.
func (a *Archive) Catalog(ctx context.Context) (*pitr.Catalog, error) {
	return pitr.Load(ctx, a.stores, a.log)
}

// BackupOptions configure a base backup.
type BackupOptions struct {
	// DSN is the source database.
	DSN string
	// BinDir holds pg_dump of the server's major version ("" searches the
	// usual places).
	BinDir string
	// Parallel is how many tables are copied at once (default 2).
	Parallel int
	// CopyFormat is "auto" (default: binary COPY where every column has a
	// built-in type) or "text".
	CopyFormat string
	// Progress, if set, is called after each table is stored.
	Progress func(done, total int, table string)
}

// Backup takes a base backup of the source into the archive's stores. It
// is consistent with a point of the change stream, so that restores replay
// the archived segments from exactly there.
//
// It first checks the stores (all at once, each for at most
// store.CheckTimeout), except those already known not to answer
// (Unreachable). When at least MinReachable of them answer (every store
// for an archive opened without Check), the backup goes to those, each of
// which takes every object; the others are not waited on, lack the backup
// (Unreachable names them afterwards, and a warning is logged for each),
// and are backfilled by a running agent once they answer. When fewer
// answer, Backup fails with a *store.UnreachableError before anything is
// written.
//
// A store that answered but then fails a write (after the fan-out's
// quick retries, store.Fanout.DropFailing) is treated the same way from
// then on: it takes nothing more, so never the manifest, and Unreachable
// names it afterwards, as long as MinReachable stores are left. When fewer
// are left, Backup fails at once with an error naming the failed stores
// that wraps a *store.TooFewCopiesError, and no store gets the manifest:
// the objects already written are not a backup (retention deletes them
// once they are pitr.OrphanAge old). It never holds and retries as the
// agent does, so a cron job ends, in minutes at worst, and says why.
func (a *Archive) Backup(ctx context.Context, o BackupOptions) (*basebackup.Manifest, error) {
	down := a.Unreachable()
	var check []store.Store
	var at []int
	for i, s := range a.stores {
		if down[i] == nil {
			check, at = append(check, s), append(at, i)
		}
	}
	for j, err := range store.CheckAll(ctx, check, store.CheckTimeout) {
		down[at[j]] = err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := reachable(a.stores, down, a.need); err != nil {
		return nil, err
	}
	a.down = down
	need := a.need
	if need <= 0 || need > len(a.stores) {
		need = len(a.stores)
	}
	// Every store that answered takes every object, manifest last, so each
	// of them holds the whole backup; the others are skipped outright. One
	// that fails is dropped rather than waited for: a backup must end.
	fan := store.NewFanout(a.stores, need, a.log)
	fan.DropFailing = true
	for i, err := range down {
		if err != nil {
			fan.SetDown(i, err)
		}
	}
	m, err := basebackup.Take(ctx, fan, basebackup.Options{
		DSN: o.DSN, BinDir: o.BinDir, Parallel: max(o.Parallel, 2), CopyFormat: o.CopyFormat, Log: a.log, Progress: o.Progress,
	})
	fan.Wait()
	dropped := fan.Dropped()
	for i, derr := range dropped {
		if derr != nil {
			down[i] = derr
		}
	}
	if err != nil {
		var few *store.TooFewCopiesError
		if errors.As(err, &few) {
			return nil, &backupShortError{few: few}
		}
		return nil, err
	}
	holding := 0
	for _, err := range down {
		if err == nil {
			holding++
		}
	}
	for i, err := range down {
		switch {
		case dropped[i] != nil:
			a.log.Warn("store failed during the backup, so it lacks this backup: a running agent backfills it once the store answers; until then 'wayback verify' reports it as lacking the backup",
				zap.String("store", a.stores[i].URL()), zap.String("backup", m.ID), zap.Int("stores_holding_it", holding), zap.Error(err))
		case err != nil:
			a.log.Warn("store did not answer, so it lacks this backup: a running agent backfills it once the store answers; until then 'wayback verify' reports it as lacking the backup",
				zap.String("store", a.stores[i].URL()), zap.String("backup", m.ID), zap.Int("stores_holding_it", holding), zap.Error(err))
		}
	}
	return m, nil
}

// backupShortError says that stores failed during a backup until fewer
// than min_copies were left, so that it was abandoned without a manifest.
type backupShortError struct {
	few *store.TooFewCopiesError
}

func (e *backupShortError) Error() string {
	what := "backup"
	if rest, ok := strings.CutPrefix(e.few.Key, basebackup.Prefix); ok {
		id, _, _ := strings.Cut(rest, "/")
		what += " " + id
	}
	stores := func(n int) string {
		if n == 1 {
			return "1 store"
		}
		return fmt.Sprintf("%d stores", n)
	}
	return fmt.Sprintf("%s failed: %s failed while it was being written (%s), leaving %s taking it but min_copies is %d, "+
		"so no manifest was written anywhere and the objects already stored are not a backup (retention deletes them once they are %.0fh old). "+
		"Run 'wayback backup' again when the stores answer, or lower min_copies to back up to the others meanwhile",
		what, stores(len(e.few.URLs)), e.few.Stores(), stores(e.few.Left), e.few.Required, pitr.OrphanAge.Hours())
}

func (e *backupShortError) Unwrap() error { return e.few }

// Target is an instant to restore to; build one with AtTime, AtLSN, AtXID,
// AtMark or Latest.
type Target = pitr.Target

// AtTime is the state after every transaction committed at or before t.
func AtTime(t time.Time) Target { return Target{Kind: pitr.ToTime, Time: t} }

// AtLSN is the state after every transaction that committed at or before
// the log position lsn.
func AtLSN(lsn wal.LSN) Target { return Target{Kind: pitr.ToLSN, LSN: lsn} }

// AtXID is the state just after transaction xid committed, or just before
// it when exclusive.
func AtXID(xid uint32, exclusive bool) Target {
	return Target{Kind: pitr.ToXID, XID: xid, Exclusive: exclusive}
}

// AtMark is the state at a named restore point (see Mark).
func AtMark(name string) Target { return Target{Kind: pitr.ToMark, Mark: name} }

// Latest is everything the archive holds.
func Latest() Target { return Target{Kind: pitr.Latest} }

// ConflictPolicy says what a restore that skips transactions does when a
// later change no longer fits: "stop" (default), "skip" or "overwrite".
type ConflictPolicy = replay.ConflictPolicy

// RestoreOptions configure a restore.
type RestoreOptions struct {
	// TargetDSN is the database to restore into. It is created when
	// missing, must be empty otherwise, and is dropped again if Restore
	// created it and then fails.
	TargetDSN string
	// Target is the instant to restore to.
	Target Target
	// Skip lists transactions (by xid) to leave out.
	Skip []uint32
	// OnConflict applies when Skip is set; "" means stop.
	OnConflict ConflictPolicy
	// DryRun plans and verifies every needed object, and writes nothing.
	DryRun bool
	// Parallel is how many tables are loaded at once (default 2).
	Parallel int
	// TempDir holds downloaded segments during the restore ("" is the
	// system's temporary directory).
	TempDir string
	// Progress receives human-readable progress lines; nil: none.
	Progress func(format string, args ...any)
}

// RestoreResult reports what a restore did.
type RestoreResult = replay.RestoreResult

// Restore rebuilds the source database as it was at o.Target into
// o.TargetDSN: the newest base backup before the target, then every
// archived transaction after it up to the target, except those in Skip.
func (a *Archive) Restore(ctx context.Context, o RestoreOptions) (*RestoreResult, error) {
	skip := make(map[uint32]bool, len(o.Skip))
	for _, x := range o.Skip {
		skip[x] = true
	}
	policy := o.OnConflict
	if policy == "" {
		policy = replay.ConflictStop
	}
	if _, err := replay.ParseConflictPolicy(string(policy)); err != nil {
		return nil, err
	}
	if o.TargetDSN == "" && !o.DryRun {
		return nil, errors.New("no target database: set RestoreOptions.TargetDSN (created when missing, must be empty)")
	}
	return replay.Restore(ctx, replay.RestoreOptions{
		Stores: a.stores, TargetDSN: o.TargetDSN, Target: o.Target, Skip: skip, OnConflict: policy,
		DryRun: o.DryRun, Parallel: max(o.Parallel, 1), TempDir: o.TempDir, Log: a.log, Progress: o.Progress,
	})
}

// LogOptions filter the transactions Log reports.
type LogOptions = pitr.LogOptions

// LogEntry is one archived transaction with its per-table change counts.
type LogEntry = pitr.LogEntry

// Log calls fn for each archived transaction that o selects, oldest
// first. Returning an error from fn stops the walk and returns it.
func (a *Archive) Log(ctx context.Context, o LogOptions, fn func(*LogEntry) error) error {
	cat, err := a.Catalog(ctx)
	if err != nil {
		return err
	}
	return cat.Log(ctx, o, fn)
}

// UndoOptions choose the transactions to revert.
type UndoOptions struct {
	// XIDs are the transactions to revert.
	XIDs []uint32
	// SourceDSN, if set, is read for foreign keys so that re-inserted rows
	// go in parents first and deletes go children first.
	SourceDSN string
}

// UndoResult is the SQL that reverts transactions, and the later
// transactions that touched the same rows.
type UndoResult = replay.UndoResult

// Undo writes SQL that reverts the transactions on the live database, in
// one transaction, with full old rows reconstructed from the archive even
// when the stream carried only keys.
func (a *Archive) Undo(ctx context.Context, o UndoOptions) (*UndoResult, error) {
	return replay.Undo(ctx, replay.UndoOptions{Stores: a.stores, XIDs: o.XIDs, SourceDSN: o.SourceDSN, Log: a.log})
}

// VerifyReport is the per-store verdict of Verify.
type VerifyReport = pitr.VerifyReport

// Verify reads every object in every store, checks its checksum and the
// continuity of the segment chain, and reports per store. The report's
// Err is non-nil when any store is broken or has a gap. progress, if set,
// receives human-readable lines.
func (a *Archive) Verify(ctx context.Context, progress func(format string, args ...any)) (*VerifyReport, error) {
	return pitr.Verify(ctx, a.stores, a.log, progress)
}

func orNop(l *zap.Logger) *zap.Logger {
	if l == nil {
		return zap.NewNop()
	}
	return l
}
