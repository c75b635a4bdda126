// Command wayback-bench measures wayback on throwaway local clusters and
// in-process object stores, and prints the figures as a Markdown table.
//
//	wayback-bench rpo [-duration 30s] [-scale 10] [-clients 4]
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
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: wayback-bench rpo [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
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
		err = fmt.Errorf("unknown benchmark %q: use rpo", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "wayback-bench: "+err.Error())
		os.Exit(1)
	}
}
