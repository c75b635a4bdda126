// Package drill runs restore drills: it restores the newest base backup
// and every segment after it into a scratch database, checks the loaded
// tables against the row counts and row digests the backup's manifest
// recorded, and replays the segments to the newest archived instant. A
// backup that checksums fine object by object can still be wrong (a data
// file swapped for another backup's, re-checksummed); only loading it and
// reading it back shows that. This is `wayback verify --deep`, and the
// agent runs it on verify.schedule.
package drill

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/wayback-pitr/wayback/basebackup"
	"github.com/wayback-pitr/wayback/pitr"
	"github.com/wayback-pitr/wayback/replay"
	"github.com/wayback-pitr/wayback/scratch"
	"github.com/wayback-pitr/wayback/store"
	"github.com/wayback-pitr/wayback/wal"
)

// Options configure a drill.
type Options struct {
	Stores  []store.Store
	Scratch scratch.DBOptions
	// Parallel is how many tables load at once.
	Parallel int
	TempDir  string
	Log      *zap.Logger
	// Progress receives human-readable progress lines (nil: none).
	Progress func(format string, args ...any)
}

// TableCheck is one table of the base backup, loaded and read back.
type TableCheck struct {
	Table    string `json:"table"`
	WantRows int64  `json:"want_rows"`
	GotRows  int64  `json:"got_rows"`
	WantSum  string `json:"want_sum,omitempty"` // empty: the backup predates row digests
	GotSum   string `json:"got_sum"`
	OK       bool   `json:"ok"`
	Problem  string `json:"problem,omitempty"`
}

// ReplayCheck is the replay of the segments after the backup.
type ReplayCheck struct {
	OK           bool       `json:"ok"`
	Segments     int        `json:"segments"`
	Transactions int        `json:"transactions"`
	Changes      int64      `json:"changes"`
	ReachedLSN   string     `json:"reached_lsn,omitempty"`
	ReachedTime  *time.Time `json:"reached_time,omitempty"`
	ArchiveEnd   string     `json:"archive_end_lsn,omitempty"` // newest archived LSN in any store
	Error        string     `json:"error,omitempty"`
}

// Report is the outcome of a drill.
type Report struct {
	OK        bool          `json:"ok"`
	Backup    string        `json:"backup,omitempty"`
	BackupLSN string        `json:"backup_lsn,omitempty"`
	Scratch   string        `json:"scratch"`
	Tables    []TableCheck  `json:"tables"`
	Bad       int           `json:"bad_tables"`
	Replay    ReplayCheck   `json:"replay"`
	Error     string        `json:"error,omitempty"` // the drill could not run to the end
	Took      time.Duration `json:"took_ns"`
}

// Err summarises a failed drill in one line naming what is wrong, or nil.
func (r *Report) Err() error {
	if r.OK {
		return nil
	}
	var parts []string
	for _, t := range r.Tables {
		if !t.OK {
			parts = append(parts, "table "+t.Table+": "+t.Problem)
		}
	}
	if r.Error != "" {
		parts = append(parts, r.Error)
	}
	if r.Replay.Error != "" {
		parts = append(parts, "replay: "+r.Replay.Error)
	}
	if len(parts) == 0 {
		parts = append(parts, "failed")
	}
	msg := "restore drill of backup " + r.Backup + " failed: " + parts[0]
	if r.Backup == "" {
		msg = "restore drill failed: " + parts[0]
	}
	if len(parts) > 1 {
		msg += fmt.Sprintf(" (and %d more problems)", len(parts)-1)
	}
	return errors.New(msg)
}

// Run restores the newest backup and its segments into a scratch database
// and checks them. Problems found in the archive are in the report (OK
// false); an error means the drill itself could not start (no scratch
// database).
func Run(ctx context.Context, opts Options) (*Report, error) {
	began := time.Now()
	log := opts.Log
	if log == nil {
		log = zap.NewNop()
	}
	progress := opts.Progress
	if progress == nil {
		progress = func(string, ...any) {}
	}
	rep := &Report{Tables: []TableCheck{}}
	defer func() { rep.Took = time.Since(began) }()

	cat, err := pitr.Load(ctx, opts.Stores, log)
	if err != nil {
		return nil, err
	}
	// The drill checks the backup and replays as far as the chain reaches,
	// then reports a gap itself, so it restores up to the gap.
	latest := pitr.Target{Kind: pitr.Latest, StopAtGap: true}
	plan, err := cat.Plan(latest)
	if err != nil {
		rep.Error = err.Error()
		return rep, nil
	}
	rep.Backup, rep.BackupLSN = plan.Backup.ID, plan.Backup.ConsistentLSN
	if n := len(cat.Segments); n > 0 {
		var end wal.LSN
		for _, s := range cat.Segments {
			end = max(end, s.To)
		}
		rep.Replay.ArchiveEnd = end.String()
	}

	db, err := scratch.OpenDB(ctx, opts.Scratch)
	if err != nil {
		return nil, err
	}
	rep.Scratch = db.Where()
	defer func() {
		if cerr := db.Close(context.WithoutCancel(ctx)); cerr != nil {
			log.Warn("throwing the scratch database away", zap.Error(cerr))
		}
	}()
	progress("drill: restoring base backup %s and %d segments into %s", plan.Backup.ID, len(plan.Chain), rep.Scratch)

	loaded := false
	res, rerr := replay.Restore(ctx, replay.RestoreOptions{
		Stores: opts.Stores, TargetDSN: db.DSN, Target: latest,
		Parallel: opts.Parallel, TempDir: opts.TempDir, Log: log, Progress: progress,
		AfterLoad: func(ctx context.Context, m *basebackup.Manifest, dsn string) error {
			loaded = true
			progress("drill: reading back %d tables", len(m.Tables))
			checks, err := CheckTables(ctx, m, dsn)
			rep.Tables = checks
			return err
		},
	})
	for _, t := range rep.Tables {
		if !t.OK {
			rep.Bad++
		}
	}
	switch {
	case rerr != nil && !loaded:
		// Planning, fetching or loading failed: nothing was replayed.
		rep.Error = "restore failed before the tables could be checked: " + rerr.Error()
		rep.Replay.Error = "not started: the base backup did not load"
	case rerr != nil:
		rep.Replay.Error = rerr.Error()
	}
	if res != nil {
		rep.Replay.Segments = res.Segments
		if s := res.Replay; s != nil {
			rep.Replay.Transactions, rep.Replay.Changes = s.Applied, s.Changes
			if s.Applied > 0 {
				at := s.LastCommit.UTC()
				rep.Replay.ReachedLSN, rep.Replay.ReachedTime = s.LastLSN.String(), &at
			}
		}
	}
	// Latest replays as far as the chain from the backup reaches; a
	// segment missing from every store ends it early without an error.
	if rerr == nil {
		if next := cat.NextAfter(plan.End); next != nil {
			rep.Replay.Error = fmt.Sprintf("gap in the archive from LSN %s to %s: no store holds a segment covering it, so the %d segments after it cannot be replayed (restore to a point before the gap, or take a new base backup)",
				plan.End, next.From, countAfter(cat, plan.End))
		}
	}
	rep.Replay.OK = rep.Replay.Error == ""
	if rep.Error == "" && len(rep.Tables) != len(plan.Backup.Tables) {
		rep.Error = fmt.Sprintf("only %d of the backup's %d tables were checked", len(rep.Tables), len(plan.Backup.Tables))
	}
	rep.OK = rep.Replay.OK && rep.Bad == 0 && rep.Error == ""
	return rep, nil
}

func countAfter(cat *pitr.Catalog, end wal.LSN) int {
	n := 0
	for _, s := range cat.Segments {
		if s.From > end {
			n++
		}
	}
	return n
}

// CheckTables reads every table of backup m back from the database at dsn,
// where it has just been loaded, and compares row counts and row digests
// with the manifest. It returns an error only when it cannot read.
func CheckTables(ctx context.Context, m *basebackup.Manifest, dsn string) ([]TableCheck, error) {
	conn, err := wal.ConnectText(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("connect to the scratch database: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	out := make([]TableCheck, 0, len(m.Tables))
	for _, t := range m.Tables {
		rows, sum, err := basebackup.SumTable(ctx, conn, m.Version, t)
		if err != nil {
			return out, err
		}
		c := TableCheck{Table: t.Schema + "." + t.Name, WantRows: t.Rows, GotRows: rows, WantSum: t.RowSum, GotSum: sum, OK: true}
		switch {
		case rows != t.Rows:
			c.OK = false
			c.Problem = fmt.Sprintf("loaded %d rows, the manifest says %d", rows, t.Rows)
		case t.RowSum != "" && sum != t.RowSum:
			c.OK = false
			c.Problem = fmt.Sprintf("row digest %s differs from the manifest's %s (same row count %d): the data file holds other rows than were backed up", sum, t.RowSum, rows)
		}
		out = append(out, c)
	}
	return out, nil
}
