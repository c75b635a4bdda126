package main

import (
	"context"
	"fmt"
	"io"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/wayback-pitr/wayback"
	"github.com/wayback-pitr/wayback/config"
	"github.com/wayback-pitr/wayback/testenv"
	"github.com/wayback-pitr/wayback/wal"
)

type rpoOptions struct {
	Duration time.Duration
	Scale    int
	Clients  int
	Probe    time.Duration
	Flush    time.Duration
}

var defaultRPO = rpoOptions{Duration: 30 * time.Second, Scale: 10, Clients: 4, Probe: 100 * time.Millisecond, Flush: time.Second}

// rpoPhase is one measured phase.
type rpoPhase struct {
	Name      string
	Samples   []time.Duration // commit-to-durable per probe transaction
	TPS       float64         // pgbench's rate, 0 when idle
	Unshipped int             // probes not durable when the phase ended
}

type rpoReport struct {
	Opts   rpoOptions
	Phases []rpoPhase
}

// runRPO measures commit-to-durable latency. Probe transactions commit a
// transactional logical message every o.Probe; the message's LSN precedes
// its commit, and segments hold whole transactions, so the probe is durable
// as soon as the agent's durable position passes that LSN. The watcher
// polls the agent every 2 ms, which bounds the measurement error.
func runRPO(ctx context.Context, o rpoOptions, progress io.Writer) (*rpoReport, error) {
	say := func(format string, args ...any) { fmt.Fprintf(progress, format+"\n", args...) }
	pg, err := testenv.StartCluster(ctx, testenv.Options{Settings: map[string]string{"synchronous_commit": "on", "fsync": "on"}})
	if err != nil {
		return nil, err
	}
	defer pg.Close()
	if err := pg.CreateDatabase(ctx, "bench"); err != nil {
		return nil, err
	}
	dsn := pg.DSN("bench")
	s3, err := testenv.StartS3(ctx, testenv.S3Options{Buckets: []string{"rpo"}})
	if err != nil {
		return nil, err
	}
	defer s3.Close()
	gcs, err := testenv.StartGCS(ctx, testenv.GCSOptions{Buckets: []string{"rpo"}})
	if err != nil {
		return nil, err
	}
	defer gcs.Close()

	say("pgbench -i -s %d", o.Scale)
	if out, err := pg.Command(ctx, "pgbench", "-i", "-q", "-s", fmt.Sprint(o.Scale), dsn).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("pgbench -i: %v: %s", err, out)
	}
	if _, err := wayback.Setup(ctx, wayback.SetupOptions{DSN: dsn, Slot: "wayback", Publication: "wayback", FixReplicaIdentity: true}); err != nil {
		return nil, err
	}
	arc, err := wayback.Open(ctx, wayback.ArchiveOptions{Stores: []string{s3.URL("rpo", "bench"), gcs.URL("rpo", "bench")}, Check: true})
	if err != nil {
		return nil, err
	}
	defer arc.Close()
	cfg := wayback.DefaultConfig()
	cfg.Postgres.DSN = dsn
	cfg.FlushInterval = config.Duration(o.Flush)
	agent, err := arc.StartAgent(ctx, wayback.AgentOptions{Config: cfg})
	if err != nil {
		return nil, err
	}
	defer agent.Stop()
	say("waiting for the initial base backup")
	if err := agent.Sync(ctx); err != nil {
		return nil, err
	}
	for {
		cat, err := arc.Catalog(ctx)
		if err == nil && len(cat.Backups) > 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}

	rep := &rpoReport{Opts: o}
	for _, load := range []bool{false, true} {
		name := "idle"
		if load {
			name = fmt.Sprintf("pgbench tpcb-like, %d clients", o.Clients)
		}
		say("phase %q for %s", name, o.Duration)
		ph, err := rpoPhaseRun(ctx, pg, dsn, agent, o, load)
		if err != nil {
			return nil, err
		}
		ph.Name = name
		rep.Phases = append(rep.Phases, ph)
	}
	return rep, nil
}

func rpoPhaseRun(ctx context.Context, pg *testenv.Cluster, dsn string, agent *wayback.Agent, o rpoOptions, load bool) (rpoPhase, error) {
	var ph rpoPhase
	var bench *exec.Cmd
	var benchOut strings.Builder
	if load {
		bench = pg.Command(ctx, "pgbench", "-n", "-T", fmt.Sprint(int(o.Duration.Seconds())), "-c", fmt.Sprint(o.Clients), "-j", fmt.Sprint(min(o.Clients, runtime.NumCPU())), dsn)
		bench.Stdout, bench.Stderr = &benchOut, &benchOut
		if err := bench.Start(); err != nil {
			return ph, fmt.Errorf("start pgbench: %w", err)
		}
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return ph, err
	}
	defer conn.Close(context.Background())

	type probe struct {
		lsn       wal.LSN
		committed time.Time
	}
	var (
		mu      sync.Mutex
		pending []probe
		done    = make(chan struct{})
		watched = make(chan struct{})
	)
	go func() { // the watcher
		defer close(watched)
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			durable := agent.Stats().DurableLSN
			now := time.Now()
			mu.Lock()
			keep := pending[:0]
			for _, p := range pending {
				if durable > p.lsn {
					ph.Samples = append(ph.Samples, now.Sub(p.committed))
				} else {
					keep = append(keep, p)
				}
			}
			pending = keep
			mu.Unlock()
		}
	}()
	end := time.Now().Add(o.Duration)
	for time.Now().Before(end) {
		var lsn string
		if err := conn.QueryRow(ctx, "SELECT pg_logical_emit_message(true, 'wayback.bench', 'probe')::text").Scan(&lsn); err != nil {
			close(done)
			return ph, fmt.Errorf("probe: %w", err)
		}
		committed := time.Now()
		l, _ := wal.ParseLSN(lsn)
		mu.Lock()
		pending = append(pending, probe{l, committed})
		mu.Unlock()
		time.Sleep(o.Probe)
	}
	// Give the last probes time to ship, then stop watching.
	time.Sleep(3 * o.Flush)
	close(done)
	<-watched
	ph.Unshipped = len(pending)
	if bench != nil {
		if err := bench.Wait(); err != nil {
			return ph, fmt.Errorf("pgbench: %v: %s", err, benchOut.String())
		}
		for _, line := range strings.Split(benchOut.String(), "\n") {
			if strings.HasPrefix(line, "tps = ") {
				fmt.Sscanf(line, "tps = %f", &ph.TPS)
			}
		}
	}
	return ph, nil
}

func percentile(s []time.Duration, p float64) time.Duration {
	if len(s) == 0 {
		return 0
	}
	s = slices.Clone(s)
	slices.Sort(s)
	i := int(p/100*float64(len(s))+0.5) - 1
	return s[max(0, min(i, len(s)-1))]
}

func (r *rpoReport) print(w io.Writer) {
	fmt.Fprintf(w, "## RPO: commit to durable in S3 and GCS (min_copies 2), flush_interval %s\n\n", r.Opts.Flush)
	fmt.Fprintln(w, "| phase | write rate | probes | p50 | p99 | max | not shipped |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|")
	ms := func(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d)/1e6) }
	for _, p := range r.Phases {
		rate := "—"
		if p.TPS > 0 {
			rate = fmt.Sprintf("%.0f txn/s", p.TPS)
		}
		fmt.Fprintf(w, "| %s | %s | %d | %s | %s | %s | %d |\n", p.Name, rate, len(p.Samples),
			ms(percentile(p.Samples, 50)), ms(percentile(p.Samples, 99)), ms(slices.Max(append([]time.Duration{0}, p.Samples...))), p.Unshipped)
	}
}
