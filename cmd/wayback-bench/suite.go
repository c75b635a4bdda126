package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/wayback-pitr/wayback"
	"github.com/wayback-pitr/wayback/testenv"
	"github.com/wayback-pitr/wayback/wal"
)

// suiteOptions size one run of the side-by-side benchmark.
type suiteOptions struct {
	SizeMB   int    // approximate size of the source database
	Txns     int    // pgbench transactions in the backlog
	Clients  int    // pgbench clients writing the backlog
	Parallel int    // -j of pg_dump/pg_restore and wayback's parallel load
	Wayback  string // the wayback binary
	// ProfileDir, when set, receives a Go CPU profile of each wayback
	// command (agent.pprof, backup.pprof, restore.pprof).
	ProfileDir string
	// Check compares the restored database and the subscriber with the
	// source, table by table (a wrong restore measures nothing).
	Check bool
	// Only, when "shipping", measures shipping alone: no dumps, base
	// backup, restore or replay.
	Only string
	// Rounds is how many times shipping is measured, each round on its own
	// pair of slots at the same position (same backlog), alternating which
	// tool drains first; the report gives the median of each.
	Rounds int
	// BaseRounds is how many times the base backup (wayback backup, pg_dump
	// gzip and -Z0) and its load (wayback restore, pg_restore) are
	// measured, in turns, each tool first in turn; the report gives the
	// medians. The machine's speed drifts by a quarter within a minute
	// here, so one sample of each, minutes apart, compared the drift.
	BaseRounds int
}

var defaultSuite = suiteOptions{SizeMB: 1024, Txns: 100000, Clients: 4, Parallel: 2, Check: true, Rounds: 1, BaseRounds: 3}

// shippingOnly reports whether the run measures shipping alone.
func (o suiteOptions) shippingOnly() bool { return o.Only == "shipping" }

// suiteReport holds every figure of one run.
type suiteReport struct {
	Opts        suiteOptions
	DBBytes     int64 // pg_database_size of the source before the backlog
	Scale       int   // pgbench scale
	DocRows     int   // rows of the random-content table
	Txns        int   // backlog transactions pgbench committed
	BacklogTPS  float64
	WALBytes    int64 // WAL written by the backlog
	NCPU        int
	LoadAverage string

	// ShipAgent and ShipRecv are the medians of the rounds' times.
	ShipAgent, ShipRecv   time.Duration
	ShipAgents, ShipRecvs []time.Duration // per round
	AgentRSS              int64           // bytes, the largest of the rounds
	AgentCPU              time.Duration   // median of the rounds
	RecvCPU               time.Duration   // pg_recvlogical's, median of the rounds
	AgentStartup          time.Duration   // agent start to streaming, median of the rounds

	// Backup, DumpGzip, DumpZ0, Load and PgRestore are the medians of the
	// base rounds.
	Backup, DumpGzip, DumpZ0             time.Duration
	Backups, DumpGzips, DumpZ0s          []time.Duration // per round
	BackupBytes, DumpGzipBytes, DumpZ0By int64
	BackupRSS                            int64 // the largest of the rounds

	Load, PgRestore   time.Duration
	Loads, PgRestores []time.Duration // per round
	Replay, SubApply  time.Duration
	RestoreRSS        int64
	ReplayedTxns      int
	SegmentBytes      int64 // stored segment bytes in one store
	SegmentRawBytes   int64 // their uncompressed bodies
	Segments          int
	RestoreMatches    string // "" when not checked; else "yes" or the difference
	SubscriberMatches string
}

// rowsPerTxn is what pgbench's tpcb-like script changes per transaction:
// three UPDATEs and one INSERT.
const rowsPerTxn = 4

// runSuite measures wayback and the PostgreSQL tool a user would otherwise
// pick on the same data in the same run: see docs/performance.md for what
// each figure means.
func runSuite(ctx context.Context, o suiteOptions, progress io.Writer) (*suiteReport, error) {
	say := func(format string, args ...any) {
		fmt.Fprintf(progress, "%s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
	}
	work, err := os.MkdirTemp("", "wayback-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	if err := os.Chmod(work, 0o755); err != nil {
		return nil, err
	}
	rep := &suiteReport{Opts: o, NCPU: runtime.NumCPU(), LoadAverage: loadAverage()}

	rounds := max(1, o.Rounds)
	settings := map[string]string{"shared_buffers": "256MB", "max_wal_size": "8GB", "maintenance_work_mem": "256MB", "checkpoint_timeout": "30min",
		"max_replication_slots": strconv.Itoa(max(20, 2*rounds+4))}
	say("starting the source cluster")
	src, err := testenv.StartCluster(ctx, testenv.Options{Settings: settings})
	if err != nil {
		return nil, err
	}
	defer src.Close()
	var tgt *testenv.Cluster // the restore target, unless shipping alone
	if !o.shippingOnly() {
		say("starting the target cluster")
		if tgt, err = testenv.StartCluster(ctx, testenv.Options{Settings: settings}); err != nil {
			return nil, err
		}
		defer tgt.Close()
	}
	if err := src.CreateDatabase(ctx, "bench"); err != nil {
		return nil, err
	}
	dsn := src.DSN("bench")

	// Data: 60 % pgbench tables, 40 % rows of random words, jsonb and
	// numbers (pgbench's blank filler compresses ~35:1 and would flatter
	// every dump).
	rep.Scale = max(1, o.SizeMB*6/10/15)
	rep.DocRows = max(1000, o.SizeMB*4/10*1024*1024/700)
	say("loading data: pgbench -s %d and %d random documents (~%d MB)", rep.Scale, rep.DocRows, o.SizeMB)
	if err := loadData(ctx, src, dsn, rep.Scale, rep.DocRows); err != nil {
		return nil, err
	}
	if err := psql(ctx, dsn, "SELECT pg_database_size(current_database())", &rep.DBBytes); err != nil {
		return nil, err
	}

	// Slots: the agent's, one for pg_recvlogical and one for the native
	// subscription, all at the same position, before the dumps (no writes
	// in between, so each dump is aligned with the slots).
	if _, err := wayback.Setup(ctx, wayback.SetupOptions{DSN: dsn, Slot: "wayback", Publication: "wayback", FixReplicaIdentity: true}); err != nil {
		return nil, err
	}
	slots := "SELECT pg_create_logical_replication_slot('ref_sub', 'pgoutput')"
	for i := range rounds {
		slots += fmt.Sprintf(", pg_create_logical_replication_slot('%s', 'pgoutput')", recvSlot(i))
		if i > 0 {
			slots += fmt.Sprintf(", pg_create_logical_replication_slot('%s', 'pgoutput')", agentSlot(i))
		}
	}
	if err := testenv.Exec(ctx, dsn, slots); err != nil {
		return nil, err
	}
	var startLSN string
	if err := psql(ctx, dsn, "SELECT pg_current_wal_lsn()::text", &startLSN); err != nil {
		return nil, err
	}

	// Each shipping round has its own slot and its own pair of stores;
	// round 0's archive is the one restored.
	roundStores := make([][]string, rounds)
	roundCfg := make([]string, rounds)
	for i := range rounds {
		roundStores[i] = []string{filepath.Join(work, fmt.Sprintf("store-a%d", i)), filepath.Join(work, fmt.Sprintf("store-b%d", i))}
		roundCfg[i] = filepath.Join(work, fmt.Sprintf("wayback%d.yaml", i))
		cfg := fmt.Sprintf("postgres:\n  dsn: %q\n  slot: %s\nstores:\n  - file://%s\n  - file://%s\nmin_copies: 2\nflush_interval: 250ms\nbasebackup:\n  parallel: %d\n",
			dsn, agentSlot(i), roundStores[i][0], roundStores[i][1], o.Parallel)
		if err := os.WriteFile(roundCfg[i], []byte(cfg), 0o600); err != nil {
			return nil, err
		}
	}
	stores, cfgPath := roundStores[0], roundCfg[0]
	wbWith := func(ctx context.Context, cfgPath, profile string, args ...string) *exec.Cmd {
		args = append([]string{args[0], "--config", cfgPath}, args[1:]...)
		if o.ProfileDir != "" {
			args = append(args, "--cpuprofile", filepath.Join(o.ProfileDir, profile+".pprof"))
		}
		return exec.CommandContext(ctx, o.Wayback, args...)
	}
	wb := func(ctx context.Context, profile string, args ...string) *exec.Cmd {
		return wbWith(ctx, cfgPath, profile, args...)
	}
	var ru *syscall.Rusage
	var subDSN string
	if !o.shippingOnly() {
		subDSN = tgt.DSN("sub")
		if err := runBaseRounds(ctx, o, rep, src, tgt, work, stores, wb, say); err != nil {
			return nil, err
		}
		// The agent's DDL capture came along with the dump; the subscriber is a
		// plain copy.
		if err := testenv.Exec(ctx, subDSN, fmt.Sprintf(`CREATE SUBSCRIPTION ref_sub CONNECTION 'host=%s port=%d user=postgres dbname=bench' PUBLICATION wayback
		WITH (create_slot = false, slot_name = 'ref_sub', copy_data = false, enabled = false)`, src.Host, src.Port)); err != nil {
			return nil, err
		}
	}

	// The backlog, then a marker transaction: its logical message's LSN
	// tells when the agent has shipped everything, its row when a replica
	// has applied everything.
	say("backlog: pgbench tpcb-like, %d transactions, %d clients", o.Txns, o.Clients)
	per := max(1, o.Txns/o.Clients)
	out, err := src.Command(ctx, "pgbench", "-n", "-c", strconv.Itoa(o.Clients), "-j", strconv.Itoa(min(o.Clients, 2)), "-t", strconv.Itoa(per), "bench").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("pgbench: %v: %s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if s, ok := strings.CutPrefix(line, "number of transactions actually processed: "); ok {
			rep.Txns, _ = strconv.Atoi(strings.Fields(strings.Split(s, "/")[0])[0])
		}
		if s, ok := strings.CutPrefix(line, "tps = "); ok {
			rep.BacklogTPS, _ = strconv.ParseFloat(strings.Fields(s)[0], 64)
		}
	}
	if rep.Txns == 0 {
		return nil, fmt.Errorf("pgbench output has no transaction count:\n%s", out)
	}
	var markerLSN, endLSN string
	if markerLSN, err = markerTxn(ctx, dsn); err != nil {
		return nil, err
	}
	// The insert position, not pg_current_wal_lsn (the write position,
	// which with synchronous_commit off can still be short of the marker's
	// commit): pg_recvlogical must receive everything the agent ships.
	if err := psql(ctx, dsn, "SELECT pg_current_wal_insert_lsn()::text", &endLSN); err != nil {
		return nil, err
	}
	if err := psql(ctx, dsn, fmt.Sprintf("SELECT pg_wal_lsn_diff('%s', '%s')::bigint", endLSN, startLSN), &rep.WALBytes); err != nil {
		return nil, err
	}
	marker, err := wal.ParseLSN(markerLSN)
	if err != nil {
		return nil, err
	}
	if err := checkpoint(ctx, src, "bench"); err != nil {
		return nil, err
	}

	// Shipping: pg_recvlogical to /dev/null (the decoding limit) and the
	// agent, each from its own slot at the same position. Both are timed
	// from process start to having everything up to the marker: for
	// pg_recvlogical its exit at -E endLSN, for the agent the moment both
	// stores list a segment reaching past the marker.
	var cpus, recvCPUs, startups []time.Duration
	recv := func(i int) error {
		say("shipping round %d: pg_recvlogical draining the backlog to /dev/null", i+1)
		d, ru, err := timed(src.Command(ctx, "pg_recvlogical", "-d", "bench", "-S", recvSlot(i), "--start",
			"-o", "proto_version=1", "-o", "publication_names=wayback", "-E", endLSN, "-f", "/dev/null"))
		if err != nil {
			return err
		}
		rep.ShipRecvs = append(rep.ShipRecvs, d)
		recvCPUs = append(recvCPUs, time.Duration(ru.Utime.Nano()+ru.Stime.Nano()))
		return nil
	}
	agent := func(i int) error {
		say("shipping round %d: wayback agent draining the backlog to two stores", i+1)
		profile := "agent"
		if i > 0 {
			profile = fmt.Sprintf("agent%d", i+1)
		}
		// No initial base backup: in a shipping-only run the archive has
		// none, and taking one would compete with the drain.
		d, up, ru, err := runAgent(ctx, wbWith(ctx, roundCfg[i], profile, "agent", "--log-format", "json", "--no-initial-backup"), roundStores[i], marker)
		if err != nil {
			return err
		}
		rep.ShipAgents = append(rep.ShipAgents, d)
		startups = append(startups, up)
		rep.AgentRSS = max(rep.AgentRSS, ru.Maxrss*1024)
		cpus = append(cpus, time.Duration(ru.Utime.Nano()+ru.Stime.Nano()))
		return nil
	}
	for i := range rounds {
		// Alternate the order: the second drain of a round may find the
		// WAL in the page cache, and the machine's load drifts.
		first, second := recv, agent
		if i%2 == 1 {
			first, second = agent, recv
		}
		if err := first(i); err != nil {
			return nil, err
		}
		if err := second(i); err != nil {
			return nil, err
		}
		say("shipping round %d: agent %s, pg_recvlogical %s (%.2f×)", i+1, dur(rep.ShipAgents[i]), dur(rep.ShipRecvs[i]),
			rep.ShipRecvs[i].Seconds()/rep.ShipAgents[i].Seconds())
	}
	rep.ShipAgent, rep.ShipRecv, rep.AgentCPU, rep.RecvCPU = median(rep.ShipAgents), median(rep.ShipRecvs), median(cpus), median(recvCPUs)
	rep.AgentStartup = median(startups)
	rep.Segments, rep.SegmentBytes, rep.SegmentRawBytes, err = segmentBytes(stores[0])
	if err != nil {
		return nil, err
	}
	if o.shippingOnly() {
		return rep, nil
	}

	// Replay: the native subscription catching up from its slot, and a
	// wayback restore (base load, then the archived backlog).
	say("replay: native subscription catching up")
	began := time.Now()
	if err := testenv.Exec(ctx, subDSN, "ALTER SUBSCRIPTION ref_sub ENABLE"); err != nil {
		return nil, err
	}
	for {
		var n int
		if err := psql(ctx, subDSN, "SELECT count(*) FROM bench_marker", &n); err != nil {
			return nil, err
		}
		if n > 0 {
			break
		}
		if time.Since(began) > 10*time.Minute {
			return nil, fmt.Errorf("the subscription did not catch up in 10 minutes")
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	rep.SubApply = time.Since(began)
	if err := testenv.Exec(ctx, subDSN, "ALTER SUBSCRIPTION ref_sub DISABLE"); err != nil {
		return nil, err
	}

	if err := checkpoint(ctx, tgt, "postgres"); err != nil {
		return nil, err
	}
	say("restore: wayback restore --latest (base load, then replay)")
	res, ru, err := restore(ctx, wb(ctx, "restore", "restore", "--target-dsn", tgt.DSN("wb"), "--latest", "--json", "--parallel", strconv.Itoa(o.Parallel)))
	if err != nil {
		return nil, err
	}
	if res.Replay <= 0 {
		return nil, fmt.Errorf("wayback restore --json reports no replay time")
	}
	rep.RestoreRSS = max(rep.RestoreRSS, ru.Maxrss*1024)
	rep.Replay, rep.ReplayedTxns = res.Replay, res.Sum.Applied

	if o.Check {
		say("checking the restored database and the subscriber against the source")
		want, err := publicChecksums(ctx, dsn)
		if err != nil {
			return nil, err
		}
		for _, c := range []struct {
			dsn string
			out *string
		}{{tgt.DSN("wb"), &rep.RestoreMatches}, {subDSN, &rep.SubscriberMatches}} {
			got, err := publicChecksums(ctx, c.dsn)
			if err != nil {
				return nil, err
			}
			*c.out = "yes"
			if d := testenv.DiffChecksums(want, got); d != "" {
				*c.out = d
			}
		}
	}
	return rep, nil
}

// runBaseRounds measures the base backup and its load, o.BaseRounds
// times, each tool first in turn: wayback backup against pg_dump -Fd with
// gzip and with -Z0, then wayback restore of that backup (the archive has
// no changes yet: the load alone) against pg_restore of the gzip dump,
// each into a new database on a checkpointed target. The first round's
// dumps are kept (their sizes are reported, the gzip one is restored), as
// is its pg_restore'd database "sub", which becomes the native
// subscriber; later rounds' are removed.
func runBaseRounds(ctx context.Context, o suiteOptions, rep *suiteReport, src, tgt *testenv.Cluster, work string, stores []string,
	wb func(ctx context.Context, profile string, args ...string) *exec.Cmd, say func(string, ...any)) error {
	j := strconv.Itoa(o.Parallel)
	gz, z0 := filepath.Join(work, "dump-gzip"), filepath.Join(work, "dump-z0")
	rounds := max(1, o.BaseRounds)
	inTurn := func(round int, steps ...func() error) error {
		for k := range steps {
			if err := steps[(round+k)%len(steps)](); err != nil {
				return err
			}
		}
		return nil
	}
	for i := range rounds {
		dump := func(what, dir string, out *[]time.Duration, args ...string) func() error {
			return func() error {
				if i > 0 {
					dir += fmt.Sprintf(".%d", i)
					defer os.RemoveAll(dir)
				}
				say("base round %d: pg_dump -Fd -j %s %s", i+1, j, what)
				d, _, err := timed(src.Command(ctx, "pg_dump", append(append([]string{"-Fd", "-j", j}, args...), "-f", dir, "bench")...))
				*out = append(*out, d)
				return err
			}
		}
		backup := func() error {
			say("base round %d: wayback backup (to two stores)", i+1)
			before := dirBytes(stores[0], "backups")
			d, ru, err := timed(wb(ctx, "backup", "backup"))
			if err != nil {
				return err
			}
			rep.Backups = append(rep.Backups, d)
			rep.BackupRSS = max(rep.BackupRSS, ru.Maxrss*1024)
			if i == 0 {
				rep.BackupBytes = dirBytes(stores[0], "backups") - before
			}
			return nil
		}
		if err := inTurn(i, dump("(gzip)", gz, &rep.DumpGzips), dump("-Z0", z0, &rep.DumpZ0s, "-Z0"), backup); err != nil {
			return err
		}
	}
	rep.DumpGzipBytes, rep.DumpZ0By = dirBytes(gz, ""), dirBytes(z0, "")

	for i := range rounds {
		pgRestore := func() error {
			db := "sub"
			if i > 0 {
				db = fmt.Sprintf("pg_restore_%d", i)
				defer testenv.Exec(ctx, tgt.DSN("postgres"), "DROP DATABASE "+db)
			}
			if err := tgt.CreateDatabase(ctx, db); err != nil {
				return err
			}
			// Each timed load starts from a checkpointed target, so
			// neither pays for the other's dirty buffers.
			if err := checkpoint(ctx, tgt, "postgres"); err != nil {
				return err
			}
			say("base round %d: pg_restore -j %s", i+1, j)
			d, _, err := timed(tgt.Command(ctx, "pg_restore", "-j", j, "-d", db, gz))
			rep.PgRestores = append(rep.PgRestores, d)
			return err
		}
		load := func() error {
			db := fmt.Sprintf("wayback_load_%d", i)
			defer testenv.Exec(ctx, tgt.DSN("postgres"), "DROP DATABASE IF EXISTS "+db)
			if err := checkpoint(ctx, tgt, "postgres"); err != nil {
				return err
			}
			say("base round %d: wayback restore of the base backup alone", i+1)
			res, ru, err := restore(ctx, wb(ctx, "load", "restore", "--target-dsn", tgt.DSN(db), "--latest", "--json", "--parallel", j))
			if err != nil {
				return err
			}
			rep.Loads = append(rep.Loads, res.Load)
			rep.RestoreRSS = max(rep.RestoreRSS, ru.Maxrss*1024)
			return nil
		}
		if err := inTurn(i, pgRestore, load); err != nil {
			return err
		}
		say("base round %d: load %s, pg_restore %s (%.2f×)", i+1, dur(rep.Loads[i]), dur(rep.PgRestores[i]), rep.PgRestores[i].Seconds()/rep.Loads[i].Seconds())
	}
	rep.Backup, rep.DumpGzip, rep.DumpZ0 = median(rep.Backups), median(rep.DumpGzips), median(rep.DumpZ0s)
	rep.Load, rep.PgRestore = median(rep.Loads), median(rep.PgRestores)
	return nil
}

// restoreResult is what the bench reads of wayback restore --json.
type restoreResult struct {
	Load   time.Duration `json:"load_ns"`
	Replay time.Duration `json:"replay_ns"`
	Sum    struct {
		Applied int
	} `json:"replay"`
}

// restore runs a wayback restore --json command and reads its result.
func restore(ctx context.Context, cmd *exec.Cmd) (*restoreResult, *syscall.Rusage, error) {
	var out strings.Builder
	cmd.Stdout = &out
	_, ru, err := timed(cmd)
	if err != nil {
		return nil, nil, err
	}
	var res restoreResult
	if err := json.Unmarshal([]byte(out.String()), &res); err != nil {
		return nil, nil, fmt.Errorf("read wayback restore --json: %w: %s", err, out.String())
	}
	if res.Load <= 0 {
		return nil, nil, fmt.Errorf("wayback restore --json lacks load_ns: %s", out.String())
	}
	return &res, ru, nil
}

// agentSlot and recvSlot name the slots of shipping round i.
func agentSlot(i int) string {
	if i == 0 {
		return "wayback"
	}
	return fmt.Sprintf("wayback_%d", i+1)
}

func recvSlot(i int) string {
	if i == 0 {
		return "ref_recv"
	}
	return fmt.Sprintf("ref_recv_%d", i+1)
}

// median of ds (the lower middle one for an even count).
func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[(len(s)-1)/2]
}

// markerTxn commits a row and a transactional logical message in one
// transaction and returns the message's LSN.
func markerTxn(ctx context.Context, dsn string) (string, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return "", err
	}
	defer conn.Close(context.Background())
	tx, err := conn.Begin(ctx)
	if err != nil {
		return "", err
	}
	defer tx.Rollback(context.Background())
	var lsn string
	if _, err := tx.Exec(ctx, "INSERT INTO bench_marker VALUES (1)"); err != nil {
		return "", fmt.Errorf("marker row: %w", err)
	}
	if err := tx.QueryRow(ctx, "SELECT pg_logical_emit_message(true, 'wayback.bench', 'end')::text").Scan(&lsn); err != nil {
		return "", fmt.Errorf("marker message: %w", err)
	}
	return lsn, tx.Commit(ctx)
}

// loadData creates pgbench's tables and the random-content table side by
// side (two cores, two loaders), then VACUUM ANALYZE.
func loadData(ctx context.Context, src *testenv.Cluster, dsn string, scale, docs int) error {
	errc := make(chan error, 2)
	go func() {
		out, err := src.Command(ctx, "pgbench", "-i", "-q", "-s", strconv.Itoa(scale), "bench").CombinedOutput()
		if err != nil {
			err = fmt.Errorf("pgbench -i: %v: %s", err, out)
		}
		errc <- err
	}()
	go func() {
		errc <- testenv.Exec(ctx, dsn, fmt.Sprintf(`
CREATE TABLE docs (id bigint PRIMARY KEY, title text NOT NULL, body text, attrs jsonb, amount numeric(14,4), created timestamptz NOT NULL);
CREATE INDEX ON docs (created);
WITH w AS (SELECT string_to_array('the of and to in is was for on that with as by at from his her it be are which this an or had not were but have their one all been has its who they more after first new two also into time other some when only over year other city may most many where during about world made state early people since work between under these later three years later part used most film known while such series album would name history team second than including state music then life being both like season well war through government university american national south north school local public group family several river county game company record population released', ' ') AS a)
INSERT INTO docs
SELECT g,
  (SELECT string_agg(a[1 + floor(random() * cardinality(a))::int + 0 * s], ' ') FROM generate_series(1, 3 + g %% 2) s),
  (SELECT string_agg(a[1 + floor(random() * cardinality(a))::int + 0 * s], ' ') FROM generate_series(1, 50 + g %% 40) s),
  jsonb_build_object('tags', (SELECT jsonb_agg(a[1 + floor(random() * cardinality(a))::int + 0 * s]) FROM generate_series(1, 1 + g %% 4) s),
    'score', round(random()::numeric, 6), 'ref', md5(g::text || random()::text), 'active', random() < 0.5),
  round((random() * 1000000)::numeric, 4),
  now() - random() * interval '3 years'
FROM w, generate_series(1, %d) g`, docs))
	}()
	for range 2 {
		if err := <-errc; err != nil {
			return err
		}
	}
	// The marker table exists before the subscription is created, so the
	// subscription's table list includes it.
	if err := testenv.Exec(ctx, dsn, "CREATE TABLE bench_marker (id int PRIMARY KEY)"); err != nil {
		return err
	}
	return testenv.Exec(ctx, dsn, "VACUUM ANALYZE")
}

// runAgent starts the agent and stops it as soon as the store holds a
// segment reaching past the marker; the time is from start to that moment.
// startup is the part of it before the agent logged that it was streaming.
func runAgent(ctx context.Context, cmd *exec.Cmd, stores []string, marker wal.LSN) (took, startup time.Duration, ru *syscall.Rusage, err error) {
	stderr := &logWatch{needle: `"msg":"streaming"`}
	cmd.Stderr = stderr
	began := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, 0, nil, fmt.Errorf("start agent: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	for took == 0 {
		select {
		case err := <-exited:
			return 0, 0, nil, fmt.Errorf("the agent exited before shipping the backlog: %v\n%s", err, tail(stderr.String(), 20))
		case <-ctx.Done():
			_ = cmd.Process.Kill()
			<-exited
			return 0, 0, nil, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
		if durableIn(stores, marker) {
			took = time.Since(began)
		}
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			return 0, 0, nil, fmt.Errorf("agent: %v\n%s", err, tail(stderr.String(), 20))
		}
	case <-time.After(time.Minute):
		_ = cmd.Process.Kill()
		<-exited
		return 0, 0, nil, fmt.Errorf("the agent did not stop within a minute of SIGTERM")
	}
	if at := stderr.seen(); !at.IsZero() {
		startup = at.Sub(began)
	}
	return took, startup, cmd.ProcessState.SysUsage().(*syscall.Rusage), nil
}

// logWatch keeps a process's log and notes when a line containing needle
// was first written.
type logWatch struct {
	mu     sync.Mutex
	b      strings.Builder
	needle string
	at     time.Time
}

func (w *logWatch) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.at.IsZero() && strings.Contains(string(p), w.needle) {
		w.at = time.Now()
	}
	return w.b.Write(p)
}

func (w *logWatch) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

func (w *logWatch) seen() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.at
}

// durableIn reports whether every store holds a segment reaching past pos
// (segments are written to a temporary name and renamed, so a listed one
// is complete).
func durableIn(stores []string, pos wal.LSN) bool {
	for _, dir := range stores {
		ents, err := os.ReadDir(filepath.Join(dir, "segments"))
		if err != nil {
			return false
		}
		ok := false
		for _, e := range ents {
			if _, to, err := wal.ParseSegmentKey(wal.SegmentPrefix + e.Name()); err == nil && to > pos {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// segmentBytes sums the stored and raw sizes of a file store's segments.
func segmentBytes(dir string) (n int, stored, raw int64, err error) {
	ents, err := os.ReadDir(filepath.Join(dir, "segments"))
	if err != nil {
		return 0, 0, 0, err
	}
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".seg") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, "segments", e.Name()))
		if err != nil {
			return 0, 0, 0, err
		}
		info, err := wal.ReadSegmentInfo(b)
		if err != nil {
			return 0, 0, 0, fmt.Errorf("segment %s: %w", e.Name(), err)
		}
		n++
		stored += int64(len(b))
		raw += int64(info.RawSize)
	}
	return n, stored, raw, nil
}

// timed runs cmd to completion and returns its wall time and resource use.
func timed(cmd *exec.Cmd) (time.Duration, *syscall.Rusage, error) {
	var out strings.Builder
	if cmd.Stdout == nil {
		cmd.Stdout = &out
	}
	cmd.Stderr = &out
	began := time.Now()
	err := cmd.Run()
	took := time.Since(began)
	if err != nil {
		return 0, nil, fmt.Errorf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, tail(out.String(), 20))
	}
	return took, cmd.ProcessState.SysUsage().(*syscall.Rusage), nil
}

// psql runs sql and scans the single value of its last result into dst
// (nil: no result wanted).
func psql(ctx context.Context, dsn, sql string, dst any) error {
	if dst == nil {
		return testenv.Exec(ctx, dsn, sql)
	}
	rows, err := testenv.QueryRows(ctx, dsn, sql)
	if err != nil {
		return err
	}
	if len(rows) != 1 || len(rows[0]) != 1 {
		return fmt.Errorf("%s: want one value, got %v", sql, rows)
	}
	v := rows[0][0]
	switch d := dst.(type) {
	case *string:
		*d = v
	case *int:
		*d, err = strconv.Atoi(v)
	case *int64:
		*d, err = strconv.ParseInt(v, 10, 64)
	default:
		return fmt.Errorf("psql: unsupported destination %T", dst)
	}
	return err
}

func publicChecksums(ctx context.Context, dsn string) (map[string]testenv.TableSum, error) {
	all, err := testenv.Checksums(ctx, dsn)
	if err != nil {
		return nil, err
	}
	for k := range all {
		if !strings.HasPrefix(k, "public.") || k == "public.bench_marker" {
			delete(all, k)
		}
	}
	return all, nil
}

func dirBytes(root, sub string) int64 {
	var n int64
	_ = filepath.WalkDir(filepath.Join(root, sub), func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}

func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// checkpoint writes a cluster's dirty buffers out before a timed step.
func checkpoint(ctx context.Context, c *testenv.Cluster, db string) error {
	if out, err := c.Command(ctx, "psql", "-qX", "-c", "CHECKPOINT", db).CombinedOutput(); err != nil {
		return fmt.Errorf("checkpoint: %v: %s", err, out)
	}
	return nil
}
