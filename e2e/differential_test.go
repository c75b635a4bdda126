package e2e

import (
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/wayback-pitr/wayback/testenv"
	"github.com/wayback-pitr/wayback/testenv/workload"
)

// seedsFlag and seedFlag choose the differential test's seeds.
// WAYBACK_SEEDS does the same for make targets; the default runs three.
var (
	seedsFlag = flag.String("seeds", "", "differential test seeds: list (1,5,9), range (1-20) or a count (20 = seeds 1-20); default $WAYBACK_SEEDS or 3")
	seedFlag  = flag.Uint64("seed", 0, "run the differential test for this one seed only")
)

// differentialSeeds parses the seed choice: -seed N wins, then -seeds, then
// $WAYBACK_SEEDS. A list or range names seeds; a single number is a count
// of seeds starting at 1 (write "7-7" or use -seed 7 for seed 7 alone).
func differentialSeeds(t *testing.T) []uint64 {
	if *seedFlag != 0 {
		return []uint64{*seedFlag}
	}
	spec := *seedsFlag
	if spec == "" {
		spec = os.Getenv("WAYBACK_SEEDS")
	}
	if spec == "" {
		spec = "3"
	}
	if n, err := strconv.ParseUint(strings.TrimSpace(spec), 10, 64); err == nil {
		if n == 0 {
			t.Fatalf("seeds %q: a count must be at least 1", spec)
		}
		spec = fmt.Sprintf("1-%d", n)
	}
	var seeds []uint64
	for _, part := range strings.Split(spec, ",") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
		a, err := strconv.ParseUint(lo, 10, 64)
		b := a
		if err == nil && isRange {
			b, err = strconv.ParseUint(hi, 10, 64)
		}
		if err != nil || b < a {
			t.Fatalf("seeds %q: use a list (1,5,9), a range (1-20) or a count (20)", spec)
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
	fmt.Fprintf(&script, "-- rerun: go test ./e2e -run TestDifferential -seed %d\n", seed)
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
		t.Logf("seed %d failed; its workload SQL is in %s; rerun with: go test ./e2e -run TestDifferential -seed %d", seed, path, seed)
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
		rows map[string][]string // each table's rows as text, for a row-by-row diff
		seqs map[string]int64    // next value of each sequence (fidelity_test.go's nextValues)
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
		points = append(points, point{name, sums, tableRows(t, e.dsn, slices.Sorted(maps.Keys(sums))), nextValues(t, e.dsn)})
		e.mustRun("mark", name)
		script.WriteString("-- restore point " + name + "\n")
	}
	e.waitArchived()
	for i := 1; i < len(points); i++ {
		if testenv.DiffChecksums(points[i-1].sums, points[i].sums) == "" {
			t.Fatalf("seed %d: the source did not change between %s and %s, so restoring them proves little", seed, points[i-1].name, points[i].name)
		}
	}

	for _, p := range points {
		db := "restored_" + strings.ReplaceAll(p.name, "-", "_")
		cmd := []string{"restore", "--target-dsn", e.pg.DSN(db), "--to-mark", p.name}
		what := fmt.Sprintf("seed %d, restore point %s (wayback %s --config %s)", seed, p.name, strings.Join(cmd, " "), e.config)
		e.mustRun(cmd...)
		got, err := testenv.Checksums(t.Context(), e.pg.DSN(db))
		if err != nil {
			t.Fatal(err)
		}
		if d := testenv.DiffChecksums(p.sums, got); d != "" {
			t.Fatalf("%s: restored database %s differs from the source:\n%s\n%s", what, db, d, rowDiff(t, e.pg.DSN(db), p.sums, got, p.rows))
		}

		// Sequences: each is at or past what the source would have handed
		// out next at the instant (the documented bound), and a row inserted
		// into every table with a serial or identity column gets a fresh id.
		restored := nextValues(t, e.pg.DSN(db))
		for seq, want := range p.seqs {
			if got, ok := restored[seq]; !ok || got < want {
				t.Errorf("%s: sequence %s would hand out %d next, the source would have handed out %d (present: %v)", what, seq, got, want, ok)
			}
		}
		for _, ins := range serialInserts(t, e.pg.DSN(db)) {
			if err := testenv.Exec(t.Context(), e.pg.DSN(db), ins); err != nil {
				t.Errorf("%s: after restore, %s: %v", what, ins, err)
			}
		}
		if t.Failed() {
			return
		}
	}
}

// rowDiff lists, for each table whose checksum differs, the rows only the
// source had and the rows only the restore has (as multisets).
func rowDiff(t *testing.T, dsn string, want, got map[string]testenv.TableSum, wantRows map[string][]string) string {
	t.Helper()
	var differing []string
	for name, w := range want {
		if g, ok := got[name]; ok && g != w {
			differing = append(differing, name)
		}
	}
	slices.Sort(differing)
	var b strings.Builder
	for _, name := range differing {
		gotRows := tableRows(t, dsn, []string{name})
		count := map[string]int{}
		for _, r := range wantRows[name] {
			count[r]++
		}
		for _, r := range gotRows[name] {
			count[r]--
		}
		keys := slices.Sorted(maps.Keys(count))
		fmt.Fprintf(&b, "rows of %s:\n", name)
		shown := 0
		for _, r := range keys {
			for c := count[r]; c != 0 && shown < 40; shown++ {
				if c > 0 {
					fmt.Fprintf(&b, "  only in source:  %s\n", r)
					c--
				} else {
					fmt.Fprintf(&b, "  only in restore: %s\n", r)
					c++
				}
			}
		}
	}
	return b.String()
}

// serialInserts builds one INSERT per table that has a serial or identity
// column, filling only the NOT NULL columns without a default (with '1',
// which every type the workload uses for them accepts) so that the key
// comes from the sequence.
func serialInserts(t *testing.T, dsn string) []string {
	t.Helper()
	rows, err := testenv.QueryRows(t.Context(), dsn, `
		SELECT format('%I.%I', n.nspname, c.relname),
		       coalesce(string_agg(format('%I', a.attname), ', ' ORDER BY a.attnum) FILTER (WHERE a.attnotnull AND NOT a.atthasdef AND a.attidentity = '' AND a.attgenerated = ''), '')
		FROM pg_class c
		JOIN pg_namespace n ON n.oid = c.relnamespace
		JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
		WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'wayback')
		GROUP BY 1
		HAVING bool_or(a.attidentity <> '' OR pg_get_serial_sequence(format('%I.%I', n.nspname, c.relname), a.attname) IS NOT NULL)
		ORDER BY 1`)
	if err != nil {
		t.Fatalf("find serial tables: %v", err)
	}
	var out []string
	for _, r := range rows {
		if r[1] == "" {
			out = append(out, fmt.Sprintf("INSERT INTO %s DEFAULT VALUES", r[0]))
			continue
		}
		cols := strings.Split(r[1], ", ")
		vals := make([]string, len(cols))
		for i := range vals {
			vals[i] = "'1'"
		}
		out = append(out, fmt.Sprintf("INSERT INTO %s (%s) VALUES (%s)", r[0], r[1], strings.Join(vals, ", ")))
	}
	if len(out) < 2 {
		t.Fatalf("only %d tables with serial or identity columns: %v", len(out), out)
	}
	return out
}
