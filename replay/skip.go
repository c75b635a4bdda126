package replay

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/wayback-pitr/wayback/pitr"
	"github.com/wayback-pitr/wayback/wal"
)

// ConflictPolicy says what replay does when a change cannot apply cleanly
// because a skipped transaction is missing underneath it.
type ConflictPolicy string

// Conflict policies.
const (
	ConflictStop      ConflictPolicy = "stop"      // stop, naming the transaction, table and key
	ConflictSkip      ConflictPolicy = "skip"      // leave the change out and go on
	ConflictOverwrite ConflictPolicy = "overwrite" // make the row look as the change says
)

// ParseConflictPolicy validates a --on-conflict value.
func ParseConflictPolicy(s string) (ConflictPolicy, error) {
	switch p := ConflictPolicy(s); p {
	case ConflictStop, ConflictSkip, ConflictOverwrite:
		return p, nil
	}
	return "", fmt.Errorf("--on-conflict %q: use stop, skip or overwrite", s)
}

// Dependency is a later transaction touching a row that a skipped (or
// undone) transaction changed: leaving the earlier one out may make the
// later one conflict.
type Dependency struct {
	LaterXID   uint32    `json:"later_xid"`
	LaterTime  time.Time `json:"later_commit_time"`
	SkippedXID uint32    `json:"skipped_xid"`
	Table      string    `json:"table"`
	Key        string    `json:"key"`
	Op         string    `json:"op"` // what the later transaction does to the row
}

// String describes the dependency for people.
func (d Dependency) String() string {
	return fmt.Sprintf("xid %d (%s) does %s on %s %s, which xid %d changed",
		d.LaterXID, d.LaterTime.UTC().Format(time.RFC3339Nano), d.Op, d.Table, d.Key, d.SkippedXID)
}

// Conflict is a change that did not apply cleanly during a replay with
// skipped transactions.
type Conflict struct {
	XID        uint32 `json:"xid"`
	Table      string `json:"table"`
	Key        string `json:"key"`
	Op         string `json:"op"`
	Reason     string `json:"reason"`
	Resolution string `json:"resolution"` // skipped, overwritten
}

// rowKey identifies a row in messages and maps: table plus replica
// identity values in text form.
func rowKey(rel *wal.Relation, t wal.Tuple) string {
	var b strings.Builder
	b.WriteString(rel.QualifiedName())
	b.WriteByte('(')
	first := true
	for i, c := range rel.Columns {
		if !c.Key || i >= len(t) {
			continue
		}
		if !first {
			b.WriteString(", ")
		}
		first = false
		b.WriteString(c.Name)
		b.WriteByte('=')
		if t[i].Kind == wal.KindText {
			b.Write(t[i].Data)
		} else {
			b.WriteString("NULL")
		}
	}
	b.WriteByte(')')
	return b.String()
}

// keysOf returns the row keys a change reads or writes: the old identity
// and, for inserts and key-changing updates, the new one.
func keysOf(c *wal.Change) []string {
	switch c.Op {
	case wal.OpInsert:
		return []string{rowKey(c.Rel, c.New)}
	case wal.OpUpdate:
		if c.OldKind != 0 {
			return []string{rowKey(c.Rel, c.Old), rowKey(c.Rel, c.New)}
		}
		return []string{rowKey(c.Rel, c.New)}
	case wal.OpDelete:
		return []string{rowKey(c.Rel, c.Old)}
	}
	return nil
}

// AnalyzeSkip scans the archive from the first skipped transaction to the
// target and returns every later transaction touching a row (or a
// truncated table) that a skipped transaction changed.
func AnalyzeSkip(ctx context.Context, cat *pitr.Catalog, from wal.LSN, target pitr.Target, skip map[uint32]bool) ([]Dependency, error) {
	if len(skip) == 0 {
		return nil, nil
	}
	touched := map[string]uint32{}   // row key -> skipped xid
	truncated := map[string]uint32{} // table -> skipped xid
	var deps []Dependency
	seen := map[string]bool{}
	err := cat.Scan(ctx, pitr.ScanOptions{From: from}, func(t *wal.Txn) error {
		if target.Beyond(t) {
			return pitr.StopScan()
		}
		for i := range t.Changes {
			c := &t.Changes[i]
			if c.Op == wal.OpMessage {
				continue
			}
			if c.Op == wal.OpTruncate {
				for _, r := range c.Truncated {
					if skip[t.XID] {
						truncated[r.QualifiedName()] = t.XID
					}
				}
				continue
			}
			for _, k := range keysOf(c) {
				if skip[t.XID] {
					touched[k] = t.XID
					continue
				}
				sx, ok := touched[k]
				if !ok {
					sx, ok = truncated[c.Rel.QualifiedName()]
				}
				if !ok {
					continue
				}
				d := Dependency{LaterXID: t.XID, LaterTime: t.CommitTime, SkippedXID: sx, Table: c.Rel.QualifiedName(),
					Key: strings.TrimPrefix(k, c.Rel.QualifiedName()), Op: c.Op.String()}
				if id := fmt.Sprint(d.LaterXID, d.Table, d.Key, d.Op); !seen[id] {
					seen[id] = true
					deps = append(deps, d)
				}
			}
		}
		return nil
	})
	sort.SliceStable(deps, func(i, j int) bool { return deps[i].LaterTime.Before(deps[j].LaterTime) })
	return deps, err
}
