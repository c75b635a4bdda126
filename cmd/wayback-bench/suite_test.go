package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestSuiteSmoke runs the side-by-side benchmark on a tiny database: every
// figure must be positive, the restored database and the subscriber must
// equal the source, and the table must list every figure. It asserts no
// times; make bench measures them.
func TestSuiteSmoke(t *testing.T) {
	bin := buildWayback(t)
	var log strings.Builder
	o := defaultSuite
	o.SizeMB, o.Txns, o.Wayback, o.ProfileDir = 8, 400, bin, t.TempDir()
	rep, err := runSuite(t.Context(), o, &log)
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	if rep.RestoreMatches != "yes" || rep.SubscriberMatches != "yes" {
		t.Errorf("restored database matches: %s; subscriber matches: %s", rep.RestoreMatches, rep.SubscriberMatches)
	}
	if rep.Txns < o.Txns || rep.ReplayedTxns < rep.Txns {
		t.Errorf("backlog %d transactions, replayed %d; want at least %d", rep.Txns, rep.ReplayedTxns, o.Txns)
	}
	for name, v := range map[string]int64{
		"ship agent": int64(rep.ShipAgent), "ship pg_recvlogical": int64(rep.ShipRecv), "agent RSS": rep.AgentRSS,
		"backup": int64(rep.Backup), "pg_dump": int64(rep.DumpGzip), "pg_dump -Z0": int64(rep.DumpZ0),
		"backup bytes": rep.BackupBytes, "dump bytes": rep.DumpGzipBytes, "load": int64(rep.Load), "pg_restore": int64(rep.PgRestore),
		"replay": int64(rep.Replay), "subscription": int64(rep.SubApply), "segment bytes": rep.SegmentBytes,
		"raw segment bytes": rep.SegmentRawBytes, "WAL bytes": rep.WALBytes,
	} {
		if v <= 0 {
			t.Errorf("%s: %d, want > 0", name, v)
		}
	}
	for name, n := range map[string]int{"backup": len(rep.Backups), "pg_dump": len(rep.DumpGzips), "pg_dump -Z0": len(rep.DumpZ0s),
		"load": len(rep.Loads), "pg_restore": len(rep.PgRestores)} {
		if n != o.BaseRounds {
			t.Errorf("%s measured in %d rounds, want %d", name, n, o.BaseRounds)
		}
	}
	var out strings.Builder
	rep.print(&out)
	for _, want := range []string{"Base rounds, each tool first in turn", "| Shipping: drain", "| Agent peak RSS", "| Base backup: time", "| Base backup: size", "| Restore (base)", "| Replay (changes)", "| Archive: bytes per transaction", "| Archive: lz4"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
	for _, x := range rep.rows() {
		if x.means != "" && !(x.ratio > 0) {
			t.Errorf("%s: ratio %v, want > 0", x.figure, x.ratio)
		}
	}
	for _, p := range []string{"agent", "backup", "load", "restore"} {
		if _, err := exec.Command("go", "tool", "pprof", "-top", bin, filepath.Join(o.ProfileDir, p+".pprof")).Output(); err != nil {
			t.Errorf("CPU profile of %s unreadable: %v", p, err)
		}
	}
}

// TestSuiteShippingOnly runs the shipping part alone in two rounds: each
// round must measure both tools on its own slots, and the table must hold
// the shipping and archive figures and nothing it did not measure.
func TestSuiteShippingOnly(t *testing.T) {
	bin := buildWayback(t)
	var log strings.Builder
	o := defaultSuite
	o.SizeMB, o.Txns, o.Wayback, o.Only, o.Rounds = 8, 400, bin, "shipping", 2
	rep, err := runSuite(t.Context(), o, &log)
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	if len(rep.ShipAgents) != 2 || len(rep.ShipRecvs) != 2 {
		t.Fatalf("rounds measured: agent %d, pg_recvlogical %d; want 2 each", len(rep.ShipAgents), len(rep.ShipRecvs))
	}
	for i := range rep.ShipAgents {
		if rep.ShipAgents[i] <= 0 || rep.ShipRecvs[i] <= 0 {
			t.Errorf("round %d: agent %v, pg_recvlogical %v", i+1, rep.ShipAgents[i], rep.ShipRecvs[i])
		}
	}
	if rep.AgentStartup <= 0 || rep.AgentStartup >= rep.ShipAgent || rep.SegmentBytes <= 0 || rep.Backup != 0 || rep.Replay != 0 {
		t.Errorf("start-up %v of %v, segment bytes %d, backup %v, replay %v", rep.AgentStartup, rep.ShipAgent, rep.SegmentBytes, rep.Backup, rep.Replay)
	}
	if n := len(rep.Backups) + len(rep.DumpGzips) + len(rep.DumpZ0s) + len(rep.Loads) + len(rep.PgRestores); n != 0 {
		t.Errorf("a shipping-only run measured %d base figures", n)
	}
	var out strings.Builder
	rep.print(&out)
	for _, want := range []string{"| Shipping: drain", "| Agent start-up", "| CPU while shipping", "| Archive: bytes per transaction", "Shipping rounds"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
	for _, unwanted := range []string{"| Base backup", "| Restore", "| Replay", "Base rounds"} {
		if strings.Contains(out.String(), unwanted) {
			t.Errorf("shipping-only report has %q:\n%s", unwanted, out.String())
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int{"1GB": 1024, "300MB": 300, "0.5gb": 512, "64": 64} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "x", "-1GB", "0"} {
		if _, err := parseSize(bad); err == nil {
			t.Errorf("parseSize(%q) accepted", bad)
		}
	}
}

// buildWayback builds the wayback binary the suite runs; the suite starts
// two clusters, so -short skips it.
func buildWayback(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("starts two clusters")
	}
	bin := filepath.Join(t.TempDir(), "wayback")
	if out, err := exec.Command("go", "build", "-o", bin, "../wayback").CombinedOutput(); err != nil {
		t.Fatalf("build wayback: %v\n%s", err, out)
	}
	return bin
}
