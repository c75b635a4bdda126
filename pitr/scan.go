package pitr

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/wayback-pitr/wayback/wal"
)

// ScanOptions bounds a scan of the archived change stream.
type ScanOptions struct {
	From wal.LSN // skip transactions committed before this position
	// Since skips segments whose transactions all committed before it.
	Since time.Time
	// Until stops the scan at the first transaction committed after it.
	Until time.Time
	// Dir, if set, keeps fetched segments there (restore reuses them).
	Dir string
}

// errStopScan ends a scan early without an error.
var errStopScan = errors.New("stop scan")

// StopScan can be returned by a Scan callback to end the scan.
func StopScan() error { return errStopScan }

// Scan calls fn for every archived transaction in commit order, each
// exactly once even where segments overlap, reading each segment from the
// first store with a valid copy. Gaps are skipped: fn sees what the archive
// holds. The Txn is only valid during the call.
func (c *Catalog) Scan(ctx context.Context, o ScanOptions, fn func(*wal.Txn) error) error {
	if len(c.Segments) == 0 {
		return nil
	}
	pos := max(o.From, c.Segments[0].From)
	next := o.From // commit LSNs below this were seen already
	dec := wal.NewDecoder()
	dir := o.Dir
	if dir == "" {
		d, err := os.MkdirTemp("", "wayback-scan-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	for {
		chain, end := c.Chain(pos)
		for _, seg := range chain {
			if seg.To <= o.From {
				continue
			}
			ls, err := c.fetchOne(ctx, seg, dir)
			if err != nil {
				return err
			}
			// Segments are self-describing, so one can be skipped whole.
			if !o.Since.IsZero() && ls.Info.Txns > 0 && ls.Info.LastCommit.Before(o.Since) {
				continue
			}
			data, err := os.ReadFile(ls.Path)
			if o.Dir == "" {
				os.Remove(ls.Path)
			}
			if err != nil {
				return err
			}
			_, body, err := wal.DecodeSegment(data)
			if err != nil {
				return fmt.Errorf("segment %s: %w", seg.Key, err)
			}
			err = dec.Decode(body, func(txn *wal.Txn) error {
				if txn.CommitLSN < next {
					return nil
				}
				next = txn.EndLSN
				if !o.Until.IsZero() && txn.CommitTime.After(o.Until) {
					return errStopScan
				}
				if !o.Since.IsZero() && txn.CommitTime.Before(o.Since) {
					return nil
				}
				return fn(txn)
			})
			if errors.Is(err, errStopScan) {
				return nil
			}
			if err != nil {
				return err
			}
		}
		gap := c.NextAfter(end)
		if gap == nil {
			return nil
		}
		pos = gap.From
	}
}

// FindTxn locates a transaction by xid in the archive, returning its
// commit LSN and time. Xids wrap around after 2^32 transactions, so the
// newest match wins.
func (c *Catalog) FindTxn(ctx context.Context, xid uint32) (found *TxnRef, err error) {
	err = c.Scan(ctx, ScanOptions{}, func(t *wal.Txn) error {
		if t.XID == xid {
			found = &TxnRef{XID: t.XID, CommitLSN: t.CommitLSN, EndLSN: t.EndLSN, CommitTime: t.CommitTime}
		}
		return nil
	})
	if err == nil && found == nil {
		err = fmt.Errorf("transaction %d is not in the archive: find it with 'wayback log'", xid)
	}
	return found, err
}

// MarkPrefix is the logical-message prefix of named restore points.
const MarkPrefix = "wayback.mark"

// FindMark locates the newest restore point with the given name.
func (c *Catalog) FindMark(ctx context.Context, name string) (found *TxnRef, err error) {
	err = c.Scan(ctx, ScanOptions{}, func(t *wal.Txn) error {
		for _, ch := range t.Changes {
			if ch.Op == wal.OpMessage && ch.Prefix == MarkPrefix && string(ch.Content) == name {
				found = &TxnRef{XID: t.XID, CommitLSN: t.CommitLSN, EndLSN: t.EndLSN, CommitTime: t.CommitTime}
			}
		}
		return nil
	})
	if err == nil && found == nil {
		err = fmt.Errorf("restore point %q is not in the archive: 'wayback log' lists the marks", name)
	}
	return found, err
}

// TxnRef identifies an archived transaction.
type TxnRef struct {
	XID        uint32    `json:"xid"`
	CommitLSN  wal.LSN   `json:"-"`
	EndLSN     wal.LSN   `json:"-"`
	CommitTime time.Time `json:"commit_time"`
}
