package e2e

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/wayback-pitr/wayback/testenv"
	"github.com/wayback-pitr/wayback/testenv/workload"
)

// seedsFlag chooses the differential test's seeds: "1,2,3" or "1-20".
// WAYBACK_SEEDS does the same for make targets; the default runs three.
var seedsFlag = flag.String("seeds", "", "differential test seeds: list (1,5,9) or range (1-20); default $WAYBACK_SEEDS or 1-3")

func differentialSeeds(t *testing.T) []uint64 {
	spec := *seedsFlag
	if spec == "" {
		spec = os.Getenv("WAYBACK_SEEDS")
	}
	if spec == "" {
		spec = "1-3"
	}
	var seeds []uint64
	for _, part := range strings.Split(spec, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
		a, err := strconv.ParseUint(lo, 10, 64)
		b := a
		if err == nil && isRange {
			b, err = strconv.ParseUint(hi, 10, 64)
		}
		if err != nil || b < a {
			t.Fatalf("seeds %q: use a list (1,5,9) or a range (1-20)", spec)
		}
		for s := a; s <= b; s++ {
			seeds = append(seeds, s)
		}
	}
	return seeds
}

// TestDifferential runs a seeded random workload of DML and DDL against a
// source while the agent ships it, records the source's content at a few
// random instants (as restore points), and checks that restoring each
// instant reproduces exactly that content. A failure names the seed and
// leaves the workload's SQL in a file.
func TestDifferential(t *testing.T) {
	for _, seed := range differentialSeeds(t) {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) { runDifferential(t, seed) })
	}
}

const differentialSteps = 90

func runDifferential(t *testing.T, seed uint64) {
	e := newEnv(t)
	gen := workload.New(seed)
	var script strings.Builder
	fmt.Fprintf(&script, "-- wayback differential workload, seed %d\n", seed)
	run := func(sql string) error {
		script.WriteString(sql)
		script.WriteString("\n")
		return testenv.Exec(t.Context(), e.dsn, sql)
	}
	defer func() {
		if !t.Failed() {
			return
		}
		path := filepath.Join(os.TempDir(), fmt.Sprintf("wayback-differential-seed-%d.sql", seed))
		if err := os.WriteFile(path, []byte(script.String()), 0o644); err != nil {
			t.Logf("write workload: %v", err)
		}
		t.Logf("seed %d failed; its workload SQL is in %s; rerun with: go test ./e2e -run 'TestDifferential/seed=%d$' -seeds %d", seed, path, seed, seed)
	}()

	for _, stmt := range gen.Schema() {
		if err := run(stmt + ";"); err != nil {
			t.Fatalf("schema: %v", err)
		}
	}
	e.mustRun("setup")
	e.startAgent()
	e.waitBackup(1)

	// Restore points at three distinct random steps, the last one at the end.
	marks := map[int]bool{differentialSteps: true}
	for len(marks) < 3 {
		marks[1+int((seed*7919+uint64(len(marks))*104729)%differentialSteps)] = true
	}
	type point struct {
		name string
		sums map[string]testenv.TableSum
	}
	var points []point
	for step := 1; step <= differentialSteps; step++ {
		txn := gen.Next()
		if err := run(txn.SQL()); err != nil {
			t.Fatalf("step %d: the workload itself failed (a generator bug): %v", step, err)
		}
		if !marks[step] {
			continue
		}
		// Nothing else writes, so the content read now is the content at the
		// restore point committed next.
		sums, err := testenv.Checksums(t.Context(), e.dsn)
		if err != nil {
			t.Fatal(err)
		}
		name := fmt.Sprintf("step-%d", step)
		e.mustRun("mark", name)
		script.WriteString("-- restore point " + name + "\n")
		points = append(points, point{name, sums})
	}
	e.waitArchived()
	for i := 1; i < len(points); i++ {
		if testenv.DiffChecksums(points[i-1].sums, points[i].sums) == "" {
			t.Fatalf("seed %d: the source did not change between %s and %s, so restoring them proves little", seed, points[i-1].name, points[i].name)
		}
	}

	for _, p := range points {
		db := "restored_" + strings.ReplaceAll(p.name, "-", "_")
		e.mustRun("restore", "--target-dsn", e.pg.DSN(db), "--to-mark", p.name)
		e.assertRestored(db, p.sums, fmt.Sprintf("seed %d, restore point %s", seed, p.name))
		// Sequences went on past every value handed out: new rows get fresh ids.
		for _, sql := range []string{
			"INSERT INTO items (name) VALUES ('after restore')",
			"INSERT INTO counters (label) VALUES ('after restore')",
		} {
			if err := testenv.Exec(t.Context(), e.pg.DSN(db), sql); err != nil {
				t.Fatalf("seed %d, %s: %s: %v", seed, p.name, sql, err)
			}
		}
	}
}
