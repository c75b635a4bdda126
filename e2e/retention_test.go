package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wayback-pitr/wayback/agent"
	"github.com/wayback-pitr/wayback/pitr"
	"github.com/wayback-pitr/wayback/store"
)

// TestRetention: four base backups with work between them; retention
// keeping the last two deletes the two oldest and the segments only they
// needed, while the running agent's backfill must not copy anything back;
// every instant after the oldest kept backup still restores exactly, and
// an expiry interrupted after any number of deletions leaves an archive
// that verify accepts and that restores exactly (issue 6, acceptance 1
// and 2; the GFS arithmetic itself is pitr.TestRetain*).
func TestRetention(t *testing.T) {
	e := newEnv(t)
	e.exec(`CREATE TABLE ledger (id serial PRIMARY KEY, entry text, amount numeric)`)
	e.mustRun("setup")
	e.startAgent("--repair-interval", "200ms")
	e.waitBackup(1)
	var points []checkpoint
	for round := 1; round <= 4; round++ {
		e.exec(fmt.Sprintf(`INSERT INTO ledger (entry, amount) SELECT 'round %d #' || g, g * %d FROM generate_series(1, 200) g;
			UPDATE ledger SET amount = amount + 1 WHERE id %% 5 = %d; DELETE FROM ledger WHERE id %% 17 = %d`, round, round, round%5, round))
		e.waitArchived()
		points = append(points, e.checkpoint(fmt.Sprintf("after round %d", round)))
		if round < 4 {
			e.mustRun("backup")
		}
	}
	e.waitArchived()
	// Backups now: B1 (agent's first), B2, B3, B4; points[i] lies after B(i+1).

	countObjects := func(dir string) (segs, backups int) {
		s, _ := filepath.Glob(filepath.Join(dir, "segments", "*"))
		b, _ := filepath.Glob(filepath.Join(dir, "backups", "*", "manifest.json"))
		return len(s), len(b)
	}
	segsBefore, _ := countObjects(e.storeDir(0))

	// Dry run: says what would go, deletes nothing.
	out := e.mustRun("retention", "--last", "2", "--dry-run")
	if strings.Count(out, " expire ") != 2 || strings.Count(out, " keep ") != 2 {
		t.Fatalf("dry run should expire 2 and keep 2 backups:\n%s", out)
	}
	if s, b := countObjects(e.storeDir(0)); s != segsBefore || b != 4 {
		t.Fatalf("dry run deleted something: %d segments (was %d), %d backups", s, segsBefore, b)
	}

	// Interrupted expiry, on copies of the archive, after k deletions: how
	// many deletions a whole expiry makes is counted on a first copy, and k
	// spreads over that range.
	copyArchive := func() []string {
		dirs := []string{filepath.Join(t.TempDir(), "a"), filepath.Join(t.TempDir(), "b")}
		for i, d := range dirs {
			if err := os.CopyFS(d, os.DirFS(e.storeDir(i))); err != nil {
				t.Fatal(err)
			}
		}
		return dirs
	}
	budget := &atomic.Int64{}
	budget.Store(1 << 40)
	dirs := copyArchive()
	if _, err := agent.ApplyRetention(t.Context(), []store.Store{&crashAfter{store.NewFile(dirs[0]), budget}, &crashAfter{store.NewFile(dirs[1]), budget}},
		pitr.Policy{Last: 2}, time.Now(), nil); err != nil {
		t.Fatal(err)
	}
	n := int(1<<40 - budget.Load())
	if n < 6 {
		t.Fatalf("a whole expiry made only %d deletions", n)
	}
	t.Logf("a whole expiry makes %d deletions", n)
	for _, k := range []int{1, 2, n / 4, n / 2, 3 * n / 4, n - 1} {
		dirs := copyArchive()
		left := &atomic.Int64{}
		left.Store(int64(k))
		stores := []store.Store{&crashAfter{store.NewFile(dirs[0]), left}, &crashAfter{store.NewFile(dirs[1]), left}}
		_, err := agent.ApplyRetention(t.Context(), stores, pitr.Policy{Last: 2}, time.Now(), nil)
		if !errors.Is(err, errCrash) {
			t.Fatalf("k=%d: expiry should have been interrupted, got %v", k, err)
		}
		flags := []string{"--store", "file://" + dirs[0], "--store", "file://" + dirs[1]}
		if r := e.run(append([]string{"verify"}, flags...)...); r.code != 0 {
			t.Fatalf("k=%d: verify rejects an archive whose expiry was interrupted:\n%s", k, r)
		}
		db := fmt.Sprintf("crashed_%d", k)
		e.mustRun(append([]string{"restore", "--target-dsn", e.pg.DSN(db), "--to-time", points[2].at.Format(time.RFC3339Nano)}, flags...)...)
		e.assertRestored(db, points[2].sums, fmt.Sprintf("after an expiry interrupted at deletion %d", k))
		// The next run finishes the job.
		if _, err := agent.ApplyRetention(t.Context(), []store.Store{store.NewFile(dirs[0]), store.NewFile(dirs[1])}, pitr.Policy{Last: 2}, time.Now(), nil); err != nil {
			t.Fatalf("k=%d: finishing the expiry: %v", k, err)
		}
		if _, b := countObjects(dirs[0]); b != 2 {
			t.Fatalf("k=%d: %d backups left after finishing, want 2", k, b)
		}
	}

	// The real thing, with the agent running beside it.
	out = e.mustRun("retention", "--last", "2")
	if !strings.Contains(out, "done: 2 backups") {
		t.Fatalf("retention output:\n%s", out)
	}
	time.Sleep(1500 * time.Millisecond) // several repair passes of the agent
	for i := range e.stores {
		segs, backups := countObjects(e.storeDir(i))
		if backups != 2 || segs >= segsBefore {
			t.Fatalf("store %d after retention: %d backups (want 2), %d segments (had %d): expired objects are back or were never deleted", i, backups, segs, segsBefore)
		}
	}
	if r := e.run("verify"); r.code != 0 {
		t.Fatalf("verify after retention:\n%s", r)
	}
	// Every instant after the oldest kept backup (B3) restores exactly ...
	for _, p := range points[2:] {
		db := "kept_" + strings.ReplaceAll(strings.TrimPrefix(p.name, "after "), " ", "_")
		e.mustRun("restore", "--target-dsn", e.pg.DSN(db), "--to-time", p.at.Format(time.RFC3339Nano))
		e.assertRestored(db, p.sums, p.name)
	}
	// ... and one before it is refused, clearly.
	r := e.run("restore", "--target-dsn", e.pg.DSN("too_old"), "--to-time", points[0].at.Format(time.RFC3339Nano))
	if r.code == 0 || !strings.Contains(r.stderr, "before the oldest base backup") {
		t.Fatalf("restore before the oldest kept backup should fail clearly:\n%s", r)
	}
	// A second run has nothing left to do.
	if out := e.mustRun("retention", "--last", "2"); !strings.Contains(out, "deleted 0 backups, 0 segments") {
		t.Fatalf("second retention run:\n%s", out)
	}
}

var errCrash = errors.New("simulated crash")

// crashAfter is a store whose deletions stop working after a shared
// budget runs out, as if the process died there: every later step fails.
type crashAfter struct {
	store.Store
	left *atomic.Int64
}

func (c *crashAfter) Delete(ctx context.Context, key string) error {
	if c.left.Add(-1) < 0 {
		return errCrash
	}
	return c.Store.Delete(ctx, key)
}
