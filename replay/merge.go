package replay

import (
	"encoding/binary"

	"github.com/wayback-pitr/wayback/wal"
)

// Merging repeated UPDATEs of one row.
//
// A hot row (pgbench's branches: every transaction updates one of a few)
// is updated hundreds of times in one target transaction. Each UPDATE is a
// statement of its own, and each leaves a dead version that no one can
// prune before the commit, so every later lookup of the row walks a longer
// chain of versions. Within one batch, an UPDATE of a row that a queued
// UPDATE already changes is folded into that statement instead: the
// queued statement sets the later values (and keeps its own for the
// columns the later change left unchanged).
//
// This moves the later change earlier, past the queued changes between
// the two. That is exact only where nothing between can depend on it:
//   - changes to other tables do not, as replay runs with
//     session_replication_role = replica and the triggers that would fire
//     held (no trigger or foreign-key check sees one table from another);
//   - changes to other rows of the same table do not when the only unique
//     index (or exclusion constraint) of the table is its replica
//     identity's and neither UPDATE changes the identity (the stream sent
//     no old key): no other row can take or free a value either one sets;
//   - changes to the same row are kept apart: any other change to the
//     table (an INSERT, a DELETE, an UPDATE of the key, a TRUNCATE) ends
//     merging into its earlier statements.
// The merged statement still has to find exactly one row, which it finds
// exactly when the first UPDATE would have (the key does not change); a
// mismatch names the first UPDATE's transaction.

// mergeKey returns an unambiguous key for the row c updates when c may be
// merged with other UPDATEs of that row.
func mergeKey(c *wal.Change, tables targetTables) (string, bool) {
	if c.Op != wal.OpUpdate || c.OldKind != 0 || c.Rel == nil || (c.Rel.ReplicaIdentity != 'd' && c.Rel.ReplicaIdentity != 'i') {
		return "", false
	}
	if t := tables[c.Rel.QualifiedName()]; t == nil || !t.mergeable {
		return "", false
	}
	var key []byte
	for i, col := range c.Rel.Columns {
		if !col.Key {
			continue
		}
		if i >= len(c.New) || c.New[i].Kind != wal.KindText {
			return "", false
		}
		key = binary.AppendUvarint(key, uint64(i))
		key = binary.AppendUvarint(key, uint64(len(c.New[i].Data)))
		key = append(key, c.New[i].Data...)
	}
	return string(key), len(key) > 0
}

// merge folds the UPDATE c into a queued UPDATE of the same row, if there
// is one that it may be merged with, and reports whether it did. The
// queued statement is built again at flush, from the merged change.
func (a *applier) merge(c *wal.Change, tables targetTables) bool {
	key, ok := mergeKey(c, tables)
	if !ok {
		return false
	}
	i, ok := a.rows[c.Rel.QualifiedName()][key]
	if !ok {
		return false
	}
	q := &a.batch[i]
	prev := q.change
	if prev == nil || prev.Rel != c.Rel || len(prev.New) != len(c.New) {
		return false // a new Relation message: the columns may differ
	}
	m := &wal.Change{Op: wal.OpUpdate, Rel: c.Rel, New: make(wal.Tuple, len(c.New))}
	for j, v := range c.New {
		if v.Kind == wal.KindUnchanged {
			v = prev.New[j] // what the row had before c: prev's value, or unchanged too
		}
		m.New[j] = v
	}
	q.change, q.stale = m, true
	return true
}

// remember notes the change just queued: a mergeable UPDATE becomes the
// statement later UPDATEs of its row merge into; any other change to a
// table ends merging into the table's earlier statements.
func (a *applier) remember(c *wal.Change, tables targetTables) {
	a.noteRun(c, tables)
	if key, ok := mergeKey(c, tables); ok {
		name := c.Rel.QualifiedName()
		if a.rows == nil {
			a.rows = map[string]map[string]int{}
		}
		if a.rows[name] == nil {
			a.rows[name] = map[string]int{}
		}
		a.rows[name][key] = len(a.batch) - 1
		return
	}
	if c.Rel != nil {
		delete(a.rows, c.Rel.QualifiedName())
	}
	for _, r := range c.Truncated {
		delete(a.rows, r.QualifiedName())
	}
}

// shapeKey identifies the text of an INSERT, or of an UPDATE that finds
// its row by an unchanged key: the relation (a new Relation message is a
// new pointer), the operation, and which columns the statement sets.
type shapeKey struct {
	rel  *wal.Relation
	op   wal.Op
	mask string
}

// build turns a change into a statement as buildChange does, reusing the
// text of an earlier statement of the same shape: building and quoting
// the text anew for every row was most of replay's own CPU time.
func (a *applier) build(c *wal.Change, tables targetTables) (stmt, error) {
	mask, params, ok := shape(c)
	if !ok {
		return buildChange(c, tables)
	}
	k := shapeKey{rel: c.Rel, op: c.Op, mask: string(mask)}
	if sql, ok := a.shapes[k]; ok {
		return stmt{sql: sql, params: params, wantOne: c.Op == wal.OpUpdate, change: c}, nil
	}
	s, err := buildChange(c, tables)
	if err != nil || s.sql == "" {
		return s, err
	}
	if a.shapes == nil {
		a.shapes = map[shapeKey]string{}
	}
	a.shapes[k] = s.sql
	return s, nil
}

// shape returns which columns an INSERT, or an UPDATE found by its
// unchanged key, sets, and its parameters in the order buildInsert and
// buildUpdate number them; ok is false for every other change.
func shape(c *wal.Change) (mask []byte, params [][]byte, ok bool) {
	if c.Rel == nil || len(c.New) > len(c.Rel.Columns) {
		return nil, nil, false
	}
	mask = make([]byte, len(c.New))
	switch {
	case c.Op == wal.OpInsert:
		for i, v := range c.New {
			if v.Kind != wal.KindUnchanged {
				mask[i] = 1
				params = append(params, valueParam(v))
			}
		}
		return mask, params, true
	case c.Op == wal.OpUpdate && c.OldKind == 0 && c.Rel.ReplicaIdentity != 'f':
		for i, v := range c.New {
			if v.Kind != wal.KindUnchanged && !c.Rel.Columns[i].Key {
				mask[i] = 1
				params = append(params, valueParam(v))
			}
		}
		if len(params) == 0 {
			return nil, nil, false
		}
		keys := 0
		for i, col := range c.Rel.Columns {
			if !col.Key {
				continue
			}
			if i >= len(c.New) || c.New[i].Kind != wal.KindText {
				return nil, nil, false
			}
			params = append(params, c.New[i].Data)
			keys++
		}
		return mask, params, keys > 0
	}
	return nil, nil, false
}
