package main

import (
	"strings"
	"testing"
	"time"
)

// TestRPOSmoke runs the RPO benchmark briefly: every probe transaction
// must become durable in both stores and the report must show both
// phases. It asserts no times; make bench-rpo measures them.
func TestRPOSmoke(t *testing.T) {
	var log strings.Builder
	rep, err := runRPO(t.Context(), rpoOptions{Duration: 2 * time.Second, Scale: 1, Clients: 2, Probe: 100 * time.Millisecond, Flush: 200 * time.Millisecond}, &log)
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	if len(rep.Phases) != 2 {
		t.Fatalf("got %d phases, want idle and under load", len(rep.Phases))
	}
	for _, p := range rep.Phases {
		if len(p.Samples) == 0 || p.Unshipped != 0 {
			t.Errorf("phase %s: %d probes durable, %d never shipped", p.Name, len(p.Samples), p.Unshipped)
		}
		for _, s := range p.Samples {
			if s <= 0 {
				t.Errorf("phase %s: non-positive latency %s", p.Name, s)
			}
		}
	}
	if rep.Phases[1].TPS <= 0 {
		t.Errorf("pgbench rate not read from its output")
	}
	var out strings.Builder
	rep.print(&out)
	if !strings.Contains(out.String(), "| idle |") || !strings.Contains(out.String(), "| pgbench tpcb-like") {
		t.Errorf("report lacks a phase row:\n%s", out.String())
	}
}
