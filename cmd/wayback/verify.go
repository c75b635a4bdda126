package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/wayback-pitr/wayback"
	"github.com/wayback-pitr/wayback/config"
	"github.com/wayback-pitr/wayback/pitr"
)

// verifyShown is how many problems per store the human output lists;
// --json lists them all.
const verifyShown = 5

func verifyCmd(g *globals) *cobra.Command {
	var deep bool
	var sc scratchFlags
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Read and check every object in every store: checksums, backups, gap-free coverage, what each store lacks",
		Long: `Verify reads every segment and backup object in each store and judges each
store on what it holds itself:

  ok           every object is valid, segments cover the stream without a gap
               from its oldest valid base backup to its newest segment, and it
               lacks nothing another store holds
  incomplete   valid and gap-free, but other stores hold objects it lacks
               (it is lagging or being backfilled)
  broken       a corrupt or unreadable object, a gap after its oldest valid
               backup, a backup with a missing or corrupt file, or segments
               without any base backup
  unreachable  the store could not be listed

With --deep, a restore drill follows: the newest base backup and every
segment after it are restored into a scratch database (--scratch-dsn, or a
private cluster started from --pg-bin), each loaded table is read back and
compared with the row count and row digest the backup's manifest recorded,
and the segments are replayed to the newest archived instant. The scratch
database is thrown away afterwards.

The exit status is 0 only when every store is ok (and, with --deep, the
drill passed).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			e, err := g.open(ctx, config.Need{Stores: true})
			if err != nil {
				return err
			}
			defer e.close()
			say := g.progress(e.log)
			rep, err := e.archive().Verify(ctx, say)
			if err != nil {
				return fmt.Errorf("verify: %w", err)
			}
			if !deep {
				if g.jsonOut {
					if err := printJSON(rep); err != nil {
						return err
					}
				} else {
					printVerify(rep)
				}
				return rep.Err()
			}
			if !g.jsonOut {
				printVerify(rep)
			}
			dr, err := e.archive().Drill(ctx, wayback.DrillOptions{
				ScratchDSN: sc.dsn(e.cfg), PGBin: sc.pgBin(e.cfg), Parallel: e.cfg.BaseBackup.Parallel, Progress: say,
			})
			if err != nil {
				return fmt.Errorf("verify --deep: %w", err)
			}
			if g.jsonOut {
				if err := printJSON(struct {
					*pitr.VerifyReport
					Deep *wayback.DrillReport `json:"deep"`
				}{rep, dr}); err != nil {
					return err
				}
			} else {
				printDrill(dr)
			}
			if err := rep.Err(); err != nil {
				return err
			}
			return dr.Err()
		},
	}
	cmd.Flags().BoolVar(&deep, "deep", false, "also restore the newest backup and its segments into a scratch database and check them")
	sc.register(cmd)
	return cmd
}

// scratchFlags select the scratch database of verify --deep and export.
type scratchFlags struct{ scratchDSN, bin string }

func (s *scratchFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&s.scratchDSN, "scratch-dsn", "", "database to restore into (must not exist, or be empty; thrown away afterwards); default: a private local cluster (verify.scratch_dsn)")
	cmd.Flags().StringVar(&s.bin, "pg-bin", "", "PostgreSQL server programs for the local scratch cluster (default: postgres.bin_dir, $WAYBACK_PG_BIN, /usr/lib/postgresql/15/bin, pg_config --bindir)")
}

func (s *scratchFlags) dsn(c config.Config) string {
	if s.scratchDSN != "" {
		return s.scratchDSN
	}
	return c.Verify.ScratchDSN
}

func (s *scratchFlags) pgBin(c config.Config) string {
	if s.bin != "" {
		return s.bin
	}
	return c.Postgres.BinDir
}

func printDrill(r *wayback.DrillReport) {
	if r.Backup == "" {
		fmt.Printf("restore drill: not run: %s\nverify --deep: drill FAILED\n", r.Error)
		return
	}
	fmt.Printf("restore drill: base backup %s (LSN %s) into %s\n", r.Backup, r.BackupLSN, r.Scratch)
	for _, t := range r.Tables {
		if !t.OK {
			fmt.Printf("  BAD  %s: %s\n", t.Table, t.Problem)
		}
	}
	var noSum int
	for _, t := range r.Tables {
		if t.WantSum == "" {
			noSum++
		}
	}
	fmt.Printf("  %s read back, %d bad", verifyCount(len(r.Tables), "table"), r.Bad)
	if noSum > 0 {
		fmt.Printf(" (%d compared by row count only: the backup predates row digests)", noSum)
	}
	fmt.Println()
	if r.Replay.OK {
		fmt.Printf("  replayed %s, %d transactions", verifyCount(r.Replay.Segments, "segment"), r.Replay.Transactions)
		if r.Replay.ReachedTime != nil {
			fmt.Printf(", up to %s (LSN %s)", r.Replay.ReachedTime.Format(time.RFC3339), r.Replay.ReachedLSN)
		}
		fmt.Println()
	} else {
		fmt.Printf("  replay FAILED: %s\n", r.Replay.Error)
	}
	if r.Error != "" {
		fmt.Printf("  drill FAILED: %s\n", r.Error)
	}
	if r.OK {
		fmt.Printf("verify --deep: drill passed in %s\n", r.Took.Round(time.Millisecond))
	} else {
		fmt.Println("verify --deep: drill FAILED")
	}
}

func printVerify(rep *pitr.VerifyReport) {
	counts := map[pitr.Verdict]int{}
	for i := range rep.Stores {
		s := &rep.Stores[i]
		counts[s.Verdict]++
		fmt.Printf("store %s: %s\n", s.URL, s.Verdict)
		if s.Verdict == pitr.VerdictUnreachable {
			fmt.Printf("  cannot list it: %s\n", s.Error)
			continue
		}
		fmt.Printf("  checked %s, %s: %s, %s (%d valid)\n", verifyCount(s.Objects, "object"), human(s.Bytes),
			verifyCount(s.Segments, "segment"), verifyCount(s.Backups, "base backup"), s.ValidBackups)
		if s.FromLSN != "" {
			at := func(t *time.Time) string {
				if t == nil {
					return ""
				}
				return " (" + t.Format(time.RFC3339) + ")"
			}
			fmt.Printf("  covers LSN %s%s to %s%s", s.FromLSN, at(s.FromTime), s.ToLSN, at(s.ToTime))
			if s.OldestBackup != "" {
				fmt.Printf(", from base backup %s", s.OldestBackup)
			}
			fmt.Println()
		}
		if m := s.Missing; m.Total() > 0 {
			lacks := verifyCount(m.Segments, "segment") + " and " + verifyCount(m.BackupObjects, "backup object")
			if m.Other > 0 {
				lacks += " and archive.json"
			}
			fmt.Printf("  lacks %s other stores hold\n", lacks)
		}
		for i, p := range s.Problems {
			if i == verifyShown {
				fmt.Printf("  … and %s more (--json lists them all)\n", verifyCount(len(s.Problems)-verifyShown, "problem"))
				break
			}
			fmt.Printf("  %-10s %s: %s\n", p.Kind, p.Key, p.Detail)
		}
	}
	if rep.OK {
		fmt.Printf("verify: all %d stores ok\n", len(rep.Stores))
		return
	}
	line := fmt.Sprintf("verify: %d stores:", len(rep.Stores))
	sep := " "
	for _, v := range []pitr.Verdict{pitr.VerdictOK, pitr.VerdictIncomplete, pitr.VerdictBroken, pitr.VerdictUnreachable} {
		if counts[v] > 0 {
			line += fmt.Sprintf("%s%d %s", sep, counts[v], v)
			sep = ", "
		}
	}
	fmt.Println(line)
}

// verifyCount is "1 segment" or "3 segments".
func verifyCount(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
