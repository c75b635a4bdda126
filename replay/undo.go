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
	seq  int
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
			u := &undoTxn{ref: found[t.XID], rows: map[string]*netChange{}}
			for i := range t.Changes {
				c := &t.Changes[i]
				if c.Op == wal.OpMessage {
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
	order := fkOrder(ctx, o.SourceDSN, tr.rels, log)
	res.SQL, res.Statements = renderUndo(undo, res.Later, order)
	return res, nil
}

// fkOrder ranks tables so that parents come before children. Without a
// source connection the archive order is kept.
func fkOrder(ctx context.Context, dsn string, rels map[string]*wal.Relation, log *zap.Logger) map[string]int {
	rank := map[string]int{}
	if dsn == "" {
		return rank
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		log.Warn("cannot read foreign keys from the source; statements keep archive order", zap.Error(err))
		return rank
	}
	defer conn.Close(context.Background())
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
func renderUndo(undo []*undoTxn, later []Dependency, rank map[string]int) (string, int) {
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
			fmt.Fprintf(&b, "DELETE FROM %s WHERE %s;\n", quoteRel(nc.rel), keyCond(nc.rel, nc.post))
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
			fmt.Fprintf(&b, "UPDATE %s SET %s WHERE %s;\n", quoteRel(nc.rel), strings.Join(sets, ", "), keyCond(nc.rel, nc.post))
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

// keyCond matches a row by its replica identity columns.
func keyCond(rel *wal.Relation, img rowImage) string {
	var conds []string
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
