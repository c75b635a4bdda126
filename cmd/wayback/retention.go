package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/wayback-pitr/wayback/agent"
	"github.com/wayback-pitr/wayback/config"
	"github.com/wayback-pitr/wayback/pitr"
)

func retentionCmd(g *globals) *cobra.Command {
	var dryRun bool
	var keepWithin string
	cmd := &cobra.Command{
		Use:   "retention [--dry-run]",
		Short: "Expire base backups (and the segments only they needed) that the retention policy no longer keeps",
		Long: `Applies the retention policy (retention.daily/weekly/monthly/yearly,
retention.keep_within) to the archive: the newest backup of each of the last
N days, ISO weeks, months and years is kept, and every backup within
keep_within; the newest backup is always kept. Segments ending before the
oldest kept backup are deleted with the expired backups: every instant after
the oldest kept backup stays restorable. The agent does this after each
scheduled backup; run it by hand with --dry-run to see what would go.

Deletion is crash-safe and idempotent: an interrupted run leaves a restorable
archive that 'wayback verify' accepts, and the next run finishes it.

Retention needs every store: when one does not answer (each is checked for
at most 30s), nothing is deleted anywhere and the command exits with status 1
and one line naming the store; run it again when it answers.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			e, err := g.open(ctx, config.Need{Stores: true, Write: !dryRun})
			var down *storesDownError
			if errors.As(err, &down) {
				// Expiring in some stores only would leave them disagreeing
				// about what the archive holds.
				return fmt.Errorf("retention deletes from every store, and %s, so nothing was deleted: run 'wayback retention' again when every store answers", down.stores())
			}
			if err != nil {
				return err
			}
			defer e.close()
			r := e.cfg.Retention
			flags := cmd.Flags()
			for name, dst := range map[string]*int{"daily": &r.Daily, "weekly": &r.Weekly, "monthly": &r.Monthly, "yearly": &r.Yearly, "last": &r.Last} {
				if flags.Changed(name) {
					*dst, _ = flags.GetInt(name)
				}
			}
			if keepWithin != "" {
				if err := config.ParseDurationInto(keepWithin, &r.KeepWithin); err != nil {
					return fmt.Errorf("--keep-within: %w", err)
				}
			}
			p := agent.PolicyOf(r)
			if p.IsZero() {
				return fmt.Errorf("no retention policy: set retention.daily/weekly/monthly/yearly/last or retention.keep_within in the config (or --daily, --last, --keep-within ...); without one wayback keeps everything")
			}
			now := time.Now()
			plan, prior, cat, err := agent.PlanRetention(ctx, e.stores, p, now, e.log)
			if err != nil {
				return err
			}
			out := struct {
				DryRun bool               `json:"dry_run"`
				Plan   *pitr.ExpiryPlan   `json:"plan"`
				Result *pitr.ExpireResult `json:"result,omitempty"`
			}{DryRun: dryRun, Plan: plan}
			if !dryRun {
				if out.Result, err = pitr.Expire(ctx, cat, plan, prior, pitr.ExpireOptions{Log: e.log, Now: now}); err != nil {
					return err
				}
			}
			if g.jsonOut {
				return printJSON(out)
			}
			printRetention(plan, out.Result, dryRun)
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&dryRun, "dry-run", false, "show what would be kept and deleted, delete nothing")
	f.Int("daily", 0, "override retention.daily")
	f.Int("weekly", 0, "override retention.weekly")
	f.Int("monthly", 0, "override retention.monthly")
	f.Int("yearly", 0, "override retention.yearly")
	f.Int("last", 0, "override retention.last (keep the N newest backups)")
	f.StringVar(&keepWithin, "keep-within", "", "override retention.keep_within (e.g. 30d)")
	return cmd
}

func printRetention(plan *pitr.ExpiryPlan, res *pitr.ExpireResult, dryRun bool) {
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "BACKUP\tCONSISTENT AT\tVERDICT\tWHY")
	for _, d := range plan.Decisions {
		verdict, why := "keep", strings.Join(d.Reasons, ", ")
		if !d.Keep {
			verdict, why = "expire", "no rule keeps it"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", d.ID, d.Time.UTC().Format(time.RFC3339), verdict, why)
	}
	tw.Flush()
	verb := "deleted"
	if dryRun {
		verb = "would delete"
	}
	fmt.Printf("%s %d backups, %d segments before LSN %s, %d leftover backup objects (%s)\n",
		verb, len(plan.Expired()), len(plan.Segments), plan.Floor, len(plan.Orphans), human(plan.Bytes))
	if res != nil {
		fmt.Printf("done: %d backups, %d objects, %d segments deleted from every store\n", res.Backups, res.Objects, res.Segments)
	}
}
