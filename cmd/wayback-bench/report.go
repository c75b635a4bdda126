package main

import (
	"fmt"
	"io"
	"time"
)

// row is one line of the side-by-side table.
type row struct {
	figure, wayback, reference string
	ratio                      float64 // 0: no ratio
	means, goal                string
}

// rows turns the report into table lines. Ratios of speeds are wayback's
// speed over the reference's (above 1: wayback faster); ratios of sizes are
// wayback's size over the reference's (below 1: wayback smaller).
func (r *suiteReport) rows() []row {
	rate := func(n int, d time.Duration) float64 { return float64(n) / d.Seconds() }
	shipRate, recvRate := rate(r.Txns, r.ShipAgent), rate(r.Txns, r.ShipRecv)
	replayRate, subRate := rate(r.ReplayedTxns, r.Replay), rate(r.Txns, r.SubApply)
	j := r.Opts.Parallel
	rs := []row{
		{fmt.Sprintf("Shipping: drain %d-txn backlog (%d rows/txn)", r.Txns, rowsPerTxn),
			fmt.Sprintf("%s txn/s, %s rows/s (%s)", num(shipRate), num(shipRate*rowsPerTxn), dur(r.ShipAgent)),
			fmt.Sprintf("pg_recvlogical → /dev/null: %s txn/s, %s rows/s (%s)", num(recvRate), num(recvRate*rowsPerTxn), dur(r.ShipRecv)),
			shipRate / recvRate, "speed", "≥ 0.9"},
		{"Agent start-up (process start to streaming; part of the time above)", dur(r.AgentStartup), "—", 0, "", ""},
		{"Agent peak RSS while shipping", mb(r.AgentRSS), "—", 0, "", "≤ 150 MB"},
		{"CPU while shipping (the client process)", fmt.Sprintf("%s (%.0f %% of wall)", dur(r.AgentCPU), 100*r.AgentCPU.Seconds()/r.ShipAgent.Seconds()),
			fmt.Sprintf("pg_recvlogical: %s (%.0f %% of wall)", dur(r.RecvCPU), 100*r.RecvCPU.Seconds()/r.ShipRecv.Seconds()), 0, "", ""},
	}
	archive := []row{
		{"Archive: bytes per transaction", fmt.Sprintf("%.0f B (%d segments, %s)", float64(r.SegmentBytes)/float64(max(1, r.Txns)), r.Segments, mb(r.SegmentBytes)),
			fmt.Sprintf("WAL: %.0f B", float64(r.WALBytes)/float64(max(1, r.Txns))), float64(r.SegmentBytes) / float64(max(1, r.WALBytes)), "size", ""},
		{"Archive: lz4 compression ratio", fmt.Sprintf("%.2f : 1 (raw %s)", float64(r.SegmentRawBytes)/float64(max(1, r.SegmentBytes)), mb(r.SegmentRawBytes)), "—", 0, "", ""},
	}
	if r.Opts.shippingOnly() {
		return append(rs, archive...)
	}
	rs = append(rs, []row{
		{"Base backup: time", fmt.Sprintf("wayback backup, 2 stores: %s", dur(r.Backup)),
			fmt.Sprintf("pg_dump -Fd -j %d: %s", j, dur(r.DumpGzip)), r.DumpGzip.Seconds() / r.Backup.Seconds(), "speed", "> 1"},
		{"Base backup: time", fmt.Sprintf("wayback backup, 2 stores: %s", dur(r.Backup)),
			fmt.Sprintf("pg_dump -Fd -j %d -Z0: %s", j, dur(r.DumpZ0)), r.DumpZ0.Seconds() / r.Backup.Seconds(), "speed", "> 1"},
		{"Base backup: size (one copy)", mb(r.BackupBytes), fmt.Sprintf("pg_dump gzip: %s", mb(r.DumpGzipBytes)),
			float64(r.BackupBytes) / float64(r.DumpGzipBytes), "size", "≤ 1.5"},
		{"Base backup: size (one copy)", mb(r.BackupBytes), fmt.Sprintf("pg_dump -Z0: %s", mb(r.DumpZ0By)),
			float64(r.BackupBytes) / float64(r.DumpZ0By), "size", ""},
		{"Restore (base): load into an empty database", dur(r.Load), fmt.Sprintf("pg_restore -j %d: %s", j, dur(r.PgRestore)),
			r.PgRestore.Seconds() / r.Load.Seconds(), "speed", "> 1"},
		{fmt.Sprintf("Replay (changes): apply the %d-txn backlog", r.Txns),
			fmt.Sprintf("%s txn/s, %s rows/s (%s)", num(replayRate), num(replayRate*rowsPerTxn), dur(r.Replay)),
			fmt.Sprintf("native subscription: %s txn/s, %s rows/s (%s)", num(subRate), num(subRate*rowsPerTxn), dur(r.SubApply)),
			replayRate / subRate, "speed", "≥ 1"},
	}...)
	rs = append(rs, archive...)
	return append(rs, row{"Peak RSS of backup / restore", fmt.Sprintf("%s / %s", mb(r.BackupRSS), mb(r.RestoreRSS)), "—", 0, "", ""})
}

func (r *suiteReport) print(w io.Writer) {
	fmt.Fprintf(w, "## wayback vs PostgreSQL tools, same data, same run\n\n")
	fmt.Fprintf(w, "Source: %s (pgbench -s %d plus %d random documents); backlog: %d pgbench tpcb-like transactions (%s txn/s, %d clients), %s of WAL. %d CPUs, load average at start %s.\n\n",
		mb(r.DBBytes), r.Scale, r.DocRows, r.Txns, num(r.BacklogTPS), r.Opts.Clients, mb(r.WALBytes), r.NCPU, r.LoadAverage)
	fmt.Fprintln(w, "| figure | wayback | PostgreSQL reference | ratio | goal |")
	fmt.Fprintln(w, "|---|---|---|---|---|")
	for _, x := range r.rows() {
		ratio := "—"
		switch x.means {
		case "speed":
			ratio = fmt.Sprintf("%.2f× speed", x.ratio)
		case "size":
			ratio = fmt.Sprintf("%.2f× size", x.ratio)
		}
		goal := x.goal
		if goal == "" {
			goal = "—"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", x.figure, x.wayback, x.reference, ratio, goal)
	}
	if len(r.ShipAgents) > 1 {
		fmt.Fprintf(w, "\nShipping rounds (agent / pg_recvlogical, odd rounds pg_recvlogical first):")
		for i := range r.ShipAgents {
			fmt.Fprintf(w, " %s / %s (%.2f×);", dur(r.ShipAgents[i]), dur(r.ShipRecvs[i]), r.ShipRecvs[i].Seconds()/r.ShipAgents[i].Seconds())
		}
		fmt.Fprintln(w, " the table gives the medians.")
	}
	if len(r.Backups) > 1 {
		fmt.Fprintf(w, "\nBase rounds, each tool first in turn (backup / pg_dump gzip / pg_dump -Z0; load / pg_restore):")
		for i := range r.Backups {
			fmt.Fprintf(w, " %s / %s / %s;", dur(r.Backups[i]), dur(r.DumpGzips[i]), dur(r.DumpZ0s[i]))
		}
		for i := range r.Loads {
			fmt.Fprintf(w, " %s / %s (%.2f×);", dur(r.Loads[i]), dur(r.PgRestores[i]), r.PgRestores[i].Seconds()/r.Loads[i].Seconds())
		}
		fmt.Fprintln(w, " the table gives the medians.")
	}
	if r.RestoreMatches != "" {
		fmt.Fprintf(w, "\nRestored database equals the source (every public table's checksum): %s. Subscriber equals the source: %s.\n", r.RestoreMatches, r.SubscriberMatches)
	}
}

func num(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

func mb(n int64) string {
	if n < 10<<20 {
		return fmt.Sprintf("%.2f MB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%.0f MB", float64(n)/(1<<20))
}

func dur(d time.Duration) string {
	if d < 10*time.Second {
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
	return fmt.Sprintf("%.1f s", d.Seconds())
}
