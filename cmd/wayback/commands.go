package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/wayback-pitr/wayback"
	"github.com/wayback-pitr/wayback/basebackup"
	"github.com/wayback-pitr/wayback/config"
	"github.com/wayback-pitr/wayback/pitr"
	"github.com/wayback-pitr/wayback/replay"
	"github.com/wayback-pitr/wayback/store"
	"github.com/wayback-pitr/wayback/wal"
)

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func setupCmd(g *globals) *cobra.Command {
	var fix bool
	cmd := &cobra.Command{
		Use:   "setup",
		Short: "Create the publication, replication slot and wayback schema on the source",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := g.load(config.Need{DSN: true})
			if err != nil {
				return err
			}
			rep, err := wayback.Setup(cmd.Context(), wayback.SetupOptions{
				DSN: cfg.Postgres.DSN, Slot: cfg.Postgres.Slot, Publication: cfg.Postgres.Publication, FixReplicaIdentity: fix,
			})
			if err != nil {
				return err
			}
			if g.jsonOut {
				return printJSON(rep)
			}
			say := func(done bool, what string) {
				if done {
					fmt.Println("created " + what)
				} else {
					fmt.Println("exists  " + what)
				}
			}
			say(rep.CreatedPublication, "publication "+cfg.Postgres.Publication+" (FOR ALL TABLES)")
			say(rep.CreatedSlot, "replication slot "+cfg.Postgres.Slot+" (pgoutput) "+rep.SlotLSN)
			for _, t := range rep.FixedTables {
				fmt.Println("set REPLICA IDENTITY FULL on " + t)
			}
			fmt.Println("ready: start 'wayback agent'")
			return nil
		},
	}
	cmd.Flags().BoolVar(&fix, "replica-identity-full", false, "set REPLICA IDENTITY FULL on tables with no primary key (otherwise setup refuses, because publishing them breaks UPDATE/DELETE on the primary)")
	return cmd
}

func agentCmd(g *globals) *cobra.Command {
	var noBackup bool
	var repairEvery time.Duration
	var metricsListen string
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Stream changes to the stores until SIGTERM",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			cfg, log, arc, err := g.openWriter(ctx)
			if err != nil {
				return err
			}
			defer log.Sync()
			defer arc.Close()
			if metricsListen != "" {
				cfg.Metrics.Listen = metricsListen
			}
			ag, err := arc.StartAgent(ctx, wayback.AgentOptions{Config: cfg, NoInitialBackup: noBackup, RepairInterval: repairEvery})
			if err != nil {
				return err
			}
			return ag.Wait()
		},
	}
	cmd.Flags().BoolVar(&noBackup, "no-initial-backup", false, "do not take a base backup on start when the archive has none")
	cmd.Flags().DurationVar(&repairEvery, "repair-interval", 10*time.Second, "how often stores that missed objects are checked and backfilled")
	cmd.Flags().StringVar(&metricsListen, "metrics-listen", "", "host:port serving /metrics, /healthz, /readyz (metrics.listen)")
	return cmd
}

func backupCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "backup",
		Short: "Take a base backup now",
		Long: `Takes a base backup of the source into the configured stores, consistent
with a point of the change stream.

Every store is checked first, all at once and each for at most 30s. When at
least min_copies of them answer, the backup goes to those: every one of them
takes the whole backup, and the command succeeds. Each store that did not
answer is named in a warning on stderr; it lacks the backup until it answers
and a running agent backfills it (manifest last), and 'wayback verify' and
'wayback list' report it as lacking the backup meanwhile. With --json,
"stores" lists the stores holding the backup and "missing_from" those
lacking it.

With fewer than min_copies stores answering (by default min_copies is every
store), nothing is written: the command exits with status 1 and one line
naming each store that did not answer. Run it again when they answer, or
lower min_copies.

A store that answered but fails while the backup is written (each object
gets three tries of at most 30s) is dropped the same way: it takes nothing
more, is named in a warning and in "missing_from", and the backup goes on
in the others as long as min_copies are left. When fewer are left, the
command stops at once with status 1 and one line naming the failed stores,
and no store gets the manifest: the objects already stored are not a
backup, and retention deletes them after a day.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			cfg, log, arc, err := g.openWriter(ctx)
			if err != nil {
				return err
			}
			defer log.Sync()
			defer arc.Close()
			say := progress(log)
			m, err := arc.Backup(ctx, wayback.BackupOptions{
				DSN: cfg.Postgres.DSN, BinDir: cfg.Postgres.BinDir, Parallel: cfg.BaseBackup.Parallel, CopyFormat: cfg.BaseBackup.CopyFormat,
				Progress: func(done, total int, table string) { say("backed up %d/%d tables (%s)", done, total, table) },
			})
			if err != nil {
				return err
			}
			out := struct {
				*basebackup.Manifest
				Stores      []string `json:"stores"`                 // holding the backup
				MissingFrom []string `json:"missing_from,omitempty"` // did not answer, or failed during it: backfilled later
			}{Manifest: m}
			for i, err := range arc.Unreachable() {
				if err != nil {
					out.MissingFrom = append(out.MissingFrom, arc.Stores()[i].URL())
				} else {
					out.Stores = append(out.Stores, arc.Stores()[i].URL())
				}
			}
			if g.jsonOut {
				return printJSON(out)
			}
			fmt.Printf("base backup %s: %d tables, %d rows, %s stored, consistent at LSN %s (%s), took %s\n",
				m.ID, len(m.Tables), m.Rows(), human(m.Size()), m.ConsistentLSN, m.ConsistentTime.Format(time.RFC3339), m.FinishedAt.Sub(m.StartedAt).Round(time.Millisecond))
			if len(out.MissingFrom) > 0 {
				fmt.Printf("stored in %d of %d stores; not yet in %s (did not answer, or failed during the backup: a running agent backfills it)\n",
					len(out.Stores), len(cfg.Stores), strings.Join(out.MissingFrom, ", "))
			}
			return nil
		},
	}
}

// storeSummary is one store's part of `wayback list`.
type storeSummary struct {
	URL         string     `json:"url"`
	Error       string     `json:"error,omitempty"`
	Backups     []string   `json:"backups"`
	Segments    int        `json:"segments"`
	Bytes       int64      `json:"bytes"`
	FromLSN     string     `json:"from_lsn,omitempty"`
	ToLSN       string     `json:"to_lsn,omitempty"`
	FirstCommit *time.Time `json:"first_commit,omitempty"`
	LastCommit  *time.Time `json:"last_commit,omitempty"`
	Gaps        []string   `json:"gaps,omitempty"`
	Missing     []string   `json:"missing,omitempty"` // objects other stores have and this one lacks
}

type backupSummary struct {
	ID             string    `json:"id"`
	ConsistentLSN  string    `json:"consistent_lsn"`
	ConsistentTime time.Time `json:"consistent_time"`
	Tables         int       `json:"tables"`
	Rows           int64     `json:"rows"`
	Bytes          int64     `json:"bytes"`
	Stores         []string  `json:"stores"`
}

func listCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "Show base backups and the archived LSN and time range per store",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			e, err := g.open(ctx, config.Need{Stores: true})
			if err != nil {
				return err
			}
			defer e.close()
			stores := e.stores
			cat, err := e.archive().Catalog(ctx)
			if err != nil {
				return err
			}
			var out struct {
				Backups []backupSummary `json:"backups"`
				Stores  []storeSummary  `json:"stores"`
			}
			for _, b := range cat.Backups {
				bs := backupSummary{ID: b.ID, ConsistentLSN: b.ConsistentLSN, ConsistentTime: b.ConsistentTime, Tables: len(b.Tables), Rows: b.Rows(), Bytes: b.Size()}
				for _, i := range b.Stores {
					bs.Stores = append(bs.Stores, stores[i].URL())
				}
				out.Backups = append(out.Backups, bs)
			}
			for i := range stores {
				out.Stores = append(out.Stores, summarizeStore(ctx, cat, i))
			}
			if g.jsonOut {
				return printJSON(out)
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "BACKUP\tCONSISTENT AT\tLSN\tTABLES\tROWS\tSIZE\tSTORES")
			for _, b := range out.Backups {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%d\n", b.ID, b.ConsistentTime.Format(time.RFC3339), b.ConsistentLSN, b.Tables, b.Rows, human(b.Bytes), len(b.Stores))
			}
			tw.Flush()
			fmt.Println()
			for _, s := range out.Stores {
				fmt.Printf("store %s\n", s.URL)
				if s.Error != "" {
					fmt.Printf("  unreachable: %s\n", s.Error)
					continue
				}
				fmt.Printf("  %d backups, %d segments, %s\n", len(s.Backups), s.Segments, human(s.Bytes))
				if s.FromLSN != "" {
					fmt.Printf("  stream archived from LSN %s to %s", s.FromLSN, s.ToLSN)
					if s.FirstCommit != nil {
						fmt.Printf(", commits %s … %s", s.FirstCommit.Format(time.RFC3339), s.LastCommit.Format(time.RFC3339))
					}
					fmt.Println()
				}
				for _, gap := range s.Gaps {
					fmt.Printf("  GAP: %s\n", gap)
				}
				if len(s.Missing) > 0 {
					fmt.Printf("  lacks %d objects other stores hold (first: %s)\n", len(s.Missing), s.Missing[0])
				}
			}
			return nil
		},
	}
}

// summarizeStore describes store i: its coverage, gaps, commit-time range
// and what it lacks compared with the other stores.
func summarizeStore(ctx context.Context, cat *pitr.Catalog, i int) storeSummary {
	s := storeSummary{URL: cat.Stores[i].URL()}
	l := cat.Listings[i]
	if l.Err != nil {
		s.Error = oneLine(l.Err)
		return s
	}
	s.Bytes = l.Bytes
	for _, b := range cat.Backups {
		if has(b.Stores, i) {
			s.Backups = append(s.Backups, b.ID)
		} else {
			s.Missing = append(s.Missing, b.Key())
		}
	}
	var mine []*pitr.Segment
	for _, seg := range cat.Segments {
		if has(seg.Stores, i) {
			mine = append(mine, seg)
		} else {
			s.Missing = append(s.Missing, seg.Key)
		}
	}
	s.Segments = len(mine)
	if len(mine) == 0 {
		return s
	}
	sub := &pitr.Catalog{Segments: mine}
	pos := mine[0].From
	s.FromLSN = pos.String()
	var first, last *pitr.Segment
	for {
		chain, end := sub.Chain(pos)
		if first == nil && len(chain) > 0 {
			first = chain[0]
		}
		if len(chain) > 0 {
			last = chain[len(chain)-1]
		}
		next := sub.NextAfter(end)
		if next == nil {
			s.ToLSN = end.String()
			break
		}
		s.Gaps = append(s.Gaps, fmt.Sprintf("nothing archived from LSN %s to %s", end, next.From))
		pos = next.From
	}
	read := func(seg *pitr.Segment) *wal.SegmentInfo {
		b, err := store.ReadAll(ctx, cat.Stores[i], seg.Key)
		if err != nil {
			return nil
		}
		info, err := wal.ReadSegmentInfo(b)
		if err != nil {
			return nil
		}
		return &info
	}
	if fi, li := read(first), read(last); fi != nil && li != nil {
		ft, lt := fi.FirstCommit, li.ToTime
		if ft.IsZero() {
			ft = fi.ToTime
		}
		s.FirstCommit, s.LastCommit = &ft, &lt
	}
	return s
}

func has(list []int, i int) bool {
	for _, v := range list {
		if v == i {
			return true
		}
	}
	return false
}

func restoreCmd(g *globals) *cobra.Command {
	var (
		targetDSN  string
		tf         targetFlags
		dryRun     bool
		skip       []string
		parallel   int
		onConflict string
	)
	cmd := &cobra.Command{
		Use:   "restore --target-dsn DSN (--to-time T | --to-lsn L | --to-xid X | --to-mark NAME | --latest)",
		Short: "Restore the database as it was at a point in time into an empty database",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			target, err := tf.parse()
			if err != nil {
				return err
			}
			if targetDSN == "" && !dryRun {
				return fmt.Errorf("--target-dsn is required: the database to restore into (created if missing, must be empty)")
			}
			var skipXIDs []uint32
			for _, s := range skip {
				x, err := strconv.ParseUint(strings.TrimSpace(s), 10, 32)
				if err != nil {
					return fmt.Errorf("--skip-xid %q is not a transaction id", s)
				}
				skipXIDs = append(skipXIDs, uint32(x))
			}
			policy, err := replay.ParseConflictPolicy(onConflict)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			e, err := g.open(ctx, config.Need{Stores: true})
			if err != nil {
				return err
			}
			defer e.close()
			say := g.progress(e.log)
			res, err := e.archive().Restore(ctx, wayback.RestoreOptions{
				TargetDSN: targetDSN, Target: target, Skip: skipXIDs, OnConflict: policy, DryRun: dryRun,
				Parallel: parallel, Progress: say,
			})
			if err != nil {
				return err
			}
			if g.jsonOut {
				return printJSON(res)
			}
			printRestore(res, target)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&targetDSN, "target-dsn", "", "database to restore into (created if missing; must be empty)")
	tf.register(cmd)
	f.BoolVar(&dryRun, "dry-run", false, "plan and verify every object, write nothing")
	f.StringArrayVar(&skip, "skip-xid", nil, "leave out this transaction (repeatable)")
	f.IntVar(&parallel, "parallel", 2, "tables loaded at once")
	f.StringVar(&onConflict, "on-conflict", "stop", "with --skip-xid, when a later change does not fit: stop, skip or overwrite")
	return cmd
}

func printRestore(res *replay.RestoreResult, target pitr.Target) {
	m := res.Backup
	if res.DryRun {
		fmt.Printf("dry run: would load base backup %s (consistent at %s, LSN %s; %d tables, %d rows) and replay %d verified segments to %s\n",
			m.ID, m.ConsistentTime.Format(time.RFC3339), m.ConsistentLSN, len(m.Tables), m.Rows(), res.Segments, target)
		return
	}
	fmt.Printf("restored base backup %s (consistent at %s, LSN %s): %d tables, %d rows\n",
		m.ID, m.ConsistentTime.Format(time.RFC3339), m.ConsistentLSN, len(m.Tables), m.Rows())
	s := res.Replay
	fmt.Printf("replayed %d transactions (%d changes) from %d segments", s.Applied, s.Changes, res.Segments)
	if s.Skipped > 0 {
		fmt.Printf(", skipped %d on request", s.Skipped)
	}
	fmt.Println()
	for _, d := range res.Dependencies {
		fmt.Printf("depends on a skipped transaction: %s\n", d)
	}
	for _, c := range s.Conflicts {
		fmt.Printf("conflict: xid %d %s of %s %s: %s -> %s\n", c.XID, c.Op, c.Table, c.Key, c.Reason, c.Resolution)
	}
	if s.Applied > 0 {
		fmt.Printf("last applied: xid %d committed %s (LSN %s)\n", s.LastXID, s.LastCommit.Format(time.RFC3339Nano), s.LastLSN)
	}
	if s.StoppedBefore != nil {
		fmt.Printf("target %s reached: stopped before xid %d committed %s\n", target, s.StoppedBefore.XID, s.StoppedBefore.CommitTime.Format(time.RFC3339Nano))
	} else {
		fmt.Printf("target %s reached: end of archive\n", target)
	}
	fmt.Printf("took %s\n", res.Took.Round(time.Millisecond))
}

func human(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
