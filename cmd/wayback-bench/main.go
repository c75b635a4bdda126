// Command wayback-bench measures wayback on throwaway local clusters and
// in-process object stores, and prints the figures as a Markdown table.
//
//	wayback-bench run -wayback bin/wayback [-size 1GB] [-txns 100000] [-cpuprofile DIR] [-only shipping] [-rounds N]
//	wayback-bench rpo [-duration 30s] [-scale 10] [-clients 4]
//
// run: shipping, base backup, restore, replay and archive size, each next
// to the PostgreSQL tool a user would otherwise pick (pg_recvlogical,
// pg_dump, pg_restore, a native subscription) on the same data in the same
// run.
//
// rpo: commit-to-durable latency (the recovery point objective) of
// transactions while pgbench writes as fast as it can, with the agent
// shipping to an S3 and a GCS server (both must hold a transaction before
// it counts as durable).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: wayback-bench run|rpo [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "run":
		fs := flag.NewFlagSet("run", flag.ExitOnError)
		o := defaultSuite
		size := fs.String("size", "1GB", "approximate source database size (MB or GB)")
		fs.IntVar(&o.Txns, "txns", o.Txns, "pgbench transactions in the backlog")
		fs.IntVar(&o.Clients, "clients", o.Clients, "pgbench clients writing the backlog")
		fs.IntVar(&o.Parallel, "j", o.Parallel, "parallel jobs of pg_dump, pg_restore and wayback")
		fs.StringVar(&o.Wayback, "wayback", "bin/wayback", "the wayback binary")
		fs.StringVar(&o.ProfileDir, "cpuprofile", "", "directory for CPU profiles of the wayback commands")
		fs.BoolVar(&o.Check, "check", true, "compare the restored database and the subscriber with the source")
		fs.StringVar(&o.Only, "only", "", `"shipping": measure shipping alone (no dumps, base backup, restore or replay)`)
		fs.IntVar(&o.Rounds, "rounds", o.Rounds, "shipping measurements, each on its own slots, alternating which tool drains first (the median is reported)")
		fs.IntVar(&o.BaseRounds, "base-rounds", o.BaseRounds, "base backup and load measurements, each tool first in turn (the median is reported)")
		_ = fs.Parse(os.Args[2:])
		if o.Only != "" && o.Only != "shipping" {
			err = fmt.Errorf("-only %q: the only part that runs alone is shipping", o.Only)
		} else if o.SizeMB, err = parseSize(*size); err == nil {
			var rep *suiteReport
			if rep, err = runSuite(ctx, o, os.Stderr); err == nil {
				rep.print(os.Stdout)
			}
		}
	case "rpo":
		fs := flag.NewFlagSet("rpo", flag.ExitOnError)
		o := rpoOptions{}
		fs.DurationVar(&o.Duration, "duration", defaultRPO.Duration, "how long each phase (idle, under load) runs")
		fs.IntVar(&o.Scale, "scale", defaultRPO.Scale, "pgbench scale factor")
		fs.IntVar(&o.Clients, "clients", defaultRPO.Clients, "pgbench clients")
		fs.DurationVar(&o.Probe, "probe", defaultRPO.Probe, "interval between probe transactions")
		fs.DurationVar(&o.Flush, "flush-interval", defaultRPO.Flush, "agent flush_interval")
		_ = fs.Parse(os.Args[2:])
		var rep *rpoReport
		if rep, err = runRPO(ctx, o, os.Stderr); err == nil {
			rep.print(os.Stdout)
		}
	default:
		err = fmt.Errorf("unknown benchmark %q: use run or rpo", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "wayback-bench: "+err.Error())
		os.Exit(1)
	}
}

// parseSize reads "1GB", "300MB" or a plain number of megabytes.
func parseSize(s string) (int, error) {
	u := strings.ToUpper(strings.TrimSpace(s))
	mult := 1
	switch {
	case strings.HasSuffix(u, "GB"):
		mult, u = 1024, strings.TrimSuffix(u, "GB")
	case strings.HasSuffix(u, "MB"):
		u = strings.TrimSuffix(u, "MB")
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(u), 64)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("-size %q: give a size such as 1GB or 200MB", s)
	}
	return max(1, int(v*float64(mult))), nil
}
