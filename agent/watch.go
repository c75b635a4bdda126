package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/wayback-pitr/wayback/metrics"
	"github.com/wayback-pitr/wayback/pitr"
	"github.com/wayback-pitr/wayback/store"
	"github.com/wayback-pitr/wayback/wal"
)

// SlotInfo is the replication slot as the server reports it.
type SlotInfo struct {
	Exists    bool
	WALStatus string // reserved, extended, unreserved, lost ("missing" when absent)
	// Retained is pg_current_wal_lsn() - restart_lsn: WAL the server keeps
	// for the slot.
	Retained  int64
	Confirmed wal.LSN
	ServerLSN wal.LSN
}

// ReadSlot reads the slot named slot in the database conn is connected to.
func ReadSlot(ctx context.Context, conn *pgx.Conn, slot string) (SlotInfo, error) {
	var si SlotInfo
	var status, confirmed *string
	var retained *int64
	var server string
	err := conn.QueryRow(ctx, `SELECT s.wal_status, s.confirmed_flush_lsn::text,
			(pg_current_wal_lsn() - s.restart_lsn)::bigint, pg_current_wal_lsn()::text
		FROM pg_replication_slots s
		WHERE s.slot_name = $1 AND s.database = current_database() AND s.plugin = 'pgoutput'`, slot).Scan(&status, &confirmed, &retained, &server)
	if errors.Is(err, pgx.ErrNoRows) {
		si.WALStatus = "missing"
		return si, nil
	}
	if err != nil {
		return si, fmt.Errorf("read slot %q: %w", slot, err)
	}
	si.Exists = true
	if status != nil {
		si.WALStatus = *status
	}
	if retained != nil {
		si.Retained = *retained
	}
	if confirmed != nil {
		si.Confirmed, _ = wal.ParseLSN(*confirmed)
	}
	si.ServerLSN, _ = wal.ParseLSN(server)
	return si, nil
}

// SlotLostError says the slot is gone or invalidated and exactly how to
// recover. The archive keeps everything up to the loss; verify reports the
// gap between that and the new base backup.
func SlotLostError(slot, why string) error {
	return fatalError{fmt.Errorf("replication slot %q %s: the WAL it held is gone, so changes since the last archived segment are lost to the archive. "+
		"To recover: 1) 'wayback setup' (creates a new slot), 2) 'wayback backup' (a new base backup starts a new restorable range), 3) start the agent again; "+
		"'wayback verify' reports the continuity gap. To stop this recurring, raise max_slot_wal_keep_size or keep the agent running (docs/operations.md, Slot safety)", slot, why)}
}

// archiveEnd is the newest position the archive covers: the end of its
// newest segment or the consistent point of its newest base backup.
func archiveEnd(cat *pitr.Catalog) (end wal.LSN, any bool) {
	for _, s := range cat.Segments {
		end, any = max(end, s.To), true
	}
	for _, b := range cat.Backups {
		end, any = max(end, b.LSN()), true
	}
	return end, any
}

// checkResume refuses to stream when the slot and the archive disagree, so
// that a restart never silently skips data: a missing or lost slot while
// the archive holds data, or a slot confirmed beyond the archive's end
// (acknowledged by someone else but never archived). cat holds only the
// stores that answered; down names the others, which may hold the rest.
func (a *Agent) checkResume(ctx context.Context, cat *pitr.Catalog, down []string) error {
	cfg := a.opts.Config
	conn, err := pgx.Connect(ctx, cfg.Postgres.DSN)
	if err != nil {
		return fmt.Errorf("connect to source: %w", err)
	}
	defer conn.Close(context.Background())
	si, err := ReadSlot(ctx, conn, cfg.Postgres.Slot)
	if err != nil {
		return err
	}
	end, has := archiveEnd(cat)
	switch {
	case !si.Exists && has:
		return SlotLostError(cfg.Postgres.Slot, "does not exist but the archive holds data (dropped, or lost with its server)")
	case !si.Exists:
		return fatalError{fmt.Errorf("replication slot %q does not exist in this database: run 'wayback setup' first", cfg.Postgres.Slot)}
	case si.WALStatus == "lost":
		return SlotLostError(cfg.Postgres.Slot, "was invalidated (wal_status lost; max_slot_wal_keep_size exceeded)")
	case has && si.Confirmed > end && len(down) > 0:
		// Segments written while these stores were failing may exist only
		// in a store that is down now: wait for it rather than guess.
		return fmt.Errorf("replication slot %q is confirmed up to %s but the stores that answered hold the archive only up to %s; %s did not answer and may hold the rest. Start again when it answers (if it is lost for good, remove it from the configuration: the agent then reports the gap)",
			cfg.Postgres.Slot, si.Confirmed, end, strings.Join(down, ", "))
	case has && si.Confirmed > end:
		return fatalError{fmt.Errorf("replication slot %q is confirmed up to %s but the archive ends at %s: changes in between were acknowledged without being archived (another consumer advanced the slot, or it was recreated). "+
			"Refusing to continue rather than leave a silent gap. If the slot was recreated on purpose, take a new base backup ('wayback backup') and start the agent again; 'wayback verify' reports the gap",
			cfg.Postgres.Slot, si.Confirmed, end)}
	}
	return nil
}

// watchSlot polls the slot for metrics and safety: it warns once when the
// slot holds more than slot.max_retained of WAL (and once when it is back
// under), and stops the agent through fail when the slot is lost.
func (a *Agent) watchSlot(ctx context.Context, fail func(error)) {
	cfg := a.opts.Config
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	over := false
	for {
		a.refreshStores()
		err := func() error {
			if conn == nil {
				c, err := pgx.Connect(ctx, cfg.Postgres.DSN)
				if err != nil {
					return err
				}
				conn = c
			}
			si, err := ReadSlot(ctx, conn, cfg.Postgres.Slot)
			if err != nil {
				conn.Close(context.Background())
				conn = nil
				return err
			}
			a.metrics.Slot(si.Retained, si.WALStatus)
			switch {
			case !si.Exists:
				fail(SlotLostError(cfg.Postgres.Slot, "was dropped while the agent ran"))
				return nil
			case si.WALStatus == "lost":
				fail(SlotLostError(cfg.Postgres.Slot, "was invalidated (wal_status lost; max_slot_wal_keep_size exceeded)"))
				return nil
			}
			limit := int64(cfg.Slot.MaxRetained)
			if limit > 0 && si.Retained > limit && !over {
				a.log.Warn("replication slot retains more WAL than slot.max_retained: the archive is behind and the server's disk fills; check the stores and the agent's lag, and set max_slot_wal_keep_size so a stuck agent cannot fill the disk",
					zap.String("slot", cfg.Postgres.Slot), zap.Int64("retained_bytes", si.Retained), zap.Int64("max_retained", limit), zap.String("wal_status", si.WALStatus))
				over = true
			} else if over && si.Retained <= limit {
				a.log.Info("replication slot back under slot.max_retained", zap.String("slot", cfg.Postgres.Slot), zap.Int64("retained_bytes", si.Retained))
				over = false
			}
			return nil
		}()
		if err != nil && ctx.Err() == nil {
			a.log.Debug("cannot read slot state", zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(a.opts.SlotInterval):
		}
	}
}

// refreshStores copies the fan-out's view of each store into the metrics.
func (a *Agent) refreshStores() {
	for i, s := range a.opts.Fanout.Stores() {
		a.metrics.StoreUp(store.Redact(s.URL()), a.opts.Fanout.State(i) != store.Failing)
	}
}

// onWrite feeds per-store shipping metrics from the fan-out.
func (a *Agent) onWrite(i int, key string, size int64, err error) {
	url := store.Redact(a.opts.Fanout.Stores()[i].URL())
	if err != nil {
		a.metrics.StoreError(url)
		a.metrics.StoreUp(url, false)
		return
	}
	a.metrics.StoreUp(url, true)
	if !strings.HasPrefix(key, wal.SegmentPrefix) {
		return
	}
	a.mu.Lock()
	commit := a.commits[key]
	a.mu.Unlock()
	a.metrics.Shipped(url, size, commit)
}

// noteSegment remembers a segment's newest commit until its writes land.
func (a *Agent) noteSegment(key string, lastCommit time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.commits == nil || len(a.commits) > 1024 {
		// Backfills of long-gone segments just report no commit time.
		a.commits = map[string]time.Time{}
	}
	if !lastCommit.IsZero() {
		a.commits[key] = lastCommit
	}
}

// lag is server WAL end minus the durable position, and the age of the
// newest durable commit while behind.
func (a *Agent) lag() (float64, float64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	end, d := a.serverEnd, a.stats.DurableLSN
	if end <= d {
		return 0, 0
	}
	secs := 0.0
	if !a.stats.LastDurable.IsZero() {
		secs = time.Since(a.stats.LastDurable).Seconds()
	}
	return float64(end - d), secs
}

// Ready says whether the agent streams with at least min_copies stores
// taking writes (the /readyz probe).
func (a *Agent) Ready() error {
	a.mu.Lock()
	on := a.streaming
	a.mu.Unlock()
	if !on {
		return errors.New("not streaming")
	}
	up := 0
	for i := range a.opts.Fanout.Stores() {
		if a.opts.Fanout.State(i) != store.Failing {
			up++
		}
	}
	if up < a.opts.Fanout.MinCopies() {
		return fmt.Errorf("%d stores take writes, min_copies is %d", up, a.opts.Fanout.MinCopies())
	}
	return nil
}

// Metrics are the agent's Prometheus metrics; retention and other
// schedulers record their actions here (Metrics().RetentionAction).
func (a *Agent) Metrics() *metrics.Metrics { return a.metrics }
