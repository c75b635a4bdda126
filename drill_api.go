package wayback

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/wayback-pitr/wayback/config"

	"github.com/wayback-pitr/wayback/drill"
	"github.com/wayback-pitr/wayback/scratch"
	"github.com/wayback-pitr/wayback/takeout"
)

// DrillOptions configure a restore drill.
type DrillOptions struct {
	// ScratchDSN names a database to restore into; it must not exist (it is
	// created and dropped) or be empty (it is emptied again afterwards).
	// Empty: a private local cluster is started from PGBin.
	ScratchDSN string
	// PGBin holds initdb, pg_ctl and postgres for the local cluster (""
	// searches the usual places).
	PGBin    string
	Parallel int
	// Progress, if set, receives human-readable lines.
	Progress func(format string, args ...any)
}

// DrillReport is the outcome of Drill; its Err names what failed.
type DrillReport = drill.Report

// Drill restores the newest base backup and every segment after it into a
// scratch database, compares each loaded table with the row count and row
// digest the backup's manifest recorded, and replays to the newest
// archived instant. Problems in the archive are in the report; the error
// is for a drill that could not run (no scratch database).
func (a *Archive) Drill(ctx context.Context, o DrillOptions) (*DrillReport, error) {
	return drill.Run(ctx, drill.Options{
		Stores: a.stores, Parallel: max(o.Parallel, 2), Log: a.log, Progress: o.Progress,
		Scratch: scratch.DBOptions{DSN: o.ScratchDSN, BinDir: o.PGBin, Log: a.log},
	})
}

// ExportOptions configure Export.
type ExportOptions struct {
	Target Target
	// Out is the zip file to write; it appears only when complete.
	Out string
	// ScratchDSN and PGBin select the scratch database as for Drill.
	ScratchDSN string
	PGBin      string
	// BinDir holds pg_dump ("" searches the usual places; PGBin is tried
	// first when set).
	BinDir   string
	Parallel int
	Progress func(format string, args ...any)
}

// TakeoutManifest is manifest.json of an export.
type TakeoutManifest = takeout.Manifest

// Export restores o.Target into a scratch database and writes a zip with
// one CSV per table, schema.sql and manifest.json (docs/drills.md).
func (a *Archive) Export(ctx context.Context, o ExportOptions) (*TakeoutManifest, error) {
	bin := o.BinDir
	if bin == "" {
		bin = o.PGBin
	}
	return takeout.Export(ctx, takeout.Options{
		Stores: a.stores, Target: o.Target, Out: o.Out, BinDir: bin, Parallel: max(o.Parallel, 1), Log: a.log, Progress: o.Progress,
		Scratch: scratch.DBOptions{DSN: o.ScratchDSN, BinDir: o.PGBin, Log: a.log},
	})
}

// LastDrill returns the report of the newest scheduled restore drill
// (verify.schedule), or nil before the first one has finished.
func (g *Agent) LastDrill() *DrillReport {
	g.drillMu.Lock()
	defer g.drillMu.Unlock()
	return g.lastDrill
}

// scheduleDrills runs a restore drill at every instant of
// cfg.Verify.Schedule until ctx ends. Drills run one at a time: one that
// overruns the next instant delays it rather than overlapping it.
func (a *Archive) scheduleDrills(ctx context.Context, cfg config.Config, g *Agent) {
	sched, err := config.ParseSchedule(cfg.Verify.Schedule)
	if err != nil { // Validate has accepted it already
		a.log.Error("verify.schedule", zap.Error(err))
		return
	}
	log := a.log.With(zap.String("component", "drill"))
	for {
		next := sched.Next(time.Now())
		log.Info("next restore drill", zap.Time("at", next))
		t := time.NewTimer(time.Until(next))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		rep, err := drill.Run(ctx, drill.Options{
			Stores: a.stores, Parallel: max(cfg.BaseBackup.Parallel, 1), Log: log,
			Scratch: scratch.DBOptions{DSN: cfg.Verify.ScratchDSN, BinDir: cfg.Postgres.BinDir, Log: log},
		})
		if ctx.Err() != nil {
			return
		}
		switch {
		case err != nil:
			log.Error("restore drill could not run", zap.Error(err))
			continue
		case rep.OK:
			log.Info("restore drill passed", zap.String("backup", rep.Backup), zap.Int("tables", len(rep.Tables)),
				zap.Int("transactions", rep.Replay.Transactions), zap.String("reached_lsn", rep.Replay.ReachedLSN), zap.Duration("took", rep.Took))
		default:
			log.Error("restore drill failed", zap.String("backup", rep.Backup), zap.Int("bad_tables", rep.Bad), zap.Error(rep.Err()))
		}
		g.drillMu.Lock()
		g.lastDrill = rep
		g.drillMu.Unlock()
	}
}
