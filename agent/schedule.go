package agent

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/wayback-pitr/wayback/basebackup"
	"github.com/wayback-pitr/wayback/config"
	"github.com/wayback-pitr/wayback/pitr"
	"github.com/wayback-pitr/wayback/store"
)

// BackupStatus is the state of the agent's base backups, for status
// output and metrics.
type BackupStatus struct {
	Running     bool
	LastSuccess time.Time // when the newest successful backup finished
	LastID      string
	LastTook    time.Duration
	LastFailure time.Time
	LastError   string // of the newest failure, cleared by a success
	Next        time.Time
	// Expired counts base backups retention deleted since the agent started.
	Expired int
}

// backupRetries bounds how often a failed scheduled backup is retried
// before the agent waits for the next scheduled instant.
var backupRetries = []time.Duration{time.Minute, 5 * time.Minute, 15 * time.Minute}

// runSchedule takes a base backup at every instant of the schedule (and
// first, when first is set) until ctx ends, one at a time, beside the
// live stream. A failed backup is retried a few times with growing
// pauses, then reported and left to the next instant. After each
// successful backup the retention policy, if any, is applied.
func (a *Agent) runSchedule(ctx context.Context, first bool) {
	cfg := a.opts.Config
	var next func(time.Time) time.Time
	if s := cfg.BaseBackup.Schedule; s != "" && s != "off" {
		sched, err := config.ParseSchedule(s)
		if err != nil { // Validate accepted it already
			a.log.Error("basebackup.schedule", zap.Error(err))
			return
		}
		next = sched.Next
	}
	log := a.log.With(zap.String("component", "basebackup"))
	for {
		if !first {
			if next == nil {
				return
			}
			at := next(time.Now())
			a.setBackupStatus(func(s *BackupStatus) { s.Next = at })
			log.Info("next base backup", zap.Time("at", at))
			t := time.NewTimer(time.Until(at))
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
		first = false
		for attempt := 0; ; attempt++ {
			err := a.backupOnce(ctx, log)
			if err == nil || ctx.Err() != nil {
				break
			}
			if attempt == len(backupRetries) {
				log.Error("base backup failed; giving up until the next scheduled one", zap.Int("attempts", attempt+1), zap.Error(err))
				break
			}
			log.Error("base backup failed; retrying", zap.Int("attempt", attempt+1), zap.Duration("in", backupRetries[attempt]), zap.Error(err))
			select {
			case <-time.After(backupRetries[attempt]):
			case <-ctx.Done():
				return
			}
		}
	}
}

func (a *Agent) backupOnce(ctx context.Context, log *zap.Logger) error {
	cfg := a.opts.Config
	began := time.Now()
	a.setBackupStatus(func(s *BackupStatus) { s.Running = true })
	m, err := basebackup.Take(ctx, a.opts.Fanout, basebackup.Options{
		DSN: cfg.Postgres.DSN, BinDir: cfg.Postgres.BinDir, Parallel: cfg.BaseBackup.Parallel, CopyFormat: cfg.BaseBackup.CopyFormat, Log: log,
	})
	took := time.Since(began)
	a.setBackupStatus(func(s *BackupStatus) {
		s.Running = false
		if err != nil {
			s.LastFailure, s.LastError = time.Now(), err.Error()
			return
		}
		s.LastSuccess, s.LastID, s.LastTook, s.LastError = time.Now(), m.ID, took, ""
	})
	if err != nil {
		return err
	}
	a.metrics.BaseBackup(m.FinishedAt, took)
	log.Info("base backup done", zap.String("backup", m.ID), zap.Duration("took", took))
	if p := PolicyOf(cfg.Retention); !p.IsZero() {
		res, err := ApplyRetention(ctx, a.opts.Fanout.Stores(), p, time.Now(), a.log)
		if err != nil {
			// The backup itself succeeded; expiry is finished by the next run.
			log.Error("retention after base backup failed", zap.Error(err))
		} else {
			a.setBackupStatus(func(s *BackupStatus) { s.Expired += res.Backups })
			a.metrics.RetentionAction("expire_backup", res.Backups)
		}
	}
	return nil
}

func (a *Agent) setBackupStatus(fn func(*BackupStatus)) {
	a.mu.Lock()
	fn(&a.stats.Backup)
	a.mu.Unlock()
}

// PolicyOf converts the retention configuration.
func PolicyOf(r config.Retention) pitr.Policy {
	return pitr.Policy{Daily: r.Daily, Weekly: r.Weekly, Monthly: r.Monthly, Yearly: r.Yearly, Last: r.Last, KeepWithin: time.Duration(r.KeepWithin)}
}

// ApplyRetention plans and carries out expiry of the archive in stores
// under policy p at time now.
func ApplyRetention(ctx context.Context, stores []store.Store, p pitr.Policy, now time.Time, log *zap.Logger) (*pitr.ExpireResult, error) {
	plan, prior, cat, err := PlanRetention(ctx, stores, p, now, log)
	if err != nil {
		return nil, err
	}
	return pitr.Expire(ctx, cat, plan, prior, pitr.ExpireOptions{Log: log, Now: now})
}

// PlanRetention loads the catalog and the retention state and plans
// expiry, for ApplyRetention and for dry runs.
func PlanRetention(ctx context.Context, stores []store.Store, p pitr.Policy, now time.Time, log *zap.Logger) (*pitr.ExpiryPlan, *pitr.RetentionState, *pitr.Catalog, error) {
	cat, err := pitr.Load(ctx, stores, log)
	if err != nil {
		return nil, nil, nil, err
	}
	for _, l := range cat.Listings {
		if l.Err != nil {
			return nil, nil, nil, fmt.Errorf("retention needs every store, and %s cannot be listed, so nothing was deleted; run it again when the store answers: %w", l.URL, l.Err)
		}
	}
	prior, err := pitr.ReadRetentionState(ctx, stores)
	if err != nil {
		return nil, nil, nil, err
	}
	plan, err := cat.PlanExpiry(ctx, p, now, prior)
	if err != nil {
		return nil, nil, nil, err
	}
	return plan, prior, cat, nil
}
