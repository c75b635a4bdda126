package pitr

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	"github.com/wayback-pitr/wayback/wal"
)

// ddlPrefix is the logical-message prefix of captured DDL.
const ddlPrefix = "wayback.ddl"

// LogOptions filters the transaction log.
type LogOptions struct {
	Since, Until time.Time
	Tables       []string // "schema.table" or "table"; empty: all
	Ops          []string // insert, update, delete, truncate, ddl, mark; empty: all
	MinRows      int64
	XID          uint32 // 0: any
	Rows         bool   // include the affected rows' keys
	Values       bool   // include all column values of affected rows
}

// TableChanges counts one transaction's row changes in one table.
type TableChanges struct {
	Insert   int64 `json:"insert"`
	Update   int64 `json:"update"`
	Delete   int64 `json:"delete"`
	Truncate int64 `json:"truncate"`
}

// Total is the number of changes of any kind.
func (t *TableChanges) Total() int64 { return t.Insert + t.Update + t.Delete + t.Truncate }

// RowChange is one affected row in a log entry.
type RowChange struct {
	Table  string             `json:"table"`
	Op     string             `json:"op"`
	Key    map[string]*string `json:"key"`
	Old    map[string]*string `json:"old,omitempty"`
	Values map[string]*string `json:"values,omitempty"`
}

// LogEntry summarises one transaction.
type LogEntry struct {
	XID        uint32                   `json:"xid"`
	CommitLSN  string                   `json:"commit_lsn"`
	CommitTime time.Time                `json:"commit_time"`
	Changes    map[string]*TableChanges `json:"changes"`
	Marks      []string                 `json:"marks,omitempty"`
	DDL        []string                 `json:"ddl,omitempty"` // command tags of captured DDL
	Rows       []RowChange              `json:"rows,omitempty"`
}

// Total is the number of row changes in the transaction.
func (e *LogEntry) Total() int64 {
	var n int64
	for _, c := range e.Changes {
		n += c.Total()
	}
	return n
}

// Log lists archived transactions matching o, oldest first.
func (c *Catalog) Log(ctx context.Context, o LogOptions, fn func(*LogEntry) error) error {
	wantOp := map[string]bool{}
	for _, op := range o.Ops {
		wantOp[op] = true
	}
	tableMatch := func(q string) bool {
		if len(o.Tables) == 0 {
			return true
		}
		for _, t := range o.Tables {
			if t == q || (!strings.Contains(t, ".") && strings.HasSuffix(q, "."+t)) {
				return true
			}
		}
		return false
	}
	return c.Scan(ctx, ScanOptions{Since: o.Since, Until: o.Until}, func(t *wal.Txn) error {
		if o.XID != 0 && t.XID != o.XID {
			return nil
		}
		e := &LogEntry{XID: t.XID, CommitLSN: t.CommitLSN.String(), CommitTime: t.CommitTime.UTC(), Changes: map[string]*TableChanges{}}
		opSeen := map[string]bool{}
		count := func(table string) *TableChanges {
			tc := e.Changes[table]
			if tc == nil {
				tc = &TableChanges{}
				e.Changes[table] = tc
			}
			return tc
		}
		tableSeen := false
		for i := range t.Changes {
			ch := &t.Changes[i]
			switch ch.Op {
			case wal.OpMessage:
				switch ch.Prefix {
				case MarkPrefix:
					e.Marks = append(e.Marks, string(ch.Content))
					opSeen["mark"] = true
				case ddlPrefix:
					var d struct {
						Tag string `json:"tag"`
					}
					if json.Unmarshal(ch.Content, &d) == nil {
						e.DDL = append(e.DDL, d.Tag)
					}
					opSeen["ddl"] = true
				}
				continue
			case wal.OpTruncate:
				for _, r := range ch.Truncated {
					count(r.QualifiedName()).Truncate++
					tableSeen = tableSeen || tableMatch(r.QualifiedName())
				}
				opSeen["truncate"] = true
				continue
			}
			q := ch.Rel.QualifiedName()
			tableSeen = tableSeen || tableMatch(q)
			tc := count(q)
			switch ch.Op {
			case wal.OpInsert:
				tc.Insert++
			case wal.OpUpdate:
				tc.Update++
			case wal.OpDelete:
				tc.Delete++
			}
			opSeen[ch.Op.String()] = true
			if o.Rows && tableMatch(q) {
				e.Rows = append(e.Rows, rowChange(ch, o.Values))
			}
		}
		if len(o.Tables) > 0 && !tableSeen {
			return nil
		}
		if len(wantOp) > 0 {
			ok := false
			for op := range opSeen {
				ok = ok || wantOp[op]
			}
			if !ok {
				return nil
			}
		}
		if e.Total() < o.MinRows {
			return nil
		}
		if e.Total() == 0 && len(e.Marks) == 0 && len(e.DDL) == 0 {
			return nil // only wayback's own bookkeeping (sequence snapshots)
		}
		return fn(e)
	})
}

func rowChange(ch *wal.Change, values bool) RowChange {
	rc := RowChange{Table: ch.Rel.QualifiedName(), Op: ch.Op.String(), Key: map[string]*string{}}
	ident := ch.New
	if ch.OldKind != 0 {
		ident = ch.Old
	}
	for i, col := range ch.Rel.Columns {
		if col.Key && i < len(ident) {
			rc.Key[col.Name] = valueString(ident[i])
		}
	}
	if values {
		if ch.OldKind == 'O' {
			rc.Old = tupleMap(ch.Rel, ch.Old)
		}
		if ch.New != nil {
			rc.Values = tupleMap(ch.Rel, ch.New)
		}
	}
	return rc
}

func tupleMap(rel *wal.Relation, t wal.Tuple) map[string]*string {
	m := map[string]*string{}
	for i, col := range rel.Columns {
		if i < len(t) && t[i].Kind != wal.KindUnchanged {
			m[col.Name] = valueString(t[i])
		}
	}
	return m
}

func valueString(v wal.Value) *string {
	if v.Kind != wal.KindText {
		return nil
	}
	s := string(v.Data)
	return &s
}
