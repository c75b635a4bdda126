package examples_test

import (
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wayback-pitr/wayback"
	"github.com/wayback-pitr/wayback/testenv"
)

// TestRestoreDrill is the drill an on-call team rehearses: someone deletes
// every order, work goes on, and the orders come back without losing the
// work that followed. It uses only the public API and testenv.
func TestRestoreDrill(t *testing.T) {
	ctx := t.Context()
	pg := testenv.NewCluster(t, testenv.Options{})
	if err := pg.CreateDatabase(ctx, "shop"); err != nil {
		t.Fatal(err)
	}
	dsn := pg.DSN("shop")
	exec := func(sql string) {
		t.Helper()
		if err := testenv.Exec(ctx, dsn, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	exec(`CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL);
	      CREATE TABLE orders (id serial PRIMARY KEY, customer int REFERENCES customers, total numeric(10,2), note text);
	      INSERT INTO customers SELECT g, 'customer ' || g FROM generate_series(1, 20) g;
	      INSERT INTO orders (customer, total, note) SELECT 1 + g % 20, g * 1.25, 'first day' FROM generate_series(1, 300) g;`)

	// Set up the source and start the agent on two stores.
	if _, err := wayback.Setup(ctx, wayback.SetupOptions{DSN: dsn, Slot: "wayback", Publication: "wayback"}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	arc, err := wayback.Open(ctx, wayback.ArchiveOptions{
		Stores: []string{"file://" + filepath.Join(dir, "a"), "file://" + filepath.Join(dir, "b")},
		Check:  true,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer arc.Close()
	cfg := wayback.DefaultConfig()
	cfg.Postgres.DSN = dsn
	agent, err := arc.StartAgent(ctx, wayback.AgentOptions{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := agent.Stop(); err != nil {
			t.Errorf("agent: %v", err)
		}
	}()
	waitForBackup(t, arc)

	// A day's work, then the accident, then more work.
	exec(`INSERT INTO orders (customer, total, note) SELECT 1 + g % 20, g * 2.5, 'second day' FROM generate_series(1, 200) g;
	      UPDATE orders SET note = 'paid' WHERE id % 7 = 0;`)
	before := rows(t, dsn, "SELECT id, customer, total, note FROM orders ORDER BY id")
	if err := agent.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	accidentAt := time.Now()
	exec(`DELETE FROM orders`)
	exec(`INSERT INTO customers VALUES (21, 'late customer');
	      INSERT INTO orders (customer, total, note) VALUES (21, 99.99, 'after the accident');`)
	if err := agent.Sync(ctx); err != nil {
		t.Fatal(err)
	}

	// Find the harmful transaction: the one DELETE that removed hundreds of rows.
	var harmful []*wayback.LogEntry
	err = arc.Log(ctx, wayback.LogOptions{Since: accidentAt.Add(-time.Minute), Ops: []string{"delete"}, MinRows: 100},
		func(e *wayback.LogEntry) error { harmful = append(harmful, e); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if len(harmful) != 1 || harmful[0].Changes["public.orders"] == nil || harmful[0].Changes["public.orders"].Delete != int64(len(before)) {
		t.Fatalf("expected exactly one transaction deleting %d orders, got %+v", len(before), harmful)
	}
	xid := harmful[0].XID

	// Restore everything but it into a new database.
	res, err := arc.Restore(ctx, wayback.RestoreOptions{
		TargetDSN: pg.DSN("shop_restored"), Target: wayback.Latest(), Skip: []uint32{xid},
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Replay.Skipped != 1 {
		t.Fatalf("restore skipped %d transactions, want 1", res.Replay.Skipped)
	}

	// The restored orders are the ones before the accident plus the one
	// written after it; customers match the source exactly.
	after := rows(t, dsn, "SELECT id, customer, total, note FROM orders ORDER BY id")
	want := append(slices.Clone(before), after...)
	got := rows(t, pg.DSN("shop_restored"), "SELECT id, customer, total, note FROM orders ORDER BY id")
	if !slices.Equal(got, want) {
		t.Fatalf("restored orders differ: got %d rows, want %d (first got %q, first want %q)", len(got), len(want), first(got), first(want))
	}
	src, err := testenv.Checksums(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	dst, err := testenv.Checksums(ctx, pg.DSN("shop_restored"))
	if err != nil {
		t.Fatal(err)
	}
	if src["public.customers"] != dst["public.customers"] {
		t.Fatalf("customers differ: source %v, restored %v", src["public.customers"], dst["public.customers"])
	}
	// The sequence went on past every id used: a new order gets a fresh id.
	if err := testenv.Exec(ctx, pg.DSN("shop_restored"), "INSERT INTO orders (customer, total) VALUES (1, 1)"); err != nil {
		t.Fatalf("insert into restored orders: %v", err)
	}

	// Undo in place is the other way back: the script re-inserts the rows.
	undo, err := arc.Undo(ctx, wayback.UndoOptions{XIDs: []uint32{xid}, SourceDSN: dsn})
	if err != nil {
		t.Fatal(err)
	}
	exec(undo.SQL)
	if got := rows(t, dsn, "SELECT id, customer, total, note FROM orders ORDER BY id"); !slices.Equal(got, want) {
		t.Fatalf("after undo the source has %d orders, want %d", len(got), len(want))
	}

	// Errors a program can branch on.
	_, err = arc.Restore(ctx, wayback.RestoreOptions{TargetDSN: pg.DSN("shop_restored"), Target: wayback.Latest()})
	var notEmpty *wayback.TargetNotEmptyError
	if !errors.As(err, &notEmpty) {
		t.Fatalf("restore into a non-empty database: got %v, want a TargetNotEmptyError", err)
	}
	_, err = arc.Restore(ctx, wayback.RestoreOptions{TargetDSN: pg.DSN("too_early"), Target: wayback.AtTime(accidentAt.Add(-24 * time.Hour))})
	if !errors.Is(err, wayback.ErrBeforeOldestBackup) {
		t.Fatalf("restore before the oldest backup: got %v, want ErrBeforeOldestBackup", err)
	}
}

// waitForBackup waits for the base backup the agent takes on first start.
func waitForBackup(t *testing.T, arc *wayback.Archive) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		cat, err := arc.Catalog(t.Context())
		if err == nil && len(cat.Backups) > 0 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("the agent took no base backup within 60s")
}

func rows(t *testing.T, dsn, sql string) []string {
	t.Helper()
	rs, err := testenv.QueryRows(t.Context(), dsn, sql)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = strings.Join(r, "|")
	}
	return out
}

func first(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}
