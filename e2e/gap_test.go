package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLatestRefusesGap: with a segment missing from every store, restoring
// "the latest state" must fail and say where the hole is, not quietly
// restore up to it and drop everything archived after it; a target before
// the gap still restores.
func TestLatestRefusesGap(t *testing.T) {
	e := newEnv(t)
	e.exec(`CREATE TABLE t (id int PRIMARY KEY, v text)`)
	e.mustRun("setup")
	e.startAgent()
	e.waitBackup(1)
	var segs []string
	for i := 0; i < 3; i++ {
		e.exec(`INSERT INTO t SELECT g, 'round ' || $1::text FROM generate_series($1::int * 100, $1::int * 100 + 99) g`, i)
		e.waitArchived()
		segs, _ = filepath.Glob(filepath.Join(e.storeDir(0), "segments", "*.seg"))
	}
	if len(segs) < 3 {
		t.Fatalf("want at least 3 segments, have %d", len(segs))
	}
	// Remove a segment from the middle of the chain from both stores.
	victim := filepath.Base(segs[len(segs)/2])
	for i := range e.stores {
		if err := os.Remove(filepath.Join(e.storeDir(i), "segments", victim)); err != nil {
			t.Fatal(err)
		}
	}
	r := e.run("restore", "--target-dsn", e.pg.DSN("latest"), "--latest")
	if r.code == 0 || !strings.Contains(r.stderr, "gap from LSN") || !strings.Contains(r.stderr, "latest state cannot be restored") {
		t.Fatalf("restore --latest over a gap should fail naming it:\n%s", r)
	}
	if e.dbExists("latest") {
		t.Fatal("the failed restore left its target database behind")
	}
}
