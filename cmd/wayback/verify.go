package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/wayback-pitr/wayback/config"
	"github.com/wayback-pitr/wayback/pitr"
)

// verifyShown is how many problems per store the human output lists;
// --json lists them all.
const verifyShown = 5

func verifyCmd(g *globals) *cobra.Command {
	return &cobra.Command{
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

The exit status is 0 only when every store is ok.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			e, err := g.open(ctx, config.Need{Stores: true})
			if err != nil {
				return err
			}
			defer e.close()
			say := progress(e.log)
			if g.jsonOut {
				say = func(string, ...any) {}
			}
			rep, err := e.archive().Verify(ctx, say)
			if err != nil {
				return fmt.Errorf("verify: %w", err)
			}
			if g.jsonOut {
				if err := printJSON(rep); err != nil {
					return err
				}
			} else {
				printVerify(rep)
			}
			return rep.Err()
		},
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
