package drill

import (
	"strings"
	"testing"
)

func TestReportErrNamesFirstProblem(t *testing.T) {
	ok := &Report{OK: true}
	if ok.Err() != nil {
		t.Fatal("a passed drill has an error")
	}
	r := &Report{Backup: "B1", Tables: []TableCheck{{Table: "public.a", OK: true}, {Table: "public.b", Problem: "loaded 3 rows, the manifest says 4"}},
		Replay: ReplayCheck{Error: "gap in the archive"}}
	msg := r.Err().Error()
	if !strings.HasPrefix(msg, "restore drill of backup B1 failed: table public.b: loaded 3 rows") || !strings.Contains(msg, "(and 1 more problems)") {
		t.Fatalf("message %q", msg)
	}
	r = &Report{Error: "the archive has no complete base backup"}
	if msg := r.Err().Error(); msg != "restore drill failed: the archive has no complete base backup" {
		t.Fatalf("message %q", msg)
	}
}
