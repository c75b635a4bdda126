package replay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/wayback-pitr/wayback/basebackup"
	"github.com/wayback-pitr/wayback/pitr"
	"github.com/wayback-pitr/wayback/store"
	"github.com/wayback-pitr/wayback/wal"
)

// UndoOptions configures Undo.
type UndoOptions struct {
	Stores []store.Store
	XIDs   []uint32
	// SourceDSN, if set, is read for foreign keys so that re-inserted rows
	// go in parents first and deletes go children first.
	SourceDSN string
	Log       *zap.Logger
}

// UndoResult is the SQL that reverts the transactions, and what it found.
type UndoResult struct {
	SQL        string
	Statements int
	// Later lists transactions after the undone ones that touched the same
	// rows: the script may overwrite their work.
	Later []Dependency
}

// rowImage is a row's full column values by column name.
type rowImage map[string]wal.Value

// tracked follows the rows the undone transactions touch, from the base
// backup through the archive, so that full old rows are known even when
// the stream carried only keys (REPLICA IDENTITY DEFAULT).
type tracked struct {
	rels  map[string]*wal.Relation // by qualified name: the latest definition seen
	keys  map[string]bool          // row keys to follow
	state map[string]rowImage      // row key -> current image; absent: no such row
}

func ownedRelation(r *wal.Relation) *wal.Relation {
	c := *r
	c.Columns = append([]wal.Column(nil), r.Columns...)
	return &c
}

func image(rel *wal.Relation, t wal.Tuple, base rowImage) rowImage {
	img := rowImage{}
	for k, v := range base {
		img[k] = v
	}
	for i, col := range rel.Columns {
		if i >= len(t) || t[i].Kind == wal.KindUnchanged {
			continue
		}
		img[col.Name] = wal.Value{Kind: t[i].Kind, Data: bytes.Clone(t[i].Data)}
	}
	return img
}

// apply moves the tracked state through one change.
func (tr *tracked) apply(c *wal.Change) {
	switch c.Op {
	case wal.OpInsert:
		if k := rowKey(c.Rel, c.New); tr.keys[k] {
			tr.state[k] = image(c.Rel, c.New, nil)
		}
	case wal.OpUpdate:
		oldKey := rowKey(c.Rel, identity(c))
		newKey := rowKey(c.Rel, c.New)
		prev := tr.state[oldKey]
		if tr.keys[oldKey] {
			delete(tr.state, oldKey)
		}
		if tr.keys[newKey] {
			tr.state[newKey] = image(c.Rel, c.New, prev)
		}
	case wal.OpDelete:
		delete(tr.state, rowKey(c.Rel, c.Old))
	}
}

// netChange is one row's net effect within one undone transaction.
type netChange struct {
	rel        *wal.Relation
	key        string // as it was before the transaction
	pre, post  rowImage
	preKey     string
	postKey    string
	firstTouch int
}

type undoTxn struct {
	ref  pitr.TxnRef
	rows map[string]*netChange // by key before the transaction (or first key seen)
	// bag is the net effect on tables without a key (REPLICA IDENTITY
	// FULL), by whole-row image: identical rows cannot be told apart, so
	// only how many copies of each image the transaction added (n > 0) or
	// removed (n < 0) matters. The stream carries full old rows for such
	// tables, so no earlier state is needed.
	bag map[string]*bagEntry
	seq int
}

type bagEntry struct {
	rel        *wal.Relation
	img        rowImage
	n          int
	firstTouch int
}

// count adds n copies of the row image t (completed from base for columns
// the stream left out as unchanged) to the transaction's net effect.
func (u *undoTxn) count(rel *wal.Relation, t wal.Tuple, base rowImage, n int) rowImage {
	img := image(rel, t, base)
	k := rowKey(rel, t)
	e := u.bag[k]
	if e == nil {
		e = &bagEntry{rel: ownedRelation(rel), img: img, firstTouch: u.seq}
		u.bag[k] = e
	}
	e.n += n
	return img
}

// countChange records one change to a keyless table in the net effect.
func (u *undoTxn) countChange(c *wal.Change) error {
	var old rowImage
	if c.Op == wal.OpUpdate || c.Op == wal.OpDelete {
		if c.OldKind == 0 {
			return fmt.Errorf("the stream has no old row for a change to %s (REPLICA IDENTITY FULL was set later?): undo cannot tell which row to revert", c.Rel.QualifiedName())
		}
		for _, v := range c.Old {
			if v.Kind == wal.KindUnchanged {
				return fmt.Errorf("the stream's old row for a change to %s lacks a TOASTed value: undo cannot rebuild it", c.Rel.QualifiedName())
			}
		}
		old = u.count(c.Rel, c.Old, nil, -1)
	}
	if c.Op == wal.OpUpdate || c.Op == wal.OpInsert {
		// An unchanged TOASTed value in the new row is the old row's.
		newRow := make(wal.Tuple, len(c.New))
		copy(newRow, c.New)
		for i, v := range newRow {
			if v.Kind == wal.KindUnchanged && old != nil && i < len(c.Rel.Columns) {
				newRow[i] = old[c.Rel.Columns[i].Name]
			}
		}
		u.count(c.Rel, newRow, nil, 1)
	}
	return nil
}

// Undo writes SQL that reverts the given transactions on the live
// database: rows they deleted are re-inserted with all their values, rows
// they updated are set back, rows they inserted are deleted.
func Undo(ctx context.Context, o UndoOptions) (*UndoResult, error) {
	log := o.Log
	if log == nil {
		log = zap.NewNop()
	}
	if len(o.XIDs) == 0 {
		return nil, errors.New("name at least one transaction to undo (--xid)")
	}
	cat, err := pitr.Load(ctx, o.Stores, log)
	if err != nil {
		return nil, err
	}
	want := map[uint32]bool{}
	for _, x := range o.XIDs {
		want[x] = true
	}
	// Pass 1: find the transactions and the rows they touch.
	tr := &tracked{rels: map[string]*wal.Relation{}, keys: map[string]bool{}, state: map[string]rowImage{}}
	found := map[uint32]pitr.TxnRef{}
	var first wal.LSN
	err = cat.Scan(ctx, pitr.ScanOptions{}, func(t *wal.Txn) error {
		if !want[t.XID] {
			return nil
		}
		found[t.XID] = pitr.TxnRef{XID: t.XID, CommitLSN: t.CommitLSN, EndLSN: t.EndLSN, CommitTime: t.CommitTime}
		if first == 0 || t.CommitLSN < first {
			first = t.CommitLSN
		}
		for i := range t.Changes {
			c := &t.Changes[i]
			if c.Op == wal.OpTruncate {
				return fmt.Errorf("transaction %d truncated %s: undo cannot rebuild a whole table in place; use 'wayback restore --skip-xid %d' into a new database", t.XID, c.Truncated[0].QualifiedName(), t.XID)
			}
			if c.Op == wal.OpMessage {
				continue
			}
			tr.rels[c.Rel.QualifiedName()] = ownedRelation(c.Rel)
			for _, k := range keysOf(c) {
				tr.keys[k] = true
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, x := range o.XIDs {
		if _, ok := found[x]; !ok {
			return nil, fmt.Errorf("transaction %d is not in the archive: find it with 'wayback log'", x)
		}
	}
	plan, err := cat.Plan(pitr.Target{Kind: pitr.ToLSN, LSN: first - 1})
	if err != nil {
		return nil, fmt.Errorf("reconstruct the rows before the transaction: %w", err)
	}
	// The rows as the base backup has them.
	for _, t := range plan.Backup.Tables {
		rel, ok := tr.rels[t.Schema+"."+t.Name]
		if !ok {
			continue
		}
		err := basebackup.ReadRows(ctx, o.Stores, t, log, func(row wal.Tuple) error {
			tup := make(wal.Tuple, len(rel.Columns))
			byName := map[string]int{}
			for i, c := range t.Columns {
				byName[c] = i
			}
			for i, col := range rel.Columns {
				if j, ok := byName[col.Name]; ok && j < len(row) {
					tup[i] = row[j]
				} else {
					tup[i] = wal.Value{Kind: wal.KindNull}
				}
			}
			if k := rowKey(rel, tup); tr.keys[k] {
				tr.state[k] = image(rel, tup, nil)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	// Pass 2: replay the archive over the tracked rows, recording each
	// undone transaction's net effect and who touched the rows afterwards.
	var undo []*undoTxn
	var last wal.LSN
	for _, r := range found {
		last = max(last, r.CommitLSN)
	}
	res := &UndoResult{}
	seen := map[string]bool{}
	undoneBy := map[string]uint32{}
	err = cat.Scan(ctx, pitr.ScanOptions{From: plan.Start()}, func(t *wal.Txn) error {
		if want[t.XID] {
			u := &undoTxn{ref: found[t.XID], rows: map[string]*netChange{}, bag: map[string]*bagEntry{}}
			for i := range t.Changes {
				c := &t.Changes[i]
				if c.Op == wal.OpMessage {
					continue
				}
				if c.Rel.ReplicaIdentity == 'f' {
					if err := u.countChange(c); err != nil {
						return fmt.Errorf("transaction %d: %w", t.XID, err)
					}
					for _, k := range keysOf(c) {
						undoneBy[k] = t.XID
					}
					u.seq++
					continue
				}
				oldKey, newKey := rowKey(c.Rel, identity(c)), rowKey(c.Rel, c.New)
				if c.Op == wal.OpDelete {
					newKey = ""
				}
				if c.Op == wal.OpInsert {
					oldKey = newKey
				}
				nc := u.rows[oldKey]
				if nc == nil {
					// A row this transaction moved here earlier continues
					// its entry; otherwise this is its first touch.
					for _, e := range u.rows {
						if e.postKey == oldKey && e.post != nil {
							nc = e
							break
						}
					}
				}
				if nc == nil {
					nc = &netChange{rel: ownedRelation(c.Rel), preKey: oldKey, pre: tr.state[oldKey], firstTouch: u.seq}
					if c.Op == wal.OpInsert {
						nc.pre = nil
					} else if nc.pre == nil {
						return fmt.Errorf("transaction %d changed %s, but the row is not in base backup %s plus the archive before it: the archive is incomplete for this table", t.XID, oldKey, plan.Backup.ID)
					}
					u.rows[oldKey] = nc
				}
				u.seq++
				tr.apply(c)
				nc.postKey = newKey
				nc.post = nil
				if newKey != "" {
					nc.post = tr.state[newKey]
				}
				undoneBy[oldKey], undoneBy[newKey] = t.XID, t.XID
			}
			undo = append(undo, u)
			return nil
		}
		for i := range t.Changes {
			c := &t.Changes[i]
			if c.Op == wal.OpMessage || c.Op == wal.OpTruncate {
				continue
			}
			if t.CommitLSN > first {
				for _, k := range keysOf(c) {
					if x, ok := undoneBy[k]; ok && k != "" {
						d := Dependency{LaterXID: t.XID, LaterTime: t.CommitTime, SkippedXID: x, Table: c.Rel.QualifiedName(),
							Key: strings.TrimPrefix(k, c.Rel.QualifiedName()), Op: c.Op.String()}
						if id := fmt.Sprint(d.LaterXID, k, d.Op); !seen[id] {
							seen[id] = true
							res.Later = append(res.Later, d)
						}
					}
				}
			}
			if t.CommitLSN < last {
				tr.apply(c)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	src := readSource(ctx, o.SourceDSN, tr.rels, log)
	res.SQL, res.Statements = renderUndo(undo, res.Later, src)
	return res, nil
}

// undoSource is what the undo script's order and statements need to know
// about the tables on the source.
type undoSource struct {
	// rank orders tables so that foreign-key parents come first.
	rank map[string]int
	// partitioned names partitioned parents. The stream names the leaf
	// partition a row lives in, unless the publication publishes via the
	// partition root; only a root's changes must recurse, so every other
	// table gets ONLY (an inheritance parent's undo must not reach its
	// children's rows).
	partitioned map[string]bool
}

// only is "ONLY " for every table but a partitioned parent.
func (s undoSource) only(rel *wal.Relation) string {
	if s.partitioned[rel.QualifiedName()] {
		return ""
	}
	return "ONLY "
}

// readSource reads foreign keys and partitioned parents from the source.
// Without a source connection the archive order is kept and every table is
// taken as a plain one.
func readSource(ctx context.Context, dsn string, rels map[string]*wal.Relation, log *zap.Logger) undoSource {
	src := undoSource{rank: map[string]int{}, partitioned: map[string]bool{}}
	if dsn == "" {
		return src
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		log.Warn("cannot read foreign keys from the source; statements keep archive order", zap.Error(err))
		return src
	}
	defer conn.Close(context.Background())
	if rows, err := conn.Query(ctx, `SELECT n.nspname || '.' || c.relname FROM pg_class c
		JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'p'`); err == nil {
		for rows.Next() {
			var name string
			if rows.Scan(&name) == nil {
				src.partitioned[name] = true
			}
		}
		rows.Close()
	}
	src.rank = fkOrder(ctx, conn, rels, log)
	return src
}

// fkOrder ranks tables so that parents come before children.
func fkOrder(ctx context.Context, conn *pgx.Conn, rels map[string]*wal.Relation, log *zap.Logger) map[string]int {
	rank := map[string]int{}
	rows, err := conn.Query(ctx, `SELECT cn.nspname || '.' || c.relname, pn.nspname || '.' || p.relname
		FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace cn ON cn.oid = c.relnamespace
		JOIN pg_class p ON p.oid = k.confrelid JOIN pg_namespace pn ON pn.oid = p.relnamespace
		WHERE k.contype = 'f' AND k.conrelid <> k.confrelid`)
	if err != nil {
		log.Warn("cannot read foreign keys from the source; statements keep archive order", zap.Error(err))
		return rank
	}
	parents := map[string][]string{}
	for rows.Next() {
		var child, parent string
		if rows.Scan(&child, &parent) == nil {
			parents[child] = append(parents[child], parent)
		}
	}
	rows.Close()
	// depth = longest chain of parents; parents have smaller depth.
	var depth func(t string, seen map[string]bool) int
	depth = func(t string, seen map[string]bool) int {
		if d, ok := rank[t]; ok {
			return d
		}
		if seen[t] {
			return 0 // a cycle: order within it is arbitrary
		}
		seen[t] = true
		d := 0
		for _, p := range parents[t] {
			d = max(d, depth(p, seen)+1)
		}
		rank[t] = d
		return d
	}
	for t := range rels {
		depth(t, map[string]bool{})
	}
	return rank
}

// renderUndo writes the script: for each undone transaction, newest
// first, deletes (children first), then updates, then re-inserts (parents
// first), all in one transaction.
func renderUndo(undo []*undoTxn, later []Dependency, src undoSource) (string, int) {
	rank := src.rank
	var b strings.Builder
	b.WriteString("-- wayback undo\n")
	for _, u := range undo {
		fmt.Fprintf(&b, "-- reverts transaction %d, committed %s at LSN %s\n", u.ref.XID, u.ref.CommitTime.UTC().Format(time.RFC3339Nano), u.ref.CommitLSN)
	}
	if len(later) == 0 {
		b.WriteString("-- no later transaction touched these rows\n")
	} else {
		fmt.Fprintf(&b, "-- WARNING: %d later change(s) touched the same rows; this script may overwrite them:\n", len(later))
		for i, d := range later {
			if i == 50 {
				fmt.Fprintf(&b, "--   … and %d more\n", len(later)-50)
				break
			}
			fmt.Fprintf(&b, "--   %s\n", d)
		}
	}
	// The literals are the archive's text forms: parse them as printed.
	b.WriteString("BEGIN;\n" + wal.TextSettingsSQL())
	n := 0
	for i := len(undo) - 1; i >= 0; i-- {
		var dels, upds, ins []*netChange
		for _, nc := range undo[i].rows {
			switch {
			case nc.pre == nil && nc.post != nil:
				dels = append(dels, nc)
			case nc.pre != nil && nc.post == nil:
				ins = append(ins, nc)
			case nc.pre != nil && nc.post != nil:
				upds = append(upds, nc)
			}
		}
		// Keyless tables: delete one copy of each row image the
		// transaction added, re-insert each one it removed, as often as
		// it did; identical rows are interchangeable.
		for _, e := range undo[i].bag {
			for k := 0; k < e.n; k++ {
				dels = append(dels, &netChange{rel: e.rel, post: e.img, firstTouch: e.firstTouch})
			}
			for k := 0; k < -e.n; k++ {
				ins = append(ins, &netChange{rel: e.rel, pre: e.img, firstTouch: e.firstTouch})
			}
		}
		byRank := func(list []*netChange, childrenFirst bool) {
			sort.SliceStable(list, func(a, c int) bool {
				ra, rc := rank[list[a].rel.QualifiedName()], rank[list[c].rel.QualifiedName()]
				if ra != rc {
					return (ra > rc) == childrenFirst
				}
				return list[a].firstTouch < list[c].firstTouch
			})
		}
		byRank(dels, true)
		byRank(upds, false)
		byRank(ins, false)
		for _, nc := range dels {
			fmt.Fprintf(&b, "DELETE FROM %s%s WHERE %s;\n", src.only(nc.rel), quoteRel(nc.rel), rowCond(nc.rel, nc.post, src))
			n++
		}
		for _, nc := range upds {
			var sets []string
			for _, col := range nc.rel.Columns {
				pv, ok := nc.pre[col.Name]
				qv := nc.post[col.Name]
				if !ok || (pv.Kind == qv.Kind && bytes.Equal(pv.Data, qv.Data)) {
					continue
				}
				sets = append(sets, quoteCol(col.Name)+" = "+literal(pv))
			}
			if len(sets) == 0 {
				continue
			}
			fmt.Fprintf(&b, "UPDATE %s%s SET %s WHERE %s;\n", src.only(nc.rel), quoteRel(nc.rel), strings.Join(sets, ", "), rowCond(nc.rel, nc.post, src))
			n++
		}
		for _, nc := range ins {
			var cols, vals []string
			for _, col := range nc.rel.Columns {
				v, ok := nc.pre[col.Name]
				if !ok {
					continue
				}
				cols = append(cols, quoteCol(col.Name))
				vals = append(vals, literal(v))
			}
			fmt.Fprintf(&b, "INSERT INTO %s (%s) OVERRIDING SYSTEM VALUE VALUES (%s);\n", quoteRel(nc.rel), strings.Join(cols, ", "), strings.Join(vals, ", "))
			n++
		}
	}
	b.WriteString("COMMIT;\n")
	return b.String(), n
}

// rowCond matches the one row an undo statement is for. A table with
// REPLICA IDENTITY FULL has no key: several rows may be equal in every
// column, and reverting one change must touch exactly one of them, so the
// condition picks one row's ctid.
func rowCond(rel *wal.Relation, img rowImage, src undoSource) string {
	cond := keyCond(rel, img)
	if rel.ReplicaIdentity != 'f' {
		return cond
	}
	// tableoid too: under a partitioned parent, ctids repeat across
	// partitions.
	return "(tableoid, ctid) = (SELECT tableoid, ctid FROM " + src.only(rel) + quoteRel(rel) + " WHERE " + cond + " LIMIT 1)"
}

// keyCond matches a row by its replica identity columns. Key columns
// compare with "=", which is what makes them unique. Without a key (FULL)
// every column must match exactly, and "=" is looser than that (numeric
// 1.0 = 1.00, citext ignores case, box compares areas): the text form,
// printed under the script's pinned settings, must match too, while "="
// stays in front where the type has it so an index can find the row.
func keyCond(rel *wal.Relation, img rowImage) string {
	var conds []string
	full := rel.ReplicaIdentity == 'f'
	for _, col := range rel.Columns {
		if !col.Key {
			continue
		}
		v := img[col.Name]
		switch {
		case v.Kind != wal.KindText:
			conds = append(conds, quoteCol(col.Name)+" IS NULL")
		case typesWithoutEquality[col.TypeOID]:
			conds = append(conds, quoteCol(col.Name)+"::text = "+literal(v))
		case full:
			conds = append(conds, quoteCol(col.Name)+" = "+literal(v), quoteCol(col.Name)+"::text = "+literal(v))
		default:
			conds = append(conds, quoteCol(col.Name)+" = "+literal(v))
		}
	}
	return strings.Join(conds, " AND ")
}

// literal renders a value as an SQL string literal (standard conforming
// strings); the column's type converts it on assignment or comparison.
func literal(v wal.Value) string {
	if v.Kind != wal.KindText {
		return "NULL"
	}
	return "'" + strings.ReplaceAll(string(v.Data), "'", "''") + "'"
}

// typesWithoutEquality have no "=" operator, so undo's key conditions on
// REPLICA IDENTITY FULL tables compare their text forms instead.
var typesWithoutEquality = map[uint32]bool{
	114: true, // json
	142: true, // xml
	600: true, // point
	601: true, // lseg
	602: true, // path
	604: true, // polygon
	628: true, // line
}
