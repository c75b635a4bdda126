package replay

import (
	"strconv"
	"strings"

	"github.com/wayback-pitr/wayback/wal"
)

// Fusing runs of changes into one statement.
//
// Per statement, the server spends as much on starting and ending the
// executor as on the row itself. Within a batch, a run of INSERTs into one
// table, or of UPDATEs of one table found by their unchanged keys, is sent
// as one statement over arrays (ROWS FROM (unnest($1::t1[]), ...)), at the
// place of the run's first change. A run ends at any other change to the
// table, so moving its later members earlier moves them only past changes
// to other tables (independent during replay, see merge.go) and past
// members of the run itself:
//   - INSERTs that all succeed one by one succeed together in any order
//     (each set of rows in between is a subset of the final one, so no
//     unique index or exclusion constraint sees a conflict), and
//     ROWS FROM keeps their order anyway. Only INSERTs that set every
//     column fuse: a defaulted column (a sequence) would take its values in
//     another order.
//   - UPDATEs fuse only where they merge (merge.go): the only unique index
//     is the replica identity's and keys do not change, so they commute;
//     after merging, a run updates each row once, and the statement must
//     update exactly as many rows as the run has changes.
// Values travel as text array literals of the column's type without
// typmod, read by the same input functions as a single row's parameters;
// the assignment to the column applies the typmod as it does for one row.
// The array type is named by its catalog name (pg_catalog._bpchar): the
// SQL spelling "character[]" means character(1)[] and would cut values.
// Only types whose arrays unnest to values of the type fuse: base types
// that are not themselves arrays (and use ',' between array elements),
// enums, ranges and multiranges; domains and composites do not.

// runState is the open run of a table in the batch.
type runState struct {
	id     int
	insert bool
}

// noteRun assigns the change just queued to its table's open run, opening
// one if needed, or ends the table's runs.
func (a *applier) noteRun(c *wal.Change, tables targetTables) {
	q := &a.batch[len(a.batch)-1]
	insert := c.Op == wal.OpInsert && fullInsert(c)
	if insert || c.Op == wal.OpUpdate {
		if _, ok := mergeKey(c, tables); insert || ok {
			name := c.Rel.QualifiedName()
			r, ok := a.runs[name]
			if !ok || r.insert != insert {
				a.nextRun++
				r = runState{id: a.nextRun, insert: insert}
				if a.runs == nil {
					a.runs = map[string]runState{}
				}
				a.runs[name] = r
			}
			q.run = r.id
			return
		}
	}
	if c.Rel != nil {
		delete(a.runs, c.Rel.QualifiedName())
	}
	for _, r := range c.Truncated {
		delete(a.runs, r.QualifiedName())
	}
}

func fullInsert(c *wal.Change) bool {
	if c.Rel == nil || len(c.New) != len(c.Rel.Columns) {
		return false
	}
	for _, v := range c.New {
		if v.Kind != wal.KindText && v.Kind != wal.KindNull {
			return false
		}
	}
	return true
}

// fuseKey groups the members of a run that become one statement: same
// run, same Relation message, same columns set.
type fuseKey struct {
	run  int
	rel  *wal.Relation
	mask string
}

// fuse replaces every run of two or more fusable changes in batch by one
// statement at the place of its first change, and returns the statements
// to send.
func (a *applier) fuse(batch []queued) []queued {
	keys := make([]fuseKey, len(batch))
	groups := map[fuseKey][]int{}
	for i := range batch {
		q := &batch[i]
		if q.run == 0 || q.change == nil {
			continue
		}
		mask, _, ok := shape(q.change)
		if !ok || !a.fusable(q.change, mask) {
			continue
		}
		k := fuseKey{run: q.run, rel: q.change.Rel, mask: string(mask)}
		keys[i] = k
		groups[k] = append(groups[k], i)
	}
	if len(groups) == 0 {
		return batch
	}
	out := make([]queued, 0, len(batch))
	for i := range batch {
		members := groups[keys[i]]
		if keys[i].run == 0 || len(members) < 2 {
			out = append(out, batch[i])
			continue
		}
		if members[0] != i {
			continue // sent with the first
		}
		changes := make([]*wal.Change, len(members))
		for j, m := range members {
			changes[j] = batch[m].change
		}
		out = append(out, queued{
			stmt:    a.buildFused(changes, []byte(keys[i].mask)),
			txn:     batch[i].txn,
			lastTxn: batch[members[len(members)-1]].txn,
			fused:   len(members),
		})
	}
	return out
}

// fusable reports whether every column the change sets or matches has a
// type whose values can travel in an array.
func (a *applier) fusable(c *wal.Change, mask []byte) bool {
	t := a.tables[c.Rel.QualifiedName()]
	if t == nil {
		return false
	}
	for i, col := range c.Rel.Columns {
		if (i < len(mask) && mask[i] == 1) || (c.Op == wal.OpUpdate && col.Key) {
			if t.arrays[col.Name] == "" {
				return false
			}
		}
	}
	return true
}

// buildFused builds the statement for a run of INSERTs or UPDATEs of the
// same shape (see fuse).
func (a *applier) buildFused(changes []*wal.Change, mask []byte) stmt {
	first := changes[0]
	rel := first.Rel
	t := a.tables[rel.QualifiedName()]
	var params [][]byte
	var from, set, where, cols []string
	add := func(i int) string {
		var b []byte
		b = append(b, '{')
		for j, c := range changes {
			if j > 0 {
				b = append(b, ',')
			}
			v := c.New[i]
			if v.Kind == wal.KindNull {
				b = append(b, "NULL"...)
				continue
			}
			b = append(b, '"')
			for _, ch := range v.Data {
				if ch == '"' || ch == '\\' {
					b = append(b, '\\')
				}
				b = append(b, ch)
			}
			b = append(b, '"')
		}
		b = append(b, '}')
		params = append(params, b)
		n := strconv.Itoa(len(params))
		from = append(from, "pg_catalog.unnest($"+n+"::"+t.arrays[rel.Columns[i].Name]+")")
		return "v" + n
	}
	for i, col := range rel.Columns {
		if mask[i] != 1 {
			continue
		}
		v := add(i)
		cols = append(cols, quoteCol(col.Name))
		set = append(set, quoteCol(col.Name)+" = v."+v)
	}
	if first.Op == wal.OpInsert {
		aliases := make([]string, len(params))
		for j := range aliases {
			aliases[j] = "v" + strconv.Itoa(j+1)
		}
		return stmt{sql: "INSERT INTO " + quoteRel(rel) + " (" + strings.Join(cols, ", ") + ") OVERRIDING SYSTEM VALUE SELECT " +
			strings.Join(aliases, ", ") + " FROM ROWS FROM (" + strings.Join(from, ", ") + ") AS v(" + strings.Join(aliases, ", ") + ")",
			params: params, change: first}
	}
	for i, col := range rel.Columns {
		if col.Key {
			where = append(where, "r."+quoteCol(col.Name)+" = v."+add(i))
		}
	}
	aliases := make([]string, len(params))
	for j := range aliases {
		aliases[j] = "v" + strconv.Itoa(j+1)
	}
	return stmt{sql: "UPDATE " + a.tables.only(rel) + quoteRel(rel) + " AS r SET " + strings.Join(set, ", ") +
		" FROM ROWS FROM (" + strings.Join(from, ", ") + ") AS v(" + strings.Join(aliases, ", ") + ") WHERE " + strings.Join(where, " AND "),
		params: params, change: first}
}
