package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap/zaptest"

	"github.com/wayback-pitr/wayback/basebackup"
	"github.com/wayback-pitr/wayback/store"
	"github.com/wayback-pitr/wayback/testenv"
	"github.com/wayback-pitr/wayback/wal"
)

const schema = `
CREATE TYPE order_status AS ENUM ('new', 'paid', 'shipped', 'cancelled');
CREATE TABLE customers (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  name text NOT NULL,
  email text,
  joined timestamptz NOT NULL DEFAULT now(),
  balance numeric(14,4),
  flags int[],
  doc jsonb
);
CREATE TABLE orders (
  id bigserial PRIMARY KEY,
  customer_id uuid REFERENCES customers(id) ON DELETE CASCADE,
  status order_status NOT NULL DEFAULT 'new',
  total numeric,
  placed timestamptz DEFAULT now(),
  lines jsonb,
  note text,
  attachment bytea
);
-- Out-of-line, uncompressed: an UPDATE that leaves note alone sends it as
-- "unchanged TOAST", which replay must not overwrite.
ALTER TABLE orders ALTER COLUMN note SET STORAGE EXTERNAL;
CREATE TABLE ledger (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  order_id bigint,
  amount numeric(20,6),
  at timestamptz,
  memo text
);
CREATE TABLE kv (k text PRIMARY KEY, v int, vals float8[]);
`

// bigNote is ~4 KB of incompressible text: stored out of line.
const bigNote = `(SELECT string_agg(md5(random()::text || i::text), '') FROM generate_series(1, 130) i)`

func (e *env) insertCustomers(n int) {
	e.exec(fmt.Sprintf(`INSERT INTO customers (name, email, balance, flags, doc)
		SELECT 'cust ' || g, 'c' || g || '@example.com', round((random() * 10000)::numeric, 4), ARRAY[g, g %% 7, NULL],
		       jsonb_build_object('tier', g %% 3, 'tags', jsonb_build_array('a', g), 'nested', jsonb_build_object('x', g * 1.5))
		FROM generate_series(1, %d) g`, n))
}

func (e *env) insertOrders(n int) {
	e.exec(fmt.Sprintf(`INSERT INTO orders (customer_id, total, lines, note, attachment)
		SELECT (SELECT id FROM customers ORDER BY md5(id::text || g) LIMIT 1), round((random() * 500)::numeric, 2),
		       jsonb_build_array(jsonb_build_object('sku', 'S' || g, 'qty', g %% 5)),
		       CASE WHEN g %% 4 = 0 THEN %s ELSE 'short note ' || g END,
		       decode(md5(g::text), 'hex')
		FROM generate_series(1, %d) g`, bigNote, n))
}

// TestRestoreToEachCheckpoint is the core acceptance test: a workload of
// inserts, updates (some leaving a TOASTed column unchanged, some changing
// a primary key), deletes, a rolled-back savepoint, a 60k-row transaction
// and a TRUNCATE, with checkpoints between phases; restoring to each
// checkpoint's time must reproduce the source table by table. A second base
// backup in the middle makes later checkpoints restore from it.
func TestRestoreToEachCheckpoint(t *testing.T) {
	e := newEnv(t)
	e.exec(schema)
	e.insertCustomers(50)
	e.insertOrders(100)
	e.mustRun("setup")
	e.startAgent()
	e.waitBackup(1)

	var cps []checkpoint
	// Phase 1: inserts.
	e.insertCustomers(150)
	e.insertOrders(900)
	e.exec(`INSERT INTO ledger (order_id, amount, at, memo) SELECT g, g * 0.000001 + 1e9, now() - g * interval '1 minute', NULL FROM generate_series(1, 500) g`)
	e.exec(`INSERT INTO kv SELECT 'key-' || g, g, ARRAY[g::float8 / 3, 'Infinity', '-0'] FROM generate_series(1, 300) g`)
	cps = append(cps, e.checkpoint("inserts"))

	// Phase 2: updates, including ones that leave the TOASTed note alone,
	// primary-key changes and NULLing values.
	e.exec(`UPDATE orders SET status = 'paid', total = total + 1 WHERE id % 3 = 0`)
	e.exec(`UPDATE orders SET note = note || ' (amended)' WHERE id % 8 = 0`)
	e.exec(`UPDATE customers SET balance = balance * 2, doc = doc || '{"vip": true}', email = NULL WHERE name LIKE '%7'`)
	e.exec(`UPDATE kv SET k = k || '-renamed', v = -v WHERE v % 5 = 0`)
	e.exec(`UPDATE ledger SET memo = 'reconciled ' || id WHERE id % 2 = 0`)
	cps = append(cps, e.checkpoint("updates"))

	// A second base backup: checkpoints after it restore from it.
	e.mustRun("backup")

	// Phase 3: deletes (with cascades) and a savepoint that is rolled back.
	e.exec(`DELETE FROM orders WHERE id % 7 = 0`)
	e.exec(`DELETE FROM customers WHERE name LIKE '%3'`)
	e.exec(`BEGIN;
		INSERT INTO kv VALUES ('sp-kept-1', 1, NULL);
		SAVEPOINT s;
		UPDATE orders SET total = 0;
		DELETE FROM ledger;
		INSERT INTO kv VALUES ('sp-rolled-back', 2, NULL);
		ROLLBACK TO s;
		INSERT INTO kv VALUES ('sp-kept-2', 3, '{}');
		COMMIT`)
	cps = append(cps, e.checkpoint("deletes+savepoint"))

	// Phase 4: one large transaction.
	e.exec(`BEGIN;
		INSERT INTO ledger (order_id, amount, at, memo) SELECT g % 1000, g / 7.0, now(), 'bulk ' || g FROM generate_series(1, 60000) g;
		UPDATE ledger SET amount = amount + 1 WHERE id % 6 = 0;
		DELETE FROM ledger WHERE id % 11 = 0;
		COMMIT`)
	cps = append(cps, e.checkpoint("large transaction"))

	// Phase 5: many small transactions and a TRUNCATE.
	for i := 0; i < 40; i++ {
		e.exec(`INSERT INTO orders (customer_id, total, note) SELECT id, $1::numeric, 'late' FROM customers ORDER BY id LIMIT 1`, i)
		e.exec(`UPDATE customers SET balance = balance + 1 WHERE id = (SELECT id FROM customers ORDER BY id OFFSET $1 LIMIT 1)`, i)
	}
	e.exec(`TRUNCATE kv`)
	e.exec(`INSERT INTO kv VALUES ('after-truncate', 1, ARRAY[1.5])`)
	cps = append(cps, e.checkpoint("small txns+truncate"))

	e.waitArchived()
	for i, cp := range cps {
		db := fmt.Sprintf("restored_%d", i)
		out := e.mustRun("restore", "--target-dsn", e.pg.DSN(db), "--to-time", cp.at.Format(time.RFC3339Nano))
		t.Logf("restore to %q (%s):\n%s", cp.name, cp.at.Format(time.RFC3339Nano), out)
		e.assertRestored(db, cp.sums, "checkpoint "+cp.name)
	}
	// The same instant given in the other accepted time syntax.
	cp := cps[1]
	e.mustRun("restore", "--target-dsn", e.pg.DSN("restored_sql_time"), "--to-time", cp.at.Format("2006-01-02 15:04:05.999999-07"))
	e.assertRestored("restored_sql_time", cp.sums, "checkpoint "+cp.name+" (SQL time syntax)")
	// --latest equals the final state.
	e.mustRun("restore", "--target-dsn", e.pg.DSN("restored_latest"), "--latest")
	final, err := testenv.Checksums(t.Context(), e.dsn)
	if err != nil {
		t.Fatal(err)
	}
	e.assertRestored("restored_latest", final, "latest")

	// The TOASTed notes survived updates that did not touch them.
	var long string
	rows, err := testenv.QueryRows(t.Context(), e.pg.DSN("restored_latest"), "SELECT count(*) FROM orders WHERE length(note) > 4000")
	if err != nil {
		t.Fatal(err)
	}
	long = rows[0][0]
	if long == "0" {
		t.Fatal("no long notes in the restored orders: the TOAST case was not exercised")
	}
}

// TestBackupDuringWrites proves the consistent-point boundary: rows written
// after the backup's snapshot is exported but before the tables are copied
// must come from replay, exactly once; and a writer running throughout the
// backup must not disturb exactness.
func TestBackupDuringWrites(t *testing.T) {
	e := newEnv(t)
	e.exec(schema)
	e.insertCustomers(200)
	e.insertOrders(3000)
	e.mustRun("setup")
	e.startAgent("--no-initial-backup")

	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	var writes int
	wg.Add(1)
	go func() {
		defer wg.Done()
		conn, err := pgx.Connect(ctx, e.dsn)
		if err != nil {
			return
		}
		defer conn.Close(context.Background())
		for i := 0; ctx.Err() == nil; i++ {
			_, err := conn.Exec(ctx, `WITH u AS (UPDATE orders SET total = total + 1 WHERE id = (SELECT id FROM orders ORDER BY random() LIMIT 1) RETURNING id)
				INSERT INTO ledger (order_id, amount, at, memo) SELECT id, 1, now(), 'concurrent' FROM u`)
			if err == nil {
				writes++
			}
		}
	}()

	var stores []store.Store
	for _, u := range e.stores {
		s, err := store.Open(t.Context(), u, nil)
		if err != nil {
			t.Fatal(err)
		}
		stores = append(stores, s)
	}
	fan := store.NewFanout(stores, 2, zaptest.NewLogger(t))
	defer fan.Close()
	var boundary string
	m, err := basebackup.Take(t.Context(), fan, basebackup.Options{
		DSN: e.dsn, Parallel: 2, Log: zaptest.NewLogger(t),
		AfterSnapshot: func(ctx context.Context, c wal.LSN) {
			// Committed after C, before any table is read: invisible to the
			// snapshot, so these rows must arrive through replay.
			if err := testenv.Exec(ctx, e.dsn, `INSERT INTO kv VALUES ('after-snapshot', 1, NULL); UPDATE customers SET name = name || ' (after snapshot)'; DELETE FROM orders WHERE id % 10 = 1`); err != nil {
				t.Errorf("write after snapshot: %v", err)
			}
			boundary = c.String()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if boundary == "" {
		t.Fatal("AfterSnapshot did not run")
	}
	for _, tb := range m.Tables {
		if tb.Name == "kv" && tb.Rows != 0 {
			t.Fatalf("kv has %d rows in the backup: the snapshot saw a write committed after C", tb.Rows)
		}
	}
	time.Sleep(300 * time.Millisecond)
	cancel()
	wg.Wait()
	if writes == 0 {
		t.Fatal("the concurrent writer made no writes")
	}
	want := e.checkpoint("after backup")
	e.waitArchived()
	e.mustRun("restore", "--target-dsn", e.pg.DSN("restored"), "--latest")
	e.assertRestored("restored", want.sums, "backup during writes")
	t.Logf("consistent point %s, %d concurrent writes", boundary, writes)
}

// TestKillAgentDuringLargeTransaction kills the agent with SIGKILL while it
// is receiving a large transaction, twice, and restarts it: the archive
// must still restore exactly, with nothing lost and nothing applied twice.
func TestKillAgentDuringLargeTransaction(t *testing.T) {
	e := newEnv(t)
	e.exec(schema)
	e.insertCustomers(20)
	e.mustRun("setup")
	a := e.startAgent()
	e.waitBackup(1)
	for round, delay := range []time.Duration{150 * time.Millisecond, 600 * time.Millisecond} {
		e.exec(`INSERT INTO ledger (order_id, amount, at, memo) SELECT g, g, now(), repeat('x', 50) || g FROM generate_series(1, 150000) g`)
		e.exec(`UPDATE customers SET balance = coalesce(balance, 0) + 1`)
		time.Sleep(delay)
		a.kill9(t)
		e.exec(`INSERT INTO kv VALUES ($1, $2, NULL)`, fmt.Sprintf("while-down-%d", round), round)
		a = e.startAgent()
	}
	e.exec(`DELETE FROM ledger WHERE id % 3 = 0`)
	want := e.checkpoint("after kills")
	e.waitArchived()
	a.stop(t)
	e.mustRun("restore", "--target-dsn", e.pg.DSN("restored"), "--latest")
	e.assertRestored("restored", want.sums, "after two SIGKILLs")
}

// TestBadInput checks that each mistake gives one line naming the problem,
// a non-zero exit, and no half-written target.
func TestBadInput(t *testing.T) {
	e := newEnv(t)
	e.exec(schema)
	e.insertCustomers(10)
	e.mustRun("setup")
	a := e.startAgent()
	e.waitBackup(1)
	e.exec(`UPDATE customers SET balance = 1`)
	e.waitArchived()
	a.stop(t)

	expectFail := func(name, wantSubstr string, r result) {
		t.Helper()
		if r.code == 0 {
			t.Fatalf("%s: succeeded, want failure:\n%s", name, r)
		}
		lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
		last := lines[len(lines)-1]
		if !strings.HasPrefix(last, "wayback: ") || !strings.Contains(last, wantSubstr) {
			t.Fatalf("%s: last stderr line %q, want a 'wayback: ' line containing %q\n%s", name, last, wantSubstr, r)
		}
	}

	expectFail("unreachable DSN", "connect", e.run("setup", "--dsn", "postgres://postgres@127.0.0.1:1/app?sslmode=disable&connect_timeout=3"))

	noDSN := filepath.Join(t.TempDir(), "no-dsn.yaml")
	os.WriteFile(noDSN, []byte("stores: ["+e.stores[0]+"]\n"), 0o600)
	expectFail("missing config key", "postgres.dsn is not set", e.run("agent", "--config", noDSN))

	typo := filepath.Join(t.TempDir(), "typo.yaml")
	os.WriteFile(typo, []byte("postgres:\n  dns: x\n"), 0o600)
	expectFail("misspelt config key", "dns", e.run("agent", "--config", typo))

	expectFail("bad time", "invalid time", e.run("restore", "--target-dsn", e.pg.DSN("never1"), "--to-time", "yesterday"))
	expectFail("target before oldest backup", "before the oldest base backup",
		e.run("restore", "--target-dsn", e.pg.DSN("never2"), "--to-time", "2001-01-01T00:00:00Z"))
	expectFail("target after archive", "after the newest archived point",
		e.run("restore", "--target-dsn", e.pg.DSN("never3"), "--to-time", time.Now().Add(time.Hour).UTC().Format(time.RFC3339)))
	expectFail("non-empty target", "not empty", e.run("restore", "--target-dsn", e.dsn, "--latest"))
	for _, db := range []string{"never1", "never2", "never3"} {
		if e.dbExists(db) {
			t.Fatalf("failed restore left database %s behind", db)
		}
	}

	// Corrupt one segment in store A only: restore falls back to store B.
	segs, _ := filepath.Glob(filepath.Join(e.storeDir(0), "segments", "*.seg"))
	var victim string
	for _, s := range segs {
		if st, _ := os.Stat(s); st.Size() > 200 {
			victim = filepath.Base(s)
		}
	}
	if victim == "" {
		t.Fatalf("no segment with data among %v", segs)
	}
	flip := func(path string) {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)-10] ^= 0x40
		os.WriteFile(path, b, 0o644)
	}
	flip(filepath.Join(e.storeDir(0), "segments", victim))
	want, err := testenv.Checksums(t.Context(), e.dsn)
	if err != nil {
		t.Fatal(err)
	}
	e.mustRun("restore", "--target-dsn", e.pg.DSN("fallback"), "--latest")
	e.assertRestored("fallback", want, "restore with one corrupt copy")

	// Corrupt it in store B too: no valid copy, nothing written.
	flip(filepath.Join(e.storeDir(1), "segments", victim))
	expectFail("corrupt segment", "no valid copy", e.run("restore", "--target-dsn", e.pg.DSN("never4"), "--latest"))
	if e.dbExists("never4") {
		t.Fatal("restore from a corrupt archive left database never4 behind")
	}
	// An existing empty target is left untouched too.
	if err := e.pg.CreateDatabase(t.Context(), "empty"); err != nil {
		t.Fatal(err)
	}
	expectFail("corrupt segment, existing target", "no valid copy", e.run("restore", "--target-dsn", e.pg.DSN("empty"), "--latest"))
	got, err := testenv.Checksums(t.Context(), e.pg.DSN("empty"))
	if err != nil || len(got) != 0 {
		t.Fatalf("existing target was written to: %v %v", got, err)
	}
}
