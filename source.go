package wayback

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/wayback-pitr/wayback/agent"
	"github.com/wayback-pitr/wayback/config"
	"github.com/wayback-pitr/wayback/metrics"
	"github.com/wayback-pitr/wayback/pitr"
	"github.com/wayback-pitr/wayback/store"
	"github.com/wayback-pitr/wayback/wal"
)

// SetupOptions configure Setup.
type SetupOptions = agent.SetupOptions

// SetupReport says what Setup found and did.
type SetupReport = agent.SetupReport

// Setup creates, idempotently, what the agent needs on the source: the
// publication, the logical replication slot, the wayback schema and the
// event trigger that records DDL in the stream. It needs a superuser.
func Setup(ctx context.Context, o SetupOptions) (*SetupReport, error) {
	return agent.Setup(ctx, o)
}

// MarkRef is where a restore point landed in the stream.
type MarkRef struct {
	LSN  wal.LSN   // position of the restore point
	Time time.Time // the source's clock when it was recorded
}

// Mark records a named restore point on the source: a transactional
// logical message that travels in the stream like any transaction, so
// AtMark(name) restores to exactly the state at that moment.
func Mark(ctx context.Context, dsn, name string) (MarkRef, error) {
	if strings.TrimSpace(name) == "" {
		return MarkRef{}, errors.New("a restore point needs a name")
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return MarkRef{}, fmt.Errorf("connect to source: %w", err)
	}
	defer conn.Close(context.Background())
	var lsn string
	var r MarkRef
	err = conn.QueryRow(ctx, "SELECT pg_logical_emit_message(true, $1, $2)::text, clock_timestamp()", pitr.MarkPrefix, name).Scan(&lsn, &r.Time)
	if err != nil {
		return r, fmt.Errorf("record restore point: %w", err)
	}
	if r.LSN, err = wal.ParseLSN(lsn); err != nil {
		return r, fmt.Errorf("record restore point: %w", err)
	}
	return r, nil
}

// DefaultConfig is the configuration the wayback command starts from
// before reading a file, the environment and flags.
func DefaultConfig() config.Config { return config.Defaults() }

// AgentOptions configure an agent.
type AgentOptions struct {
	// Config holds the source (Postgres.DSN, slot, publication), MinCopies,
	// FlushInterval, segment size and base-backup settings; start from
	// DefaultConfig(). Its Stores list is ignored: the agent writes to the
	// archive it is started from.
	Config config.Config
	// NoInitialBackup stops the agent from taking a base backup on start
	// when the archive has none.
	NoInitialBackup bool
	// RepairInterval is how often stores that missed objects are checked
	// and backfilled (default 10s).
	RepairInterval time.Duration
}

// Agent is a running agent: it streams the source's changes into the
// archive until stopped.
type Agent struct {
	agent  *agent.Agent
	fan    *store.Fanout
	dsn    string
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
	err    error

	drillMu   sync.Mutex
	lastDrill *DrillReport
}

// StartAgent starts an agent shipping the source's change stream to every
// store of the archive. It starts when at least MinCopies stores answer
// (the archive's Unreachable stores, and any other that does not answer
// the agent's own check, start failing and are backfilled when they
// answer); with fewer, Wait returns a *store.UnreachableError. It runs
// until ctx ends or Stop is called; Wait returns why it ended.
func (a *Archive) StartAgent(ctx context.Context, o AgentOptions) (*Agent, error) {
	cfg := o.Config
	for _, s := range a.stores {
		cfg.Stores = append(cfg.Stores, s.URL())
	}
	if cfg.MinCopies == 0 {
		cfg.MinCopies = len(a.stores)
	}
	if err := cfg.Validate(config.Need{DSN: true}); err != nil {
		return nil, fmt.Errorf("agent config: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	g := &Agent{
		fan:    store.NewFanout(a.stores, cfg.MinCopies, a.log),
		dsn:    cfg.Postgres.DSN,
		cancel: cancel,
		done:   make(chan struct{}),
	}
	g.agent = agent.New(agent.Options{Config: cfg, Fanout: g.fan, Log: a.log, NoInitialBackup: o.NoInitialBackup, RepairInterval: o.RepairInterval, Down: a.down})
	var drills sync.WaitGroup
	if cfg.Verify.Schedule != "" {
		drills.Add(1)
		go func() {
			defer drills.Done()
			a.scheduleDrills(ctx, cfg, g)
		}()
	}
	go func() {
		defer close(g.done)
		err := g.agent.Run(ctx)
		g.fan.Wait()
		// A drill in progress ends with the context and throws its
		// scratch database away before the agent counts as stopped.
		cancel()
		drills.Wait()
		g.err = err
	}()
	return g, nil
}

// Stats returns the agent's counters: segments and bytes shipped, the
// newest durable position and commit time, and per-segment RPO samples.
func (g *Agent) Stats() agent.Stats { return g.agent.Stats() }

// Metrics are the agent's Prometheus metrics (private registry); other
// schedulers record their actions there, e.g. Metrics().RetentionAction.
func (g *Agent) Metrics() *metrics.Metrics { return g.agent.Metrics() }

// Done is closed when the agent has stopped.
func (g *Agent) Done() <-chan struct{} { return g.done }

// Wait blocks until the agent stops and returns why: nil after Stop or a
// cancelled context, otherwise the error that ended it.
func (g *Agent) Wait() error {
	<-g.done
	return g.err
}

// Stop asks the agent to drain what it holds and exit, and waits for it.
func (g *Agent) Stop() error {
	g.once.Do(g.cancel)
	return g.Wait()
}

// Sync waits until every transaction committed on the source before the
// call is durable in the archive (in MinCopies stores). Restore drills
// call it between writing data and restoring it.
func (g *Agent) Sync(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, g.dsn)
	if err != nil {
		return fmt.Errorf("sync: connect to source: %w", err)
	}
	var lsn string
	err = conn.QueryRow(ctx, "SELECT pg_logical_emit_message(true, 'wayback.sync', '')::text").Scan(&lsn)
	conn.Close(context.Background())
	if err != nil {
		return fmt.Errorf("sync: write a marker on the source: %w", err)
	}
	marker, err := wal.ParseLSN(lsn)
	if err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for g.Stats().DurableLSN <= marker {
		select {
		case <-ctx.Done():
			return fmt.Errorf("sync: archive reached LSN %s, waiting for %s: %w", g.Stats().DurableLSN, marker, ctx.Err())
		case <-g.done:
			if g.err != nil {
				return fmt.Errorf("sync: agent stopped: %w", g.err)
			}
			return errors.New("sync: agent stopped before the archive caught up")
		case <-tick.C:
		}
	}
	return nil
}
