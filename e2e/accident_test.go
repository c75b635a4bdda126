package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/wayback-pitr/wayback/testenv"
)

const shopSchema = `
CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, tier text);
CREATE TABLE orders (id int PRIMARY KEY, customer_id int NOT NULL REFERENCES customers, status text NOT NULL,
  total numeric(10,2), note text, tags text[]);
CREATE TABLE order_items (order_id int REFERENCES orders ON DELETE CASCADE, line int, sku text, qty int,
  PRIMARY KEY (order_id, line));
CREATE TABLE audit (id int PRIMARY KEY, what text);
`

// Deterministic workload, run identically on the source and the reference.
var (
	shopBefore = []string{
		`INSERT INTO customers SELECT g, 'customer ' || g, 'bronze' FROM generate_series(1, 100) g`,
		`INSERT INTO orders SELECT g, 1 + g % 100, CASE WHEN g % 3 = 0 THEN 'new' ELSE 'paid' END, g * 1.25,
		   CASE WHEN g % 10 = 0 THEN 'it''s a "note" with \backslash' END, ARRAY['a', NULL, 'b ' || g] FROM generate_series(1, 2000) g`,
		`INSERT INTO order_items SELECT o, l, 'SKU-' || o || '-' || l, l FROM generate_series(1, 2000) o, generate_series(1, 3) l`,
		`UPDATE orders SET total = total + 1 WHERE id % 7 = 0`,
	}
	shopAccident = `DELETE FROM orders WHERE status = 'new'`
	shopAfter    = []string{
		`INSERT INTO orders SELECT g, 1 + g % 100, 'new', g, NULL, NULL FROM generate_series(3001, 3100) g`,
		`INSERT INTO order_items SELECT g, 1, 'SKU-late', 2 FROM generate_series(3001, 3100) g`,
		`UPDATE customers SET tier = 'gold' WHERE id % 10 = 0`,
		`UPDATE orders SET status = 'shipped' WHERE status = 'paid' AND id % 5 = 0`,
		`INSERT INTO audit SELECT g, 'event ' || g FROM generate_series(1, 50) g`,
	}
)

// TestAccidentalDeletion: find the accident in the log, restore without
// it, undo it in place, and restore to a named mark.
func TestAccidentalDeletion(t *testing.T) {
	ref := testenv.NewCluster(t, testenv.Options{})
	if err := ref.CreateDatabase(t.Context(), "app"); err != nil {
		t.Fatal(err)
	}
	refExec := func(sql string) {
		if err := testenv.Exec(t.Context(), ref.DSN("app"), sql); err != nil {
			t.Fatal(err)
		}
	}

	e := newEnv(t)
	e.exec(shopSchema)
	refExec(shopSchema)
	e.mustRun("setup")
	e.startAgent()
	e.waitBackup(1)
	for _, q := range shopBefore {
		e.exec(q)
		refExec(q)
	}
	e.mustRun("mark", "before-accident")
	atMark := e.checkpoint("mark")
	e.exec(shopAccident)
	for _, q := range shopAfter {
		e.exec(q)
		refExec(q)
	}
	e.waitArchived()
	want, err := testenv.Checksums(t.Context(), ref.DSN("app"))
	if err != nil {
		t.Fatal(err)
	}
	deletedOrders, _ := strconv.Atoi(e.query1("SELECT count(*) FROM generate_series(1, 2000) g WHERE g % 3 = 0"))

	// 1. The log shows the accident with the right counts.
	var accident struct {
		XID     uint32 `json:"xid"`
		Changes map[string]struct {
			Delete int `json:"delete"`
		} `json:"changes"`
	}
	out := e.mustRun("log", "--json", "--op", "delete")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 1 {
		t.Fatalf("log --op delete lists %d transactions, want the accident only:\n%s", len(lines), out)
	}
	if err := json.Unmarshal([]byte(lines[0]), &accident); err != nil {
		t.Fatal(err)
	}
	if got := accident.Changes["public.orders"].Delete; got != deletedOrders {
		t.Fatalf("accident deletes %d orders, want %d:\n%s", got, deletedOrders, out)
	}
	if got := accident.Changes["public.order_items"].Delete; got != 3*deletedOrders {
		t.Fatalf("accident deletes %d order items, want %d:\n%s", got, 3*deletedOrders, out)
	}
	human := e.mustRun("log", "--since", "2000-01-01 00:00:00+00")
	if !strings.Contains(human, "outlier") || !strings.Contains(human, "before-accident") {
		t.Fatalf("human log does not flag the outlier or show the mark:\n%s", human)
	}
	xid := strconv.Itoa(int(accident.XID))

	// 2. Restore everything but the accident.
	r := e.mustRun("restore", "--target-dsn", e.pg.DSN("without_accident"), "--latest", "--skip-xid", xid)
	if !strings.Contains(r, "skipped 1 on request") {
		t.Fatalf("restore summary does not mention the skip:\n%s", r)
	}
	e.assertRestored("without_accident", want, "restore --skip-xid")

	// 5. Restore to the mark.
	e.mustRun("restore", "--target-dsn", e.pg.DSN("at_mark"), "--to-mark", "before-accident")
	e.assertRestored("at_mark", atMark.sums, "restore --to-mark")
	// --to-xid --exclusive stops just before the accident.
	e.mustRun("restore", "--target-dsn", e.pg.DSN("before_xid"), "--to-xid", xid, "--exclusive")
	e.assertRestored("before_xid", atMark.sums, "restore --to-xid --exclusive")

	// 3. Undo in place on the live source (REPLICA IDENTITY DEFAULT: the
	// stream carried only keys for the deleted rows).
	sql := e.mustRun("undo", "--xid", xid)
	if !strings.Contains(sql, "reverts transaction "+xid) || !strings.Contains(sql, "no later transaction touched these rows") {
		t.Fatalf("undo header:\n%s", tail(sql, 0)[:min(len(sql), 600)])
	}
	script := filepath.Join(t.TempDir(), "undo.sql")
	os.WriteFile(script, []byte(sql), 0o600)
	psql := e.pg.Command(t.Context(), "psql", "-X", "-q", "-1", "-v", "ON_ERROR_STOP=1", "-d", "app", "-f", script)
	if out, err := psql.CombinedOutput(); err != nil {
		t.Fatalf("psql -1 -f undo.sql: %v\n%s", err, out)
	}
	got, err := testenv.Checksums(t.Context(), e.dsn)
	if err != nil {
		t.Fatal(err)
	}
	if d := testenv.DiffChecksums(want, got); d != "" {
		t.Fatalf("source after undo differs from the reference:\n%s", d)
	}
}

// TestSkipConflict: skipping a transaction whose rows a later one updated
// is reported before anything is written, and --on-conflict stop names
// the later transaction; skip and overwrite carry on.
func TestSkipConflict(t *testing.T) {
	e := newEnv(t)
	e.exec(shopSchema)
	e.mustRun("setup")
	e.startAgent()
	e.waitBackup(1)
	e.exec(`INSERT INTO customers SELECT g, 'c' || g, NULL FROM generate_series(1, 10) g`)
	e.exec(`INSERT INTO audit SELECT g, 'bad import ' || g FROM generate_series(1, 20) g`)
	badXID := e.query1("SELECT xid::text FROM (SELECT xmin AS xid FROM audit LIMIT 1) x")
	e.exec(`UPDATE audit SET what = 'fixed by hand' WHERE id = 7`)
	laterXID := e.query1("SELECT xmin::text FROM audit WHERE id = 7")
	e.exec(`INSERT INTO customers VALUES (11, 'after', NULL)`)
	e.waitArchived()

	r := e.run("restore", "--target-dsn", e.pg.DSN("stopped"), "--latest", "--skip-xid", badXID)
	if r.code == 0 {
		t.Fatalf("restore with a conflicting skip succeeded:\n%s", r)
	}
	warn := strings.Index(r.stderr, "later transaction xid "+laterXID)
	load := strings.Index(r.stderr, "loading base backup")
	if warn < 0 || load < 0 || warn > load {
		t.Fatalf("the dependency of xid %s was not reported before writing:\n%s", laterXID, r.stderr)
	}
	last := strings.Split(strings.TrimSpace(r.stderr), "\n")
	if msg := last[len(last)-1]; !strings.Contains(msg, "xid "+laterXID) || !strings.Contains(msg, "public.audit") || !strings.Contains(msg, "id=7") {
		t.Fatalf("stop message does not name the later transaction, table and key: %s", msg)
	}
	if e.dbExists("stopped") {
		t.Fatal("the stopped restore left its database behind")
	}

	out := e.mustRun("restore", "--target-dsn", e.pg.DSN("skipped"), "--latest", "--skip-xid", badXID, "--on-conflict", "skip")
	if !strings.Contains(out, "conflict: xid "+laterXID) {
		t.Fatalf("summary does not list the conflict:\n%s", out)
	}
	if n := queryDB(t, e, "skipped", "SELECT count(*) FROM audit"); n != "0" {
		t.Fatalf("audit has %s rows after skipping the import and its fix", n)
	}
	if n := queryDB(t, e, "skipped", "SELECT count(*) FROM customers"); n != "11" {
		t.Fatalf("customers has %s rows, want 11: work after the skipped transaction was lost", n)
	}
	e.mustRun("restore", "--target-dsn", e.pg.DSN("overwritten"), "--latest", "--skip-xid", badXID, "--on-conflict", "overwrite")
	if v := queryDB(t, e, "overwritten", "SELECT what FROM audit"); v != "fixed by hand" {
		t.Fatalf("overwrite left audit as %q", v)
	}
}

func queryDB(t *testing.T, e *env, db, sql string) string {
	t.Helper()
	rows, err := testenv.QueryRows(t.Context(), e.pg.DSN(db), sql)
	if err != nil || len(rows) != 1 {
		t.Fatalf("%s on %s: %v %v", sql, db, rows, err)
	}
	return rows[0][0]
}

// TestUndoKeylessAndInheritance: undo SQL for a table without a key
// (REPLICA IDENTITY FULL) holding identical rows, and for a plain
// inheritance parent, reverts exactly what the transaction did: it neither
// deletes an identical twin of a row the transaction inserted nor reaches
// into the parent's child table.
func TestUndoKeylessAndInheritance(t *testing.T) {
	e := newEnv(t)
	e.exec(`CREATE TABLE bag (a int, b text);
		ALTER TABLE bag REPLICA IDENTITY FULL;
		CREATE TABLE par (id int PRIMARY KEY, v text);
		CREATE TABLE chl (extra int) INHERITS (par);
		ALTER TABLE chl ADD PRIMARY KEY (id)`)
	e.mustRun("setup")
	e.startAgent()
	e.waitBackup(1)
	e.exec(`INSERT INTO bag VALUES (1, 'x'), (1, 'x'), (1, 'x'), (2, 'y'), (3, 'w'), (3, 'w');
		INSERT INTO par VALUES (1, 'p1'), (2, 'p2');
		INSERT INTO chl VALUES (1, 'c1', 0), (2, 'c2', 0)`)
	before := e.checkpoint("before")
	e.exec(`BEGIN;
		DELETE FROM bag WHERE a = 1;
		INSERT INTO bag VALUES (2, 'y');
		UPDATE bag SET b = 'v' WHERE ctid = (SELECT ctid FROM bag WHERE a = 3 LIMIT 1);
		DELETE FROM ONLY par WHERE id = 1;
		UPDATE ONLY par SET v = 'bad' WHERE id = 2;
		COMMIT`)
	xid := e.query1("SELECT xmin FROM ONLY par WHERE id = 2")
	e.waitArchived()

	sql := e.mustRun("undo", "--xid", xid)
	script := filepath.Join(t.TempDir(), "undo.sql")
	os.WriteFile(script, []byte(sql), 0o600)
	psql := e.pg.Command(t.Context(), "psql", "-X", "-q", "-1", "-v", "ON_ERROR_STOP=1", "-d", "app", "-f", script)
	if out, err := psql.CombinedOutput(); err != nil {
		t.Fatalf("psql -1 -f undo.sql: %v\n%s\n%s", err, out, sql)
	}
	got, err := testenv.Checksums(t.Context(), e.dsn)
	if err != nil {
		t.Fatal(err)
	}
	if d := testenv.DiffChecksums(before.sums, got); d != "" {
		t.Fatalf("source after undo differs from before the transaction:\n%s\nscript:\n%s", d, sql)
	}
}
