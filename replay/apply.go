package replay

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"

	"github.com/wayback-pitr/wayback/pitr"
	"github.com/wayback-pitr/wayback/wal"
)

// Options configures Apply.
type Options struct {
	Log *zap.Logger
	// Skip lists transactions (by xid) to leave out.
	Skip map[uint32]bool
	// Progress, if set, is called after each applied transaction.
	Progress func(s *Summary)
	// BatchSize bounds the statements sent in one round trip.
	BatchSize int
	// OnConflict applies when Skip is set and a later change does not fit
	// (default ConflictStop).
	OnConflict ConflictPolicy
	// Dependencies from AnalyzeSkip, to name the skipped transaction in
	// conflict messages.
	Dependencies []Dependency
}

// Summary reports what a replay did.
type Summary struct {
	Applied    int       // transactions applied
	Skipped    int       // transactions left out on request
	Changes    int64     // row changes applied
	LastXID    uint32    // newest applied transaction
	LastCommit time.Time // its commit time
	LastLSN    wal.LSN   // its commit LSN
	// StoppedBefore is the first transaction beyond the target, if one was
	// seen (nil when the archive ended first).
	StoppedBefore *TxnRef
	// Conflicts lists the changes that did not apply cleanly because of
	// skipped transactions, and what was done about them.
	Conflicts []Conflict

	sequences []sequenceValue // newest snapshot applied
}

// TxnRef identifies a transaction in messages and summaries.
type TxnRef struct {
	XID        uint32
	CommitLSN  wal.LSN
	CommitTime time.Time
}

// errStop ends decoding once the target is reached.
var errStop = errors.New("target reached")

// Apply replays segs onto the database at dsn: exactly the transactions
// whose commit record is at or after start (the base backup's consistent
// point), in commit order, each in its own transaction, stopping before
// the first one beyond target.
func Apply(ctx context.Context, dsn string, start wal.LSN, target pitr.Target, segs []pitr.LocalSegment, opts Options) (*Summary, error) {
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = 1000
	}
	conn, err := wal.ConnectText(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("connect to target: %w", err)
	}
	defer conn.Close(context.Background())
	// Triggers and foreign-key checks must not fire: their effects are in
	// the stream already, as changes of their own.
	if _, err := conn.Exec(ctx, "SET session_replication_role = replica"); err != nil {
		return nil, fmt.Errorf("set session_replication_role on the target (needs a superuser): %w", err)
	}
	// A restore that fails part-way is discarded whole, so waiting for each
	// commit to reach disk buys nothing.
	if _, err := conn.Exec(ctx, "SET synchronous_commit = off"); err != nil {
		return nil, err
	}
	// Every replayed UPDATE and DELETE finds one row by its replica
	// identity, which is what the identity's index is for; a native apply
	// worker always uses it. The planner prefers a sequential scan of a
	// small table (pgbench_branches: one page when the base was loaded),
	// and a table updated many times in one target transaction grows by a
	// dead version per update that no one can prune before the commit, so
	// each scan gets longer: replay of a pgbench backlog spent most of its
	// server time in such scans (4.5x slower). Where a table has no usable
	// index the plan is a sequential scan still, costed so high (the
	// disable cost) that it would pass jit_above_cost and be JIT-compiled
	// at every execution (a second per one-row UPDATE): JIT never pays
	// for statements that touch one row. DDL runs with the defaults (see
	// message).
	if _, err := conn.Exec(ctx, "SET enable_seqscan = off; SET jit = off"); err != nil {
		return nil, fmt.Errorf("set the planner settings of the replay session: %w", err)
	}
	if opts.OnConflict == "" {
		opts.OnConflict = ConflictStop
	}
	sum := &Summary{}
	a := &applier{conn: conn.PgConn(), prepared: map[string]string{}, tables: targetTables{}, held: map[heldTrigger]bool{}, opts: opts, sum: sum}
	if err := a.holdTriggers(ctx); err != nil {
		return sum, err
	}
	next := start // commit LSNs below this are in the base backup or already applied
	dec := wal.NewDecoder()
	for _, seg := range segs {
		data, err := os.ReadFile(seg.Path)
		if err != nil {
			return sum, fmt.Errorf("read fetched segment: %w", err)
		}
		_, body, err := wal.DecodeSegment(data)
		if err != nil {
			return sum, fmt.Errorf("segment %s: %w", seg.Path, err)
		}
		err = dec.Decode(body, func(txn *wal.Txn) error {
			if txn.CommitLSN < next {
				return nil
			}
			if sum.StoppedBefore == nil && target.Beyond(txn) {
				sum.StoppedBefore = &TxnRef{XID: txn.XID, CommitLSN: txn.CommitLSN, CommitTime: txn.CommitTime}
			}
			if sum.StoppedBefore != nil {
				// Past the target: only look for the next sequence
				// snapshot, which is at or past every value handed out by
				// the target.
				if snap := sequenceSnapshot(txn); snap != nil {
					sum.sequences = snap
					return errStop
				}
				next = txn.EndLSN
				return nil
			}
			next = txn.EndLSN
			if opts.Skip[txn.XID] {
				sum.Skipped++
				opts.Log.Info("skipping transaction on request", zap.Uint32("xid", txn.XID), zap.Stringer("commit_lsn", txn.CommitLSN))
				return nil
			}
			if err := a.apply(ctx, txn); err != nil {
				return err
			}
			sum.Applied++
			sum.Changes += int64(len(txn.Changes))
			sum.LastXID, sum.LastCommit, sum.LastLSN = txn.XID, txn.CommitTime, txn.CommitLSN
			if opts.Progress != nil {
				opts.Progress(sum)
			}
			return nil
		})
		// Queued statements alias this segment's buffer: send them now.
		if ferr := a.send(ctx); ferr != nil && err == nil {
			err = ferr
		}
		if errors.Is(err, errStop) {
			break
		}
		if err != nil {
			return sum, err
		}
	}
	if err := a.commit(ctx); err != nil {
		return sum, err
	}
	if err := a.flush(ctx); err != nil {
		return sum, err
	}
	if err := a.releaseTriggers(ctx); err != nil {
		return sum, err
	}
	if err := setSequences(ctx, conn, sum.sequences); err != nil {
		return sum, err
	}
	return sum, nil
}

// heldTrigger is a trigger replay disabled, with the mode to give back.
type heldTrigger struct {
	table, name string // quoted
	mode        string // "A" (ENABLE ALWAYS) or "R" (ENABLE REPLICA)
}

// holdTriggers disables the triggers that would fire under
// session_replication_role = replica (ENABLE ALWAYS and ENABLE REPLICA):
// what they did on the source is in the stream as changes of its own, so
// firing them again would do it twice. It runs before replay and after
// every replayed DDL, which may have created or re-enabled such triggers;
// releaseTriggers gives them their modes back at the end.
func (a *applier) holdTriggers(ctx context.Context) error {
	res, err := a.catalogQuery(ctx, `SELECT pg_catalog.format('%I.%I', n.nspname, c.relname), pg_catalog.quote_ident(t.tgname), t.tgenabled::text
		FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		WHERE t.tgenabled IN ('A', 'R') AND NOT t.tgisinternal AND t.tgparentid = 0`)
	if err != nil {
		return fmt.Errorf("list triggers that fire during replay: %w", err)
	}
	for _, row := range res.Rows {
		h := heldTrigger{table: string(row[0]), name: string(row[1]), mode: string(row[2])}
		if err := a.exec(ctx, "ALTER TABLE "+h.table+" DISABLE TRIGGER "+h.name); err != nil {
			return err
		}
		a.held[h] = true
	}
	return nil
}

// releaseTriggers re-enables the held triggers in their modes.
func (a *applier) releaseTriggers(ctx context.Context) error {
	for h := range a.held {
		mode := "ALWAYS"
		if h.mode == "R" {
			mode = "REPLICA"
		}
		// The table or trigger may have been dropped by later DDL.
		res, err := a.catalogQuery(ctx, `SELECT 1 FROM pg_catalog.pg_trigger WHERE tgrelid = pg_catalog.to_regclass(`+sqlString(h.table)+`)
			AND pg_catalog.quote_ident(tgname) = `+sqlString(h.name)+` AND tgenabled = 'D'`)
		if err != nil {
			return err
		}
		if len(res.Rows) == 0 {
			continue
		}
		if err := a.exec(ctx, "ALTER TABLE "+h.table+" ENABLE "+mode+" TRIGGER "+h.name); err != nil {
			return err
		}
	}
	return nil
}

type applier struct {
	conn     *pgconn.PgConn
	prepared map[string]string    // SQL text -> statement name
	tables   targetTables         // cache of the target's tables, cleared by DDL
	held     map[heldTrigger]bool // triggers disabled for the replay, with their modes
	opts     Options
	sum      *Summary
	batch    []queued
	// inflight reads the results of sent, the batch the server is
	// executing (nil: none); see send.
	inflight *pgconn.MultiResultReader
	sent     []queued
	open     bool // a target transaction is open
	inGroup  int  // statements in the open target transaction
	// rows maps a row of a mergeable table (see targetTable.mergeable)
	// to the queued UPDATE of it that a later UPDATE of the same row can
	// be merged into: table name -> row key -> index in batch.
	rows map[string]map[string]int
	// shapes caches statement texts (see build), cleared with tables.
	shapes map[shapeKey]string
	// runs holds each table's open run in the batch (see fuse.go).
	runs    map[string]runState
	nextRun int
}

// groupStatements is how many statements consecutive source transactions
// may add to one target transaction. Committing every source transaction
// separately costs a round trip and a commit each; grouping gives the same
// end state (a failed restore is discarded whole) several times faster.
const groupStatements = 5000

// queued is a statement waiting in the batch, with the transaction it
// belongs to for error messages.
type queued struct {
	stmt
	raw bool // BEGIN or COMMIT, not a prepared statement
	txn TxnRef
	// stale: change was merged into (see merge) and the statement is
	// built from it at flush.
	stale bool
	// run is the run of changes to one table this change may be fused
	// with (0: none; see fuse.go).
	run int
	// fused is how many changes this statement replaces (0: one, built
	// alone); they come from transactions txn to lastTxn.
	fused   int
	lastTxn TxnRef
}

func (a *applier) apply(ctx context.Context, txn *wal.Txn) error {
	if len(a.opts.Skip) > 0 {
		if err := a.exec(ctx, "BEGIN"); err != nil {
			return err
		}
		return a.applyCareful(ctx, txn)
	}
	ref := TxnRef{XID: txn.XID, CommitLSN: txn.CommitLSN, CommitTime: txn.CommitTime}
	// DDL gets a target transaction of its own, as on the source: some DDL
	// (ALTER TYPE ... ADD VALUE) cannot share one with later statements.
	ddl := hasDDL(txn)
	if ddl {
		if err := a.commit(ctx); err != nil {
			return err
		}
	}
	if !a.open {
		a.batch = append(a.batch, queued{stmt: stmt{sql: "BEGIN"}, raw: true, txn: ref})
		a.open, a.inGroup = true, 0
	}
	changes := ctasFirst(txn.Changes)
	steps := planDDL(changes)
	for i := range changes {
		c := &changes[i]
		if c.Op == wal.OpMessage {
			if err := a.flush(ctx); err != nil {
				return err
			}
			if err := a.message(ctx, c, steps[i]); err != nil {
				a.rollback(ctx)
				return txnErr(txn, err)
			}
			continue
		}
		tables, err := a.targetTables(ctx, c)
		if err != nil {
			a.rollback(ctx)
			return txnErr(txn, err)
		}
		if a.merge(c, tables) {
			continue
		}
		s, err := a.build(c, tables)
		if err != nil {
			a.rollback(ctx)
			return txnErr(txn, err)
		}
		if s.sql == "" {
			continue
		}
		a.batch = append(a.batch, queued{stmt: s, txn: ref})
		a.inGroup++
		a.remember(c, tables)
		if len(a.batch) >= a.opts.BatchSize {
			if err := a.send(ctx); err != nil {
				return err
			}
		}
	}
	if ddl || a.inGroup >= groupStatements {
		return a.commit(ctx)
	}
	return nil
}

// ctasFirst moves the DDL message of each CREATE TABLE AS or SELECT INTO
// in front of the first change to a table it created. The event trigger
// fires at the command's end, so the stream has the new table's INSERTs
// before the DDL that creates it. changes is returned as is when nothing
// moves.
func ctasFirst(changes []wal.Change) []wal.Change {
	var out []wal.Change
	for k := range changes {
		c := &changes[k]
		if c.Op != wal.OpMessage || c.Prefix != DDLPrefix {
			continue
		}
		m, err := parseDDL(c.Content)
		if err != nil || !m.createsWithRows() || len(m.Tables) == 0 {
			continue
		}
		if out == nil {
			out = slices.Clone(changes)
		}
		// Earlier moves shifted positions: find the message (its content is
		// unique within the transaction, n differs) and the first change
		// it must precede.
		pos := -1
		first := -1
		for j := range out {
			if out[j].Op == wal.OpMessage && out[j].Prefix == DDLPrefix && string(out[j].Content) == string(c.Content) {
				pos = j
				break
			}
			if first < 0 && out[j].Rel != nil && createdBy(m, out[j].Rel) {
				first = j
			}
		}
		if pos < 0 || first < 0 {
			continue
		}
		msg := out[pos]
		copy(out[first+1:pos+1], out[first:pos])
		out[first] = msg
	}
	if out == nil {
		return changes
	}
	return out
}

func createdBy(m *ddlMessage, r *wal.Relation) bool {
	for _, t := range m.Tables {
		if t.Schema == r.Namespace && t.Name == r.Name {
			return true
		}
	}
	return false
}

func hasDDL(txn *wal.Txn) bool {
	for i := range txn.Changes {
		if c := &txn.Changes[i]; c.Op == wal.OpMessage && c.Prefix == DDLPrefix {
			return true
		}
	}
	return false
}

// commit ends the open target transaction. The COMMIT is sent with the
// batch; its result is read with the batch's.
func (a *applier) commit(ctx context.Context) error {
	if !a.open {
		return nil
	}
	a.batch = append(a.batch, queued{stmt: stmt{sql: "COMMIT"}, raw: true})
	err := a.send(ctx)
	a.open = false
	return err
}

// rollback abandons the open target transaction, the batch in flight and
// the queued statements.
func (a *applier) rollback(ctx context.Context) {
	if a.inflight != nil {
		_, _ = a.inflight.ReadAll()
		a.inflight = nil
	}
	a.batch, a.sent = a.batch[:0], a.sent[:0]
	clear(a.rows)
	clear(a.runs)
	_, _ = a.conn.Exec(ctx, "ROLLBACK").ReadAll()
	a.open = false
}

func (a *applier) exec(ctx context.Context, sql string) error {
	if err := a.wait(ctx); err != nil {
		return err
	}
	_, err := a.conn.Exec(ctx, sql).ReadAll()
	if err != nil {
		return fmt.Errorf("%s on target: %w", sql, err)
	}
	return nil
}

// flush sends the queued statements and waits for them.
func (a *applier) flush(ctx context.Context) error {
	if err := a.send(ctx); err != nil {
		return err
	}
	return a.wait(ctx)
}

// send sends the queued statements in one round trip without waiting for
// their results, once the batch sent before has been checked: the server
// executes one batch while the next is decoded and built. At most one
// batch is in flight, so a batch whose check fails is rolled back before
// anything after it reaches the server. Every other use of the connection
// waits for the batch in flight first (see wait).
func (a *applier) send(ctx context.Context) error {
	if err := a.wait(ctx); err != nil {
		return err
	}
	if len(a.batch) == 0 {
		return nil
	}
	out := a.fuse(a.batch)
	b := &pgconn.Batch{}
	for i := range out {
		q := &out[i]
		if q.stale {
			s, err := a.build(q.change, a.tables)
			if err != nil {
				a.rollback(ctx)
				return txnRefErr(q.txn, err)
			}
			q.stmt, q.stale = s, false
		}
		if q.raw {
			b.ExecParams(q.sql, nil, nil, nil, nil)
			continue
		}
		name, err := a.prepare(ctx, q.sql)
		if err != nil {
			a.rollback(ctx)
			return txnRefErr(q.txn, err)
		}
		b.ExecPrepared(name, q.params, nil, nil)
	}
	// The batch is encoded into its own buffer here, so the segment the
	// parameters alias may go once send returns.
	a.inflight = a.conn.ExecBatch(ctx, b)
	a.sent = append(a.sent[:0], out...)
	a.batch = a.batch[:0]
	clear(a.rows) // they index the batch just sent
	clear(a.runs)
	return nil
}

// wait reads the results of the batch in flight, if any, and checks that
// every UPDATE and DELETE in it found its row.
func (a *applier) wait(ctx context.Context) error {
	if a.inflight == nil {
		return nil
	}
	results, err := a.inflight.ReadAll()
	a.inflight = nil
	sent := a.sent
	var failed *queued
	if err == nil {
		for i, r := range results {
			q := &sent[i]
			if q.fused > 0 && q.change.Op == wal.OpUpdate && r.CommandTag.RowsAffected() != int64(q.fused) {
				failed = q
				err = fmt.Errorf("%d updates of %s (one statement for transactions xid %d to %d) matched %d rows instead of %d: the target does not match the archive",
					q.fused, q.change.Rel.QualifiedName(), q.txn.XID, q.lastTxn.XID, r.CommandTag.RowsAffected(), q.fused)
				break
			}
			if q.wantOne && r.CommandTag.RowsAffected() != 1 {
				c := q.change
				failed = q
				err = fmt.Errorf("%s of %s %s matched %d rows instead of 1: the target does not match the archive",
					c.Op, c.Rel.QualifiedName(), describeKey(c), r.CommandTag.RowsAffected())
				break
			}
		}
	} else if len(results) < len(sent) {
		failed = &sent[len(results)]
		if c := failed.change; c != nil && failed.fused > 0 {
			err = fmt.Errorf("%d %ss into %s (one statement for transactions xid %d to %d): %w", failed.fused, c.Op, tableOf(c), failed.txn.XID, failed.lastTxn.XID, err)
		} else if c != nil {
			err = fmt.Errorf("%s of %s %s: %w", c.Op, tableOf(c), describeKey(c), err)
		}
	}
	if err != nil {
		ref := sent[0].txn
		if failed != nil {
			ref = failed.txn
		}
		a.rollback(ctx)
		return txnRefErr(ref, err)
	}
	a.sent = sent[:0]
	return nil
}

// message acts on a logical message in the stream: captured DDL runs at
// its place in the transaction; sequence snapshots are remembered for the
// end of the replay.
func (a *applier) message(ctx context.Context, c *wal.Change, step *ddlStep) error {
	if err := a.wait(ctx); err != nil {
		return err
	}
	switch c.Prefix {
	case DDLPrefix:
		if step == nil {
			return fmt.Errorf("internal error: DDL message without a plan")
		}
		if step.err != nil {
			return step.err
		}
		if step.skip {
			return nil // nested in a statement that replays whole
		}
		m, stmt := step.msg, step.stmt
		if _, err := a.conn.ExecParams(ctx, "SELECT pg_catalog.set_config('search_path', $1, true)", [][]byte{[]byte(m.SearchPath)}, nil, nil, nil).Close(); err != nil {
			return fmt.Errorf("set search_path for DDL: %w", err)
		}
		asRole := m.Role != "" && a.roleExists(ctx, m.Role)
		if asRole {
			if err := a.exec(ctx, "SET LOCAL ROLE "+pgx.Identifier{m.Role}.Sanitize()); err != nil {
				return err
			}
		}
		// A default '03/04/2026' or a partition bound '2026-01-01 00:00' on
		// timestamptz means what the source session's DateStyle and TimeZone
		// made of it; parse it the same way, then pin the row-value settings
		// again for the changes that follow.
		if err := a.setLocal(ctx, m.Settings); err != nil {
			return err
		}
		existed, err := a.existingColumns(ctx, m)
		if err != nil {
			return err
		}
		// The DDL's own queries (a CREATE TABLE AS, a foreign key's check)
		// get the planner's usual choices; row changes after it do not.
		if err := a.exec(ctx, "SET LOCAL enable_seqscan TO DEFAULT; SET LOCAL jit TO DEFAULT"); err != nil {
			return err
		}
		if _, err := a.conn.Exec(ctx, stmt).ReadAll(); err != nil {
			return fmt.Errorf("replay DDL %q: %w", truncate(stmt, 200), err)
		}
		if err := a.matchMissing(ctx, m, existed); err != nil {
			return err
		}
		if err := a.exec(ctx, "SET LOCAL enable_seqscan = off; SET LOCAL jit = off"); err != nil {
			return err
		}
		if err := a.repin(ctx, m.Settings); err != nil {
			return err
		}
		if m.createsWithRows() {
			// The rows the command just made on the target come again as
			// the stream's INSERTs (moved after this message by
			// ctasFirst): keep only those, which are exactly the source's.
			for _, t := range m.Tables {
				if err := a.exec(ctx, "TRUNCATE ONLY "+pgx.Identifier{t.Schema, t.Name}.Sanitize()); err != nil {
					return err
				}
			}
		}
		if asRole {
			if err := a.exec(ctx, "RESET ROLE"); err != nil {
				return err
			}
		}
		// Parameter types of prepared statements were fixed when they were
		// prepared; after DDL they may be wrong.
		if err := a.exec(ctx, "DEALLOCATE ALL"); err != nil {
			return err
		}
		clear(a.prepared)
		clear(a.tables)
		clear(a.shapes)
		if err := a.holdTriggers(ctx); err != nil {
			return err
		}
	case SequencePrefix:
		snap, err := parseSequences(c.Content)
		if err != nil {
			return err
		}
		a.sum.sequences = snap
	}
	return nil
}

// targetTables describes, from the target's catalog, the tables an UPDATE,
// DELETE or TRUNCATE changes (nil for inserts), cached until the next DDL.
// The lookup runs outside the pending batch; the batch holds no DDL (DDL is
// flushed and run on its own), so the catalog it reads is current.
func (a *applier) targetTables(ctx context.Context, c *wal.Change) (targetTables, error) {
	var rels []*wal.Relation
	switch {
	case c.Op == wal.OpTruncate:
		rels = c.Truncated
	case c.Rel != nil && (c.Op == wal.OpInsert || c.Op == wal.OpUpdate || c.Op == wal.OpDelete):
		rels = []*wal.Relation{c.Rel}
	default:
		return nil, nil
	}
	for _, r := range rels {
		key := r.QualifiedName()
		if _, ok := a.tables[key]; ok {
			continue
		}
		if err := a.wait(ctx); err != nil {
			return nil, err
		}
		// format_type names a type without its schema when the schema is
		// on search_path, and a DDL transaction runs with the search_path
		// its source session had: look up with an empty search_path so
		// every name is qualified and means the same in any transaction.
		results, err := a.conn.Exec(ctx, `SELECT pg_catalog.set_config('wayback.search_path', pg_catalog.current_setting('search_path'), true),
				pg_catalog.set_config('search_path', '', true);
			SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), c.relkind::text,
				EXISTS (SELECT 1 FROM pg_catalog.pg_type t JOIN pg_catalog.pg_opclass o
						ON o.opcintype = CASE WHEN t.typtype = 'd' THEN t.typbasetype WHEN t.typtype = 'e' THEN 'pg_catalog.anyenum'::pg_catalog.regtype ELSE t.oid END
					JOIN pg_catalog.pg_am m ON m.oid = o.opcmethod
					WHERE t.oid = a.atttypid AND o.opcdefault AND m.amname = 'btree')::text,
				(c.relkind = 'r' AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND (i.indisunique OR i.indisexclusion)
						AND NOT CASE c.relreplident WHEN 'i' THEN i.indisreplident WHEN 'd' THEN i.indisprimary ELSE false END)
					AND EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid
						AND CASE c.relreplident WHEN 'i' THEN i.indisreplident WHEN 'd' THEN i.indisprimary ELSE false END))::text,
				CASE WHEN ty.typtype IN ('b', 'e', 'r', 'm') AND ty.typarray <> 0 AND ty.typdelim = ',' AND NOT (ty.typlen = -1 AND ty.typelem <> 0)
					THEN (SELECT pg_catalog.quote_ident(an.nspname) || '.' || pg_catalog.quote_ident(at.typname)
						FROM pg_catalog.pg_type at JOIN pg_catalog.pg_namespace an ON an.oid = at.typnamespace WHERE at.oid = ty.typarray) END
			FROM pg_catalog.pg_class c LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
				LEFT JOIN pg_catalog.pg_type ty ON ty.oid = a.atttypid
			WHERE c.oid = '`+strings.ReplaceAll(quoteRel(r), "'", "''")+`'::pg_catalog.regclass;
			SELECT pg_catalog.set_config('search_path', pg_catalog.current_setting('wayback.search_path'), true)`).ReadAll()
		if err != nil {
			return nil, fmt.Errorf("look up table %s on the target: %w", key, err)
		}
		res := results[1]
		t := &targetTable{types: map[string]string{}, btree: map[string]bool{}, arrays: map[string]string{}}
		for _, row := range res.Rows {
			if row[0] != nil {
				t.types[string(row[0])] = string(row[1])
				t.btree[string(row[0])] = string(row[3]) == "true"
				t.arrays[string(row[0])] = string(row[5])
			}
			t.partitioned = string(row[2]) == "p"
			t.mergeable = string(row[4]) == "true"
		}
		a.tables[key] = t
	}
	return a.tables, nil
}

// catalogQuery runs one query with an empty search_path, so that the
// type names it formats are schema-qualified and mean the same in any
// transaction, and restores the search_path after.
func (a *applier) catalogQuery(ctx context.Context, sql string) (*pgconn.Result, error) {
	if err := a.wait(ctx); err != nil {
		return nil, err
	}
	results, err := a.conn.Exec(ctx, `SELECT pg_catalog.set_config('wayback.search_path', pg_catalog.current_setting('search_path'), true),
			pg_catalog.set_config('search_path', '', true);
		`+sql+`;
		SELECT pg_catalog.set_config('search_path', pg_catalog.current_setting('wayback.search_path'), true)`).ReadAll()
	if err != nil {
		return nil, err
	}
	return results[1], nil
}

// sqlString quotes s as an SQL string literal that reads the same whatever
// standard_conforming_strings is: some of these queries run while a DDL's
// recorded settings are in force, and with the setting off a backslash in
// an ordinary '...' string escapes (a table named odd\name would read as
// odd<newline>ame). An E'...' string reads the same either way.
func sqlString(s string) string {
	q := strings.ReplaceAll(s, "'", "''")
	if !strings.Contains(s, `\`) {
		return "'" + q + "'"
	}
	return "E'" + strings.ReplaceAll(q, `\`, `\\`) + "'"
}

// matchMissing makes the rows that existed before an ADD COLUMN read the
// value they read on the source. A non-volatile default (now(),
// current_user, a stable function) is evaluated once when the column is
// added and stored as the column's "missing value"; replay evaluates it
// again, at another time and as another session. Where the target's value
// differs, every row of the table is set to the source's (the DDL's own
// transaction holds no other change yet, so every row predates the column).
//
// Only columns this statement added count: an older column's missing value
// is read only by rows that predate it, and rows written since have their
// own values.
func (a *applier) matchMissing(ctx context.Context, m *ddlMessage, existed map[string]bool) error {
	for _, mv := range m.Missing {
		rel := pgx.Identifier{mv.Schema, mv.Name}.Sanitize()
		if existed[rel+"."+pgx.Identifier{mv.Column}.Sanitize()] {
			continue
		}
		res, err := a.catalogQuery(ctx, `SELECT a.attmissingval::text, pg_catalog.format_type(t.typarray, NULL)
			FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
			WHERE a.attrelid = `+sqlString(rel)+`::pg_catalog.regclass AND a.attname = `+sqlString(mv.Column)+` AND NOT a.attisdropped`)
		if err != nil {
			return fmt.Errorf("read the added column %s.%s on the target: %w", rel, mv.Column, err)
		}
		if len(res.Rows) != 1 || string(res.Rows[0][0]) == mv.Value || len(res.Rows[0][1]) == 0 {
			continue
		}
		col := pgx.Identifier{mv.Column}.Sanitize()
		if err := a.exec(ctx, "UPDATE ONLY "+rel+" SET "+col+" = ("+sqlString(mv.Value)+"::"+string(res.Rows[0][1])+")[1]"); err != nil {
			return fmt.Errorf("give the rows of %s the source's value of the added column %s: %w", rel, mv.Column, err)
		}
	}
	return nil
}

// existingColumns lists, before a DDL statement runs, the columns of the
// tables whose missing values it reports ("table"."column", quoted).
func (a *applier) existingColumns(ctx context.Context, m *ddlMessage) (map[string]bool, error) {
	out := map[string]bool{}
	seen := map[string]bool{}
	for _, mv := range m.Missing {
		rel := pgx.Identifier{mv.Schema, mv.Name}.Sanitize()
		if seen[rel] {
			continue
		}
		seen[rel] = true
		res, err := a.catalogQuery(ctx, `SELECT a.attname FROM pg_catalog.pg_attribute a
			WHERE a.attrelid = pg_catalog.to_regclass(`+sqlString(rel)+`) AND a.attnum > 0 AND NOT a.attisdropped`)
		if err != nil {
			return nil, fmt.Errorf("list the columns of %s on the target: %w", rel, err)
		}
		for _, row := range res.Rows {
			out[rel+"."+pgx.Identifier{string(row[0])}.Sanitize()] = true
		}
	}
	return out, nil
}

// setLocal sets the recorded session settings of a DDL statement for the
// rest of the target transaction. Only settings that parse text are
// accepted, so a forged message cannot change anything else.
func (a *applier) setLocal(ctx context.Context, settings map[string]string) error {
	if err := a.wait(ctx); err != nil {
		return err
	}
	for name, value := range settings {
		if _, ok := wal.TextSetting(name); !ok {
			continue
		}
		if _, err := a.conn.ExecParams(ctx, "SELECT pg_catalog.set_config($1, $2, true)", [][]byte{[]byte(name), []byte(value)}, nil, nil, nil).Close(); err != nil {
			return fmt.Errorf("set %s = %q for DDL: %w", name, value, err)
		}
	}
	return nil
}

// repin puts back the pinned text settings that setLocal changed.
func (a *applier) repin(ctx context.Context, settings map[string]string) error {
	pinned := map[string]string{}
	for name := range settings {
		if v, ok := wal.TextSetting(name); ok {
			pinned[name] = v
		}
	}
	return a.setLocal(ctx, pinned)
}

func (a *applier) roleExists(ctx context.Context, role string) bool {
	if a.wait(ctx) != nil {
		return false
	}
	res, err := a.conn.ExecParams(ctx, "SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1", [][]byte{[]byte(role)}, nil, nil, nil).Close()
	return err == nil && res.RowsAffected() == 1
}

// sequenceSnapshot returns the sequence snapshot a transaction carries.
func sequenceSnapshot(txn *wal.Txn) []sequenceValue {
	for i := range txn.Changes {
		if c := &txn.Changes[i]; c.Op == wal.OpMessage && c.Prefix == SequencePrefix {
			if snap, err := parseSequences(c.Content); err == nil {
				return snap
			}
		}
	}
	return nil
}

// prepare returns the name of the prepared statement for sql.
func (a *applier) prepare(ctx context.Context, sql string) (string, error) {
	name, ok := a.prepared[sql]
	if ok {
		return name, nil
	}
	if err := a.wait(ctx); err != nil {
		return "", err
	}
	name = "wb" + strconv.Itoa(len(a.prepared))
	if _, err := a.conn.Prepare(ctx, name, sql, nil); err != nil {
		return "", fmt.Errorf("prepare %q: %w", sql, err)
	}
	a.prepared[sql] = name
	return name, nil
}

// execOne runs one statement inside a savepoint and reports the rows it
// affected; on error the savepoint is rolled back and the transaction
// stays usable.
func (a *applier) execOne(ctx context.Context, s stmt) (int64, error) {
	if err := a.wait(ctx); err != nil {
		return 0, err
	}
	name, err := a.prepare(ctx, s.sql)
	if err != nil {
		return 0, err
	}
	if err := a.exec(ctx, "SAVEPOINT wb"); err != nil {
		return 0, err
	}
	tag, err := a.conn.ExecPrepared(ctx, name, s.params, nil, nil).Close()
	if err != nil {
		if rerr := a.exec(ctx, "ROLLBACK TO SAVEPOINT wb"); rerr != nil {
			return 0, rerr
		}
		return 0, err
	}
	return tag.RowsAffected(), a.exec(ctx, "RELEASE SAVEPOINT wb")
}

// applyCareful applies a transaction statement by statement, so that a
// change that no longer fits (its row was created or removed by a skipped
// transaction) is handled by the conflict policy instead of failing the
// restore.
func (a *applier) applyCareful(ctx context.Context, txn *wal.Txn) error {
	fail := func(err error) error {
		a.exec(ctx, "ROLLBACK")
		return txnErr(txn, err)
	}
	changes := ctasFirst(txn.Changes)
	steps := planDDL(changes)
	for i := range changes {
		c := &changes[i]
		if c.Op == wal.OpMessage {
			if err := a.message(ctx, c, steps[i]); err != nil {
				return fail(err)
			}
			continue
		}
		tables, err := a.targetTables(ctx, c)
		if err != nil {
			return fail(err)
		}
		s, err := buildChange(c, tables)
		if err != nil {
			return fail(err)
		}
		if s.sql == "" {
			continue
		}
		n, err := a.execOne(ctx, s)
		var pgErr *pgconn.PgError
		reason := ""
		switch {
		case err == nil && (!s.wantOne || n == 1):
			continue
		case err == nil:
			reason = fmt.Sprintf("%s matched %d rows instead of 1", c.Op, n)
		case errors.As(err, &pgErr) && pgErr.Code == "23505":
			reason = "the row's key already exists"
		default:
			return fail(fmt.Errorf("%s of %s %s: %w", c.Op, tableOf(c), describeKey(c), err))
		}
		conflict := Conflict{XID: txn.XID, Table: tableOf(c), Key: describeKey(c), Op: c.Op.String(), Reason: reason}
		switch a.opts.OnConflict {
		case ConflictSkip:
			conflict.Resolution = "skipped"
		case ConflictOverwrite:
			res, err := a.overwrite(ctx, c)
			if err != nil {
				return fail(err)
			}
			conflict.Resolution = res
		default:
			return fail(fmt.Errorf("%s of %s %s: %s%s; choose --on-conflict skip|overwrite, or skip this transaction too",
				c.Op, tableOf(c), describeKey(c), reason, a.blame(txn.XID, c)))
		}
		a.sum.Conflicts = append(a.sum.Conflicts, conflict)
		a.opts.Log.Warn("conflict", zap.Uint32("xid", conflict.XID), zap.String("table", conflict.Table),
			zap.String("key", conflict.Key), zap.String("reason", reason), zap.String("resolution", conflict.Resolution))
	}
	return a.exec(ctx, "COMMIT")
}

// blame names the skipped transaction that the conflicting change depends
// on, when the analysis found one.
func (a *applier) blame(xid uint32, c *wal.Change) string {
	for _, d := range a.opts.Dependencies {
		if d.LaterXID == xid && d.Table == tableOf(c) {
			return fmt.Sprintf(" (the row was changed by skipped transaction %d)", d.SkippedXID)
		}
	}
	return ""
}

// overwrite makes the row look as the change says.
func (a *applier) overwrite(ctx context.Context, c *wal.Change) (string, error) {
	switch c.Op {
	case wal.OpInsert:
		del := &wal.Change{Op: wal.OpDelete, Rel: c.Rel, OldKind: 'K', Old: c.New}
		tables, err := a.targetTables(ctx, del)
		if err != nil {
			return "", err
		}
		s, err := buildDelete(del, tables)
		if err != nil {
			return "", err
		}
		if _, err := a.execOne(ctx, s); err != nil {
			return "", err
		}
		if _, err := a.execOne(ctx, buildInsert(c)); err != nil {
			return "", err
		}
		return "overwritten", nil
	case wal.OpUpdate:
		for _, v := range c.New {
			if v.Kind == wal.KindUnchanged {
				return "skipped (the row is missing and the change does not carry all its values)", nil
			}
		}
		if _, err := a.execOne(ctx, buildInsert(&wal.Change{Op: wal.OpInsert, Rel: c.Rel, New: c.New})); err != nil {
			return "", err
		}
		return "inserted", nil
	}
	return "skipped (the row is already gone)", nil
}

func tableOf(c *wal.Change) string {
	if c.Rel != nil {
		return c.Rel.QualifiedName()
	}
	return "tables"
}

func txnErr(txn *wal.Txn, err error) error {
	return txnRefErr(TxnRef{XID: txn.XID, CommitLSN: txn.CommitLSN, CommitTime: txn.CommitTime}, err)
}

func txnRefErr(t TxnRef, err error) error {
	var already *txnError
	if errors.As(err, &already) {
		// Found while waiting for an earlier batch, whose transaction it
		// names already.
		return err
	}
	return &txnError{txn: t, err: err}
}

// txnError is an error in replaying one transaction.
type txnError struct {
	txn TxnRef
	err error
}

func (e *txnError) Error() string {
	return fmt.Sprintf("replay transaction xid %d (commit LSN %s, %s): %v", e.txn.XID, e.txn.CommitLSN, e.txn.CommitTime.UTC().Format(time.RFC3339Nano), e.err)
}

func (e *txnError) Unwrap() error { return e.err }

// AdvanceSequences moves every sequence owned by a column past the largest
// value present in that column. Sequences are not in the logical stream
// (PG 15), so after replay a sequence can lag the rows inserted after the
// base backup; this guarantees the next nextval() is unused.
func AdvanceSequences(ctx context.Context, dsn string) error {
	conn, err := wal.ConnectText(ctx, dsn)
	if err != nil {
		return fmt.Errorf("connect to target: %w", err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, `SELECT s.oid::regclass::text, quote_ident(n.nspname) || '.' || quote_ident(t.relname), quote_ident(a.attname)
		FROM pg_depend d
		JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
		JOIN pg_class t ON t.oid = d.refobjid
		JOIN pg_namespace n ON n.oid = t.relnamespace
		JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid
		WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
		  AND format_type(a.atttypid, NULL) IN ('smallint', 'integer', 'bigint')`)
	if err != nil {
		return fmt.Errorf("list owned sequences: %w", err)
	}
	type owned struct{ seq, table, col string }
	var list []owned
	for rows.Next() {
		var o owned
		if err := rows.Scan(&o.seq, &o.table, &o.col); err != nil {
			return err
		}
		list = append(list, o)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	for _, o := range list {
		_, err := conn.Exec(ctx, fmt.Sprintf(`SELECT setval($1::regclass, m) FROM (SELECT max(%s)::bigint AS m FROM %s) x
			WHERE m IS NOT NULL AND m > (SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM %s)`, o.col, o.table, o.seq), o.seq)
		if err != nil {
			return fmt.Errorf("advance sequence %s: %w", o.seq, err)
		}
	}
	return nil
}
