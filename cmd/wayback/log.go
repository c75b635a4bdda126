package main

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/wayback-pitr/wayback"
	"github.com/wayback-pitr/wayback/config"
	"github.com/wayback-pitr/wayback/pitr"
)

func logCmd(g *globals) *cobra.Command {
	var (
		since, until string
		o            pitr.LogOptions
		xid          uint64
		verbose      bool
	)
	cmd := &cobra.Command{
		Use:   "log --since T [--until T]",
		Short: "List archived transactions with per-table change counts, to find the harmful one",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if since != "" {
				if o.Since, err = pitr.ParseTime(since); err != nil {
					return fmt.Errorf("--since: %w", err)
				}
			}
			if until != "" {
				if o.Until, err = pitr.ParseTime(until); err != nil {
					return fmt.Errorf("--until: %w", err)
				}
			}
			for _, op := range o.Ops {
				switch op {
				case "insert", "update", "delete", "truncate", "ddl", "mark":
				default:
					return fmt.Errorf("--op %q: use insert, update, delete, truncate, ddl or mark", op)
				}
			}
			o.XID = uint32(xid)
			o.Values = verbose
			o.Rows = o.Rows || verbose
			ctx := cmd.Context()
			e, err := g.open(ctx, config.Need{Stores: true})
			if err != nil {
				return err
			}
			defer e.close()
			arc := e.archive()
			if g.jsonOut {
				enc := json.NewEncoder(os.Stdout)
				return arc.Log(ctx, o, func(e *pitr.LogEntry) error { return enc.Encode(e) })
			}
			var entries []*pitr.LogEntry
			if err := arc.Log(ctx, o, func(e *pitr.LogEntry) error { entries = append(entries, e); return nil }); err != nil {
				return err
			}
			printLog(entries, o.Rows)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&since, "since", "", "first commit time to show (RFC 3339 or 'YYYY-MM-DD HH:MM:SS[±TZ]')")
	f.StringVar(&until, "until", "", "last commit time to show")
	f.StringArrayVar(&o.Tables, "table", nil, "only transactions touching this table (schema.table or table), repeatable")
	f.StringArrayVar(&o.Ops, "op", nil, "only transactions with this kind of change: insert, update, delete, truncate, ddl, mark (repeatable)")
	f.Int64Var(&o.MinRows, "min-rows", 0, "only transactions changing at least this many rows")
	f.Uint64Var(&xid, "xid", 0, "only this transaction")
	f.BoolVar(&o.Rows, "rows", false, "show the affected rows' keys")
	f.BoolVarP(&verbose, "verbose", "v", false, "with the keys, show every column value")
	return cmd
}

// printLog prints a table in which an outlier (a huge DELETE among small
// transactions) stands out: it is flagged when it changes at least 20
// times the median and 100 rows.
func printLog(entries []*pitr.LogEntry, rows bool) {
	if len(entries) == 0 {
		fmt.Println("no matching transactions")
		return
	}
	totals := make([]int64, len(entries))
	for i, e := range entries {
		totals[i] = e.Total()
	}
	sorted := append([]int64(nil), totals...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	median := sorted[len(sorted)/2]
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "XID\tCOMMIT TIME (UTC)\tCOMMIT LSN\tROWS\tCHANGES\t")
	for i, e := range entries {
		flag := ""
		if totals[i] >= 100 && totals[i] >= 20*max(median, 1) {
			flag = "  ◀ outlier"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s%s\t\n", e.XID, e.CommitTime.Format("2006-01-02 15:04:05.000000"), e.CommitLSN, totals[i], describeChanges(e), flag)
		if rows {
			for _, r := range e.Rows {
				fmt.Fprintf(tw, "\t\t\t\t  %s %s %s%s\t\n", r.Op, r.Table, kv(r.Key), valuesSuffix(r))
			}
		}
	}
	tw.Flush()
}

func describeChanges(e *pitr.LogEntry) string {
	var parts []string
	for _, m := range e.Marks {
		parts = append(parts, "mark "+strconv.Quote(m))
	}
	for _, d := range e.DDL {
		parts = append(parts, "DDL "+d)
	}
	tables := make([]string, 0, len(e.Changes))
	for t := range e.Changes {
		tables = append(tables, t)
	}
	sort.Strings(tables)
	for _, t := range tables {
		c := e.Changes[t]
		var ops []string
		if c.Insert > 0 {
			ops = append(ops, fmt.Sprintf("+%d", c.Insert))
		}
		if c.Update > 0 {
			ops = append(ops, fmt.Sprintf("~%d", c.Update))
		}
		if c.Delete > 0 {
			ops = append(ops, fmt.Sprintf("-%d", c.Delete))
		}
		if c.Truncate > 0 {
			ops = append(ops, "TRUNCATE")
		}
		parts = append(parts, t+" "+strings.Join(ops, " "))
	}
	return strings.Join(parts, ", ")
}

func kv(m map[string]*string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		v := "NULL"
		if m[k] != nil {
			v = *m[k]
		}
		parts = append(parts, k+"="+v)
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

func valuesSuffix(r pitr.RowChange) string {
	s := ""
	if r.Old != nil {
		s += " old " + kv(r.Old)
	}
	if r.Values != nil {
		s += " new " + kv(r.Values)
	}
	return s
}

func markCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "mark NAME",
		Short: "Record a named restore point in the change stream (restore --to-mark NAME)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := g.load(config.Need{DSN: true})
			if err != nil {
				return err
			}
			ref, err := wayback.Mark(cmd.Context(), cfg.Postgres.DSN, args[0])
			if err != nil {
				return err
			}
			if g.jsonOut {
				return printJSON(map[string]any{"mark": args[0], "lsn": ref.LSN.String(), "time": ref.Time})
			}
			fmt.Printf("restore point %q recorded at LSN %s (%s)\n", args[0], ref.LSN, ref.Time.Format(time.RFC3339Nano))
			return nil
		},
	}
}

func undoCmd(g *globals) *cobra.Command {
	var xids []uint
	cmd := &cobra.Command{
		Use:   "undo --xid X [--xid Y]...",
		Short: "Print SQL that reverts transactions on the live database (review, then psql -1 -f)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(xids) == 0 {
				return fmt.Errorf("name the transaction to undo with --xid (find it with 'wayback log')")
			}
			ctx := cmd.Context()
			e, err := g.open(ctx, config.Need{Stores: true})
			if err != nil {
				return err
			}
			defer e.close()
			o := wayback.UndoOptions{SourceDSN: e.cfg.Postgres.DSN}
			for _, x := range xids {
				o.XIDs = append(o.XIDs, uint32(x))
			}
			res, err := e.archive().Undo(ctx, o)
			if err != nil {
				return err
			}
			fmt.Print(res.SQL)
			fmt.Fprintf(os.Stderr, "undo script: %d statements; %d later changes touched the same rows (listed in its header)\n", res.Statements, len(res.Later))
			return nil
		},
	}
	cmd.Flags().UintSliceVar(&xids, "xid", nil, "transaction to revert (repeatable)")
	return cmd
}
