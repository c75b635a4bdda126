package replay

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"

	"github.com/wayback-pitr/wayback/basebackup"
	"github.com/wayback-pitr/wayback/pitr"
	"github.com/wayback-pitr/wayback/store"
)

// RestoreOptions configures Restore.
type RestoreOptions struct {
	Stores     []store.Store
	TargetDSN  string
	Target     pitr.Target
	Skip       map[uint32]bool
	OnConflict ConflictPolicy
	DryRun     bool
	Parallel   int
	TempDir    string
	Log        *zap.Logger
	// Progress receives human-readable progress lines (nil: none).
	Progress func(format string, args ...any)
	// AfterLoad, if set, runs once the base backup is loaded and before any
	// segment is replayed; restore drills check the loaded tables against
	// the backup's manifest there. An error ends the restore.
	AfterLoad func(ctx context.Context, backup *basebackup.Manifest, targetDSN string) error
}

// RestoreResult reports a restore.
type RestoreResult struct {
	Backup   *basebackup.Manifest `json:"-"`
	BackupID string               `json:"backup"`
	Segments int                  `json:"segments"`
	Target   string               `json:"target"`
	Replay   *Summary             `json:"replay,omitempty"`
	// Dependencies: later transactions touching rows that skipped ones
	// changed, found before anything was written.
	Dependencies []Dependency  `json:"dependencies,omitempty"`
	CreatedDB    bool          `json:"created_database"`
	Took         time.Duration `json:"took_ns"`
	// LoadTook is the time spent loading the base backup (schema, rows,
	// indexes and constraints); ReplayTook the time spent applying the
	// archived transactions after it.
	LoadTook   time.Duration `json:"load_ns"`
	ReplayTook time.Duration `json:"replay_ns"`
	DryRun     bool          `json:"dry_run"`
}

// TargetNotEmptyError is returned, before anything is written, when the
// restore target already holds relations: restoring over existing data
// would mix two databases.
type TargetNotEmptyError struct {
	Database  string
	Relations int
	Example   string // one qualified relation name found there
}

func (e *TargetNotEmptyError) Error() string {
	return fmt.Sprintf("target database %q is not empty (%d relations, e.g. %s): restore into a new or empty database", e.Database, e.Relations, e.Example)
}

// Restore rebuilds the source database as of opts.Target in the database
// named by opts.TargetDSN. Everything that can be checked without writing
// (the plan, every segment's checksum, the target's emptiness) is checked
// first; if a later step fails in a database Restore created, the database
// is dropped again.
func Restore(ctx context.Context, opts RestoreOptions) (res *RestoreResult, err error) {
	began := time.Now()
	log := opts.Log
	if log == nil {
		log = zap.NewNop()
	}
	progress := opts.Progress
	if progress == nil {
		progress = func(string, ...any) {}
	}
	cat, err := pitr.Load(ctx, opts.Stores, log)
	if err != nil {
		return nil, err
	}
	target, err := cat.Resolve(ctx, opts.Target)
	if err != nil {
		return nil, err
	}
	plan, err := cat.Plan(target)
	if err != nil {
		return nil, err
	}
	scratch, err := os.MkdirTemp(opts.TempDir, "wayback-restore-")
	if err != nil {
		return nil, fmt.Errorf("create scratch directory: %w", err)
	}
	defer os.RemoveAll(scratch)
	progress("plan: base backup %s (consistent at %s, LSN %s), %d segments to check", plan.Backup.ID,
		plan.Backup.ConsistentTime.UTC().Format(time.RFC3339), plan.Backup.ConsistentLSN, len(plan.Chain))
	segs, err := cat.Fetch(ctx, plan, scratch)
	if err != nil {
		return nil, err
	}
	res = &RestoreResult{Backup: plan.Backup.Manifest, BackupID: plan.Backup.ID, Segments: len(segs), Target: opts.Target.String(), DryRun: opts.DryRun}
	if len(opts.Skip) > 0 {
		for xid := range opts.Skip {
			if _, err := cat.FindTxn(ctx, xid); err != nil {
				return nil, fmt.Errorf("--skip-xid %d: %w", xid, err)
			}
		}
		if res.Dependencies, err = AnalyzeSkip(ctx, cat, plan.Start(), target, opts.Skip); err != nil {
			return nil, err
		}
		for _, d := range res.Dependencies {
			progress("warning: later transaction %s", d)
		}
	}
	if opts.DryRun {
		res.Took = time.Since(began)
		return res, nil
	}

	created, err := prepareTarget(ctx, opts.TargetDSN)
	if err != nil {
		return nil, err
	}
	res.CreatedDB = created
	defer func() {
		if err == nil {
			return
		}
		if created {
			if derr := dropDatabase(context.Background(), opts.TargetDSN); derr != nil {
				err = fmt.Errorf("%w (and dropping the partly restored database failed: %v)", err, derr)
			} else {
				err = fmt.Errorf("%w (the partly restored database was dropped)", err)
			}
		} else {
			err = fmt.Errorf("%w (the target database holds a partial restore: drop and recreate it before retrying)", err)
		}
	}()

	progress("loading base backup %s: %d tables, %d rows", plan.Backup.ID, len(plan.Backup.Tables), plan.Backup.Rows())
	loadBegan := time.Now()
	err = basebackup.Load(ctx, plan.Backup.Manifest, opts.Stores, opts.TargetDSN, basebackup.LoadOptions{
		Parallel: opts.Parallel, Log: log,
		Progress: func(done, total int, table string) { progress("  loaded %d/%d tables (%s)", done, total, table) },
	})
	if err != nil {
		return nil, err
	}
	if opts.AfterLoad != nil {
		if err := opts.AfterLoad(ctx, plan.Backup.Manifest, opts.TargetDSN); err != nil {
			return nil, err
		}
	}
	res.LoadTook = time.Since(loadBegan)
	replayBegan := time.Now()
	progress("replaying %d segments from LSN %s", len(segs), plan.Start())
	lastReport := time.Now()
	sum, err := Apply(ctx, opts.TargetDSN, plan.Start(), target, segs, Options{
		Log: log, Skip: opts.Skip, OnConflict: opts.OnConflict, Dependencies: res.Dependencies,
		Progress: func(s *Summary) {
			if time.Since(lastReport) > 2*time.Second {
				lastReport = time.Now()
				progress("  applied %d transactions (%d changes), at %s", s.Applied, s.Changes, s.LastCommit.UTC().Format(time.RFC3339))
			}
		},
	})
	if err != nil {
		return nil, err
	}
	if err := AdvanceSequences(ctx, opts.TargetDSN); err != nil {
		return nil, err
	}
	res.Replay = sum
	res.ReplayTook = time.Since(replayBegan)
	res.Took = time.Since(began)
	return res, nil
}

// prepareTarget creates the target database if it does not exist and
// refuses one that holds anything.
func prepareTarget(ctx context.Context, dsn string) (created bool, err error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return false, fmt.Errorf("target DSN: %w", err)
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "3D000" {
		if err := adminExec(ctx, cfg, "CREATE DATABASE "+pgx.Identifier{cfg.Database}.Sanitize()+" TEMPLATE template0"); err != nil {
			return false, fmt.Errorf("create target database %q: %w", cfg.Database, err)
		}
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("connect to target database %q at %s:%d: %w", cfg.Database, cfg.Host, cfg.Port, err)
	}
	defer conn.Close(context.Background())
	var n int
	var example string
	err = conn.QueryRow(ctx, `SELECT count(*), coalesce(min(n.nspname || '.' || c.relname), '') FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_toast%'`).Scan(&n, &example)
	if err != nil {
		return false, fmt.Errorf("inspect target database: %w", err)
	}
	if n > 0 {
		return false, &TargetNotEmptyError{Database: cfg.Database, Relations: n, Example: example}
	}
	return false, nil
}

// adminExec runs a statement on the target server's maintenance database.
func adminExec(ctx context.Context, cfg *pgx.ConnConfig, sql string) error {
	admin := cfg.Copy()
	admin.Database = "postgres"
	conn, err := pgx.ConnectConfig(ctx, admin)
	if err != nil {
		return fmt.Errorf("connect to maintenance database: %w", err)
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

func dropDatabase(ctx context.Context, dsn string) error {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return err
	}
	return adminExec(ctx, cfg, "DROP DATABASE IF EXISTS "+pgx.Identifier{cfg.Database}.Sanitize()+" WITH (FORCE)")
}
