package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/wayback-pitr/wayback"
	"github.com/wayback-pitr/wayback/config"
	"github.com/wayback-pitr/wayback/pitr"
	"github.com/wayback-pitr/wayback/wal"
)

// targetFlags are the restore target flags restore and export share.
type targetFlags struct {
	toTime, toLSN, toMark string
	toXID                 uint64
	latest, exclusive     bool
}

func (tf *targetFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&tf.toTime, "to-time", "", "restore to this instant: RFC 3339 or 'YYYY-MM-DD HH:MM:SS[±TZ]'")
	f.StringVar(&tf.toLSN, "to-lsn", "", "restore up to and including commits at this LSN (X/Y)")
	f.BoolVar(&tf.latest, "latest", false, "restore everything archived")
	f.Uint64Var(&tf.toXID, "to-xid", 0, "restore up to and including this transaction")
	f.BoolVar(&tf.exclusive, "exclusive", false, "with --to-xid: stop just before the transaction")
	f.StringVar(&tf.toMark, "to-mark", "", "restore to the named restore point ('wayback mark NAME')")
}

// parse checks that exactly one target was given and returns it.
func (tf *targetFlags) parse() (pitr.Target, error) {
	n := 0
	var target pitr.Target
	if tf.toTime != "" {
		n++
		t, err := pitr.ParseTime(tf.toTime)
		if err != nil {
			return target, err
		}
		target = pitr.Target{Kind: pitr.ToTime, Time: t}
	}
	if tf.toLSN != "" {
		n++
		l, err := wal.ParseLSN(tf.toLSN)
		if err != nil {
			return target, err
		}
		target = pitr.Target{Kind: pitr.ToLSN, LSN: l}
	}
	if tf.latest {
		n++
		target = pitr.Target{Kind: pitr.Latest}
	}
	if tf.toXID != 0 {
		n++
		target = pitr.Target{Kind: pitr.ToXID, XID: uint32(tf.toXID), Exclusive: tf.exclusive}
	} else if tf.exclusive {
		return target, fmt.Errorf("--exclusive goes with --to-xid")
	}
	if tf.toMark != "" {
		n++
		target = pitr.Target{Kind: pitr.ToMark, Mark: tf.toMark}
	}
	if n != 1 {
		return target, fmt.Errorf("give exactly one of --to-time, --to-lsn, --to-xid, --to-mark or --latest")
	}
	return target, nil
}

func exportCmd(g *globals) *cobra.Command {
	var (
		tf       targetFlags
		sc       scratchFlags
		out      string
		parallel int
	)
	cmd := &cobra.Command{
		Use:   "export (--to-time T | --to-lsn L | --to-xid X | --to-mark NAME | --latest) --out takeout.zip",
		Short: "Write the database as it was at an instant to a zip: one CSV per table, schema.sql, manifest.json",
		Long: `Export restores the instant into a scratch database (--scratch-dsn, or a
private cluster started from --pg-bin) and writes a zip holding one CSV file
per table (tables/<schema>.<table>.csv, with a header row), schema.sql
(pg_dump --schema-only of the restored database, without owners and
privileges) and manifest.json (source, instant, per-table row counts and
SHA-256 sums). The zip appears at --out only when complete.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			target, err := tf.parse()
			if err != nil {
				return err
			}
			if out == "" {
				return fmt.Errorf("--out is required: the zip file to write (e.g. --out takeout.zip)")
			}
			ctx := cmd.Context()
			e, err := g.open(ctx, config.Need{Stores: true})
			if err != nil {
				return err
			}
			defer e.close()
			say := g.progress(e.log)
			m, err := e.archive().Export(ctx, wayback.ExportOptions{
				Target: target, Out: out, ScratchDSN: sc.dsn(e.cfg), PGBin: sc.pgBin(e.cfg), Parallel: parallel, Progress: say,
			})
			if err != nil {
				return fmt.Errorf("export: %w", err)
			}
			if g.jsonOut {
				return printJSON(m)
			}
			at := m.Target.LSN
			if m.Target.Time != nil {
				at = m.Target.Time.Format("2006-01-02T15:04:05.999999Z07:00") + " (LSN " + m.Target.LSN + ")"
			}
			fmt.Printf("exported %s as of %s: %d tables, %d rows, %s of CSV\n", m.Source.Database, at, len(m.Tables), m.Rows, human(m.Bytes))
			fmt.Printf("wrote %s\n", out)
			return nil
		},
	}
	tf.register(cmd)
	sc.register(cmd)
	cmd.Flags().StringVar(&out, "out", "", "zip file to write (replaced only when the export is complete)")
	cmd.Flags().IntVar(&parallel, "parallel", 2, "tables loaded at once into the scratch database")
	return cmd
}
