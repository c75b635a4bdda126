package pitr

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/wayback-pitr/wayback/store"
	"github.com/wayback-pitr/wayback/wal"
)

// TargetKind says what a restore stops at.
type TargetKind int

// Target kinds.
const (
	Latest TargetKind = iota // everything archived
	ToTime                   // stop before the first commit after Time
	ToLSN                    // include commits at or before LSN
	ToXID                    // up to and including XID (excluding it with Exclusive)
	ToMark                   // up to the named restore point
)

// Target is where a restore stops. Time targets follow PostgreSQL's
// recovery_target_time: transactions are applied in commit order and the
// restore stops before the first one committed after Time.
type Target struct {
	Kind      TargetKind
	Time      time.Time
	LSN       wal.LSN
	XID       uint32
	Exclusive bool // ToXID: stop before the transaction instead of after it
	Mark      string
	// StopAtGap, with Latest, ends quietly where the chain from the backup
	// ends even when later segments exist beyond a gap. Without it such a
	// restore fails: "latest" must never silently mean "up to a hole".
	// Restore drills set it and report the gap themselves.
	StopAtGap bool
}

// String describes the target for messages.
func (t Target) String() string {
	switch t.Kind {
	case ToTime:
		return "time " + t.Time.UTC().Format(time.RFC3339Nano)
	case ToLSN:
		return "LSN " + t.LSN.String()
	case ToXID:
		if t.Exclusive {
			return fmt.Sprintf("just before transaction %d", t.XID)
		}
		return fmt.Sprintf("transaction %d", t.XID)
	case ToMark:
		return fmt.Sprintf("restore point %q", t.Mark)
	}
	return "latest"
}

// Resolve turns transaction and restore-point targets into the LSN target
// they mean, by finding them in the archive; other targets are returned as
// they are.
func (c *Catalog) Resolve(ctx context.Context, t Target) (Target, error) {
	var ref *TxnRef
	var err error
	switch t.Kind {
	case ToXID:
		ref, err = c.FindTxn(ctx, t.XID)
	case ToMark:
		ref, err = c.FindMark(ctx, t.Mark)
	default:
		return t, nil
	}
	if err != nil {
		return t, err
	}
	if t.Exclusive {
		return Target{Kind: ToLSN, LSN: ref.CommitLSN - 1}, nil
	}
	return Target{Kind: ToLSN, LSN: ref.CommitLSN}, nil
}

// Beyond reports whether a transaction lies beyond the target, i.e.
// replay must stop before it.
func (t Target) Beyond(txn *wal.Txn) bool {
	switch t.Kind {
	case ToTime:
		return txn.CommitTime.After(t.Time)
	case ToLSN:
		return txn.CommitLSN > t.LSN
	}
	return false
}

var timeLayouts = []string{
	time.RFC3339Nano,
	"2006-01-02 15:04:05.999999999Z07:00",
	"2006-01-02 15:04:05.999999999Z07",
	"2006-01-02 15:04:05.999999999 Z07:00",
	"2006-01-02 15:04:05.999999999 MST",
}

// ParseTime accepts RFC 3339 ("2026-11-22T10:15:00Z") and
// "YYYY-MM-DD HH:MM:SS[.frac][±TZ]". A time without a zone is local time;
// the plan prints the resolved UTC instant so that it is never ambiguous.
func ParseTime(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	for _, l := range timeLayouts {
		if t, err := time.Parse(l, s); err == nil {
			return t, nil
		}
	}
	for _, l := range []string{"2006-01-02 15:04:05.999999999", "2006-01-02T15:04:05.999999999"} {
		if t, err := time.ParseInLocation(l, s, time.Local); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("invalid time %q: use RFC 3339 (2026-11-22T10:15:00Z) or 'YYYY-MM-DD HH:MM:SS[±TZ]'", s)
}

// Plan is a restore: the base backup to load and the segments to replay
// on top of it.
type Plan struct {
	Target Target
	Backup *Backup
	Chain  []*Segment // contiguous from the backup's consistent point
	End    wal.LSN    // where the chain's coverage ends
}

// Start is the backup's consistent point: replay applies exactly the
// transactions whose commit record is at or after it.
func (p *Plan) Start() wal.LSN { return p.Backup.LSN() }

// Range describes what the archive can restore, for error messages.
func (c *Catalog) Range() string {
	if len(c.Backups) == 0 {
		return "nothing (no complete base backup)"
	}
	oldest := c.Backups[0]
	_, end := c.Chain(oldest.LSN())
	return fmt.Sprintf("from %s (oldest base backup, LSN %s) up to LSN %s",
		oldest.ConsistentTime.Format(time.RFC3339), oldest.ConsistentLSN, end)
}

// Plan chooses the newest base backup before the target and the chain of
// segments after it.
func (c *Catalog) Plan(t Target) (*Plan, error) {
	if len(c.Backups) == 0 {
		return nil, errorOf(ErrNoBackup, "the archive has no complete base backup: run 'wayback backup' (the agent takes one on first start)")
	}
	var chosen *Backup
	for _, b := range c.Backups {
		ok := true
		switch t.Kind {
		case ToTime:
			ok = !b.ConsistentTime.After(t.Time)
		case ToLSN:
			ok = b.LSN() <= t.LSN+1
		}
		if ok {
			chosen = b
		}
	}
	if chosen == nil {
		oldest := c.Backups[0]
		return nil, errorOf(ErrBeforeOldestBackup, "target %s is before the oldest base backup (consistent at %s, LSN %s): the archive can restore %s",
			t, oldest.ConsistentTime.UTC().Format(time.RFC3339), oldest.ConsistentLSN, c.Range())
	}
	p := &Plan{Target: t, Backup: chosen}
	p.Chain, p.End = c.Chain(chosen.LSN())
	return p, nil
}

// SequenceLookahead is how many segments past a restore target are fetched
// to find the next sequence snapshot.
const SequenceLookahead = 8

// LocalSegment is a fetched, verified segment in the restore's scratch
// directory.
type LocalSegment struct {
	Path  string
	Info  wal.SegmentInfo
	Store string // where it was read from
}

// Fetch downloads the plan's segments into dir, each from the first store
// with a valid copy, until the target is covered. It fails, before
// anything is written to a target, when a segment is corrupt in every
// store, when the chain has a gap before the target, or when the target
// is beyond the newest archived point.
func (c *Catalog) Fetch(ctx context.Context, p *Plan, dir string) ([]LocalSegment, error) {
	var out []LocalSegment
	var last wal.SegmentInfo
	reached := false
	lookahead := 0
	for _, seg := range p.Chain {
		if reached {
			// A few segments past the target: replay looks there for the
			// first sequence snapshot after it, which bounds every value
			// the source had handed out by the target.
			if lookahead == SequenceLookahead {
				break
			}
			lookahead++
		}
		ls, err := c.fetchOne(ctx, seg, dir)
		if err != nil {
			if reached {
				break // only the lookahead is incomplete
			}
			return nil, err
		}
		out = append(out, ls)
		if !reached {
			last = ls.Info
		}
		if p.Target.Kind == ToTime && ls.Info.Txns > 0 && ls.Info.LastCommit.After(p.Target.Time) {
			reached = true
		}
		if p.Target.Kind == ToLSN && ls.Info.To > p.Target.LSN {
			reached = true
		}
	}
	switch p.Target.Kind {
	case Latest:
		if next := c.NextAfter(p.End); next != nil && !p.Target.StopAtGap {
			return nil, errorOf(ErrGap, "the archive has a gap from LSN %s to %s (no store holds a segment covering it), so the latest state cannot be restored: what was archived after the gap would be left out. Restore to a point before the gap (--to-lsn %s), find the missing segment with 'wayback verify', or restore from a base backup taken after the gap",
				p.End, next.From, p.End)
		}
		reached = true
	case ToTime:
		// Coverage up to a later source time proves nothing else committed
		// by the target.
		reached = reached || (!last.ToTime.IsZero() && !last.ToTime.Before(p.Target.Time))
	}
	if reached {
		return out, nil
	}
	newest := p.Backup.ConsistentTime
	if !last.ToTime.IsZero() {
		newest = last.ToTime
	}
	if next := c.NextAfter(p.End); next != nil {
		return nil, errorOf(ErrGap, "the archive has a gap from LSN %s to %s (no store holds a segment covering it), so %s cannot be reached: restore to a point before %s, or from a base backup taken after the gap",
			p.End, next.From, p.Target, newest.UTC().Format(time.RFC3339))
	}
	// The archive holds every commit before p.End (segments are half-open),
	// so an LSN target at p.End itself is not yet covered either.
	return nil, errorOf(ErrAfterNewest, "target %s is after the newest archived point (source time %s; the archive holds commits before LSN %s): pick an earlier target or use --latest, and check that the agent is running",
		p.Target, newest.UTC().Format(time.RFC3339Nano), p.End)
}

func (c *Catalog) fetchOne(ctx context.Context, seg *Segment, dir string) (LocalSegment, error) {
	var errs []error
	for _, i := range seg.Stores {
		s := c.Stores[i]
		data, err := store.ReadAll(ctx, s, seg.Key)
		if err == nil {
			var info wal.SegmentInfo
			if info, _, err = wal.DecodeSegment(data); err == nil && (info.From != seg.From || info.To != seg.To) {
				err = fmt.Errorf("%w: header says %s-%s, name says %s-%s", wal.ErrCorrupt, info.From, info.To, seg.From, seg.To)
			}
			if err == nil {
				path := filepath.Join(dir, filepath.Base(seg.Key))
				if err := os.WriteFile(path, data, 0o600); err != nil {
					return LocalSegment{}, fmt.Errorf("save segment %s: %w", seg.Key, err)
				}
				return LocalSegment{Path: path, Info: info, Store: s.URL()}, nil
			}
		}
		if ctx.Err() != nil {
			return LocalSegment{}, ctx.Err()
		}
		c.log.Warn("segment unusable in this store, trying the next", zap.String("segment", seg.Key), zap.String("store", s.URL()), zap.Error(err))
		errs = append(errs, fmt.Errorf("%s: %w", s.URL(), err))
	}
	return LocalSegment{}, fmt.Errorf("segment %s has no valid copy in any store: %w", seg.Key, errors.Join(errs...))
}
