// Package replay applies archived transactions to a target database in
// commit order.
package replay

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/wayback-pitr/wayback/wal"
)

// stmt is one SQL statement with its text-format parameters. Parameter
// types are left to the server (OID 0), which infers them from the target
// column, so every type's text form round-trips without Go-side codecs.
type stmt struct {
	sql    string
	params [][]byte
	// wantOne: an UPDATE or DELETE must hit exactly one row; anything else
	// means the target has drifted from the source.
	wantOne bool
	change  *wal.Change
}

func quoteRel(r *wal.Relation) string { return pgx.Identifier{r.Namespace, r.Name}.Sanitize() }

func quoteCol(name string) string { return pgx.Identifier{name}.Sanitize() }

// targetTable is what replay needs to know of a table on the target.
type targetTable struct {
	// types maps column names to their SQL types (format_type, with
	// typmod), so that parameters of row-matching conditions can be typed
	// explicitly: the server cannot infer a composite's type from
	// "col = $1", and REPLICA IDENTITY FULL matching compares typed values
	// (see where).
	types map[string]string
	// partitioned: a partitioned parent (relkind 'p'), which changes reach
	// only when the publication publishes via the root.
	partitioned bool
	// btree marks columns whose type (or a domain's base type) has a
	// default btree operator class, so "=" exists and is reflexive.
	btree map[string]bool
	// mergeable: an ordinary table whose only unique index or exclusion
	// constraint is its replica identity's index (see merge.go).
	mergeable bool
	// arrays maps columns to the array type (without typmod) their values
	// can travel in when changes are fused, "" when they cannot (fuse.go).
	arrays map[string]string
}

// targetTables holds targetTable by "schema.table"; a missing entry means
// an ordinary table with untyped parameters.
type targetTables map[string]*targetTable

func (t targetTables) types(r *wal.Relation) map[string]string {
	if tt := t[r.QualifiedName()]; tt != nil {
		return tt.types
	}
	return nil
}

// only is "ONLY " for every table but a partitioned parent. pgoutput names
// the table whose row changed; without ONLY, an UPDATE, DELETE or TRUNCATE
// of a plain-inheritance parent would reach its children's rows too.
// A partitioned parent holds no rows itself, so there the change must
// recurse into the partitions.
func (t targetTables) btree(r *wal.Relation, col string) bool {
	if tt := t[r.QualifiedName()]; tt != nil {
		return tt.btree[col]
	}
	return false
}

func (t targetTables) only(r *wal.Relation) string {
	if tt := t[r.QualifiedName()]; tt != nil && tt.partitioned {
		return ""
	}
	return "ONLY "
}

// buildChange turns one change into SQL; tables describes the tables it
// touches on the target.
func buildChange(c *wal.Change, tables targetTables) (stmt, error) {
	switch c.Op {
	case wal.OpInsert:
		return buildInsert(c), nil
	case wal.OpUpdate:
		return buildUpdate(c, tables)
	case wal.OpDelete:
		return buildDelete(c, tables)
	case wal.OpTruncate:
		return buildTruncate(c, tables), nil
	}
	return stmt{}, fmt.Errorf("cannot replay %s change", c.Op)
}

func buildInsert(c *wal.Change) stmt {
	var cols, vals strings.Builder
	var params [][]byte
	for i, v := range c.New {
		if v.Kind == wal.KindUnchanged {
			continue
		}
		if len(params) > 0 {
			cols.WriteString(", ")
			vals.WriteString(", ")
		}
		cols.WriteString(quoteCol(c.Rel.Columns[i].Name))
		params = append(params, valueParam(v))
		vals.WriteString("$" + strconv.Itoa(len(params)))
	}
	return stmt{sql: "INSERT INTO " + quoteRel(c.Rel) + " (" + cols.String() + ") OVERRIDING SYSTEM VALUE VALUES (" + vals.String() + ")", params: params, change: c}
}

func valueParam(v wal.Value) []byte {
	if v.Kind == wal.KindNull {
		return nil
	}
	if v.Data == nil {
		return []byte{}
	}
	return v.Data
}

// identity returns the row image that identifies the old row: the old key
// or old row when the stream sent one, else the new row (key unchanged).
func identity(c *wal.Change) wal.Tuple {
	if c.OldKind != 0 {
		return c.Old
	}
	return c.New
}

// where builds the WHERE clause matching the old row, appending params.
//
// With a key (REPLICA IDENTITY DEFAULT or USING INDEX) the key columns are
// compared with "=", which is exactly what makes them unique.
//
// With REPLICA IDENTITY FULL the whole old row is compared by binary image
// (record_image_eq, the function behind the *= operator that REFRESH
// MATERIALIZED VIEW CONCURRENTLY uses; called as a function because an
// operator between two ROW() constructors compares column by column),
// never with each type's "=": box and circle "=" compare areas, citext
// ignores case, numeric 1.0 = 1.00, float -0 = 0, and json, xml, point and
// arrays or composites of them have no "=" at all. Any of these would let
// the replay change a different row than the source did, or fail. Two NULLs
// are equal under *=, so NULL columns need no IS NULL. Identical rows are
// interchangeable, so one of them (LIMIT 1) is changed.
func where(c *wal.Change, tables targetTables, params [][]byte) (string, [][]byte, error) {
	types := tables.types(c.Rel)
	old := identity(c)
	full := c.Rel.ReplicaIdentity == 'f'
	var conds, left, right []string
	for i, col := range c.Rel.Columns {
		if !col.Key || i >= len(old) {
			continue
		}
		v := old[i]
		if v.Kind == wal.KindUnchanged {
			continue
		}
		name := quoteCol(col.Name)
		if v.Kind == wal.KindNull {
			if full {
				// NULL needs a type too, or the row images differ in type.
				null := "NULL"
				if typ := types[col.Name]; typ != "" {
					null += "::" + typ
				}
				left, right = append(left, name), append(right, null)
				conds = append(conds, name+" IS NULL")
			} else {
				conds = append(conds, name+" IS NULL")
			}
			continue
		}
		params = append(params, v.Data)
		p := "$" + strconv.Itoa(len(params))
		if typ := types[col.Name]; typ != "" {
			p += "::" + typ
		}
		if full {
			left, right = append(left, name), append(right, p)
			// Binary-identical values are "=" under any btree equality,
			// so where one exists it can filter first: it is cheaper
			// than building row images and can use an index.
			if tables.btree(c.Rel, col.Name) {
				conds = append(conds, name+" = "+p)
			}
		} else {
			conds = append(conds, name+" = "+p)
		}
	}
	if full && len(left) > 0 {
		image := "pg_catalog.record_image_eq(ROW(" + strings.Join(left, ", ") + "), ROW(" + strings.Join(right, ", ") + "))"
		if len(conds) == 0 {
			return "ctid = (SELECT ctid FROM " + tables.only(c.Rel) + quoteRel(c.Rel) + " WHERE " + image + " LIMIT 1)", params, nil
		}
		// The planner would evaluate the row image comparison first (it
		// folds the parameter row into a constant and costs it low); the
		// OFFSET 0 fence makes the cheap "=" filter (or an index) run first.
		return "ctid = (SELECT ctid FROM (SELECT ctid, * FROM " + tables.only(c.Rel) + quoteRel(c.Rel) + " WHERE " + strings.Join(conds, " AND ") +
			" OFFSET 0) t WHERE " + image + " LIMIT 1)", params, nil
	}
	if len(conds) == 0 {
		return "", nil, fmt.Errorf("table %s has no replica identity to find the old row by: give it a primary key or REPLICA IDENTITY FULL (see 'wayback setup')", c.Rel.QualifiedName())
	}
	return strings.Join(conds, " AND "), params, nil
}

func buildUpdate(c *wal.Change, tables targetTables) (stmt, error) {
	var set strings.Builder
	var params [][]byte
	for i, v := range c.New {
		if v.Kind == wal.KindUnchanged || unchanged(c, i) {
			// An unchanged TOASTed value was not sent: keep what the row
			// has. Columns known to be unchanged are left out too, which
			// also keeps GENERATED ALWAYS identity keys out of the SET.
			continue
		}
		if len(params) > 0 {
			set.WriteString(", ")
		}
		params = append(params, valueParam(v))
		set.WriteString(quoteCol(c.Rel.Columns[i].Name) + " = $" + strconv.Itoa(len(params)))
	}
	if len(params) == 0 {
		return stmt{}, nil
	}
	cond, params, err := where(c, tables, params)
	if err != nil {
		return stmt{}, err
	}
	return stmt{sql: "UPDATE " + tables.only(c.Rel) + quoteRel(c.Rel) + " SET " + set.String() + " WHERE " + cond, params: params, wantOne: true, change: c}, nil
}

// unchanged reports whether column i provably has the same value before and
// after an update: a key column when the stream sent no old key (so the key
// did not change), or any column whose old image holds the same value.
func unchanged(c *wal.Change, i int) bool {
	if c.OldKind == 0 {
		return c.Rel.Columns[i].Key
	}
	if i >= len(c.Old) {
		return false
	}
	o, n := c.Old[i], c.New[i]
	if c.OldKind == 'K' && !c.Rel.Columns[i].Key {
		return false // placeholders, not values
	}
	return o.Kind == n.Kind && (o.Kind == wal.KindNull || (o.Kind == wal.KindText && string(o.Data) == string(n.Data)))
}

func buildDelete(c *wal.Change, tables targetTables) (stmt, error) {
	cond, params, err := where(c, tables, nil)
	if err != nil {
		return stmt{}, err
	}
	return stmt{sql: "DELETE FROM " + tables.only(c.Rel) + quoteRel(c.Rel) + " WHERE " + cond, params: params, wantOne: true, change: c}, nil
}

func buildTruncate(c *wal.Change, tables targetTables) stmt {
	names := make([]string, len(c.Truncated))
	for i, r := range c.Truncated {
		names[i] = tables.only(r) + quoteRel(r)
	}
	sql := "TRUNCATE " + strings.Join(names, ", ")
	if c.TruncateOptions&wal.TruncateRestartIdentity != 0 {
		sql += " RESTART IDENTITY"
	}
	if c.TruncateOptions&wal.TruncateCascade != 0 {
		sql += " CASCADE"
	}
	return stmt{sql: sql, change: c}
}

// describeKey renders the identifying values of a change for messages.
func describeKey(c *wal.Change) string {
	if c.Rel == nil {
		return ""
	}
	old := identity(c)
	var parts []string
	for i, col := range c.Rel.Columns {
		if col.Key && i < len(old) && old[i].Kind == wal.KindText {
			parts = append(parts, col.Name+"="+truncate(string(old[i].Data), 40))
		}
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
