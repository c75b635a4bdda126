package e2e

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wayback-pitr/wayback/testenv"
)

// sequences returns every sequence's last_value (0 when never called).
func (e *env) sequences(dsn string) map[string]int64 {
	e.t.Helper()
	rows, err := testenv.QueryRows(e.t.Context(), dsn, `SELECT schemaname || '.' || sequencename, coalesce(last_value, 0) FROM pg_sequences WHERE schemaname <> 'wayback'`)
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[string]int64{}
	for _, r := range rows {
		v, _ := strconv.ParseInt(r[1], 10, 64)
		out[r[0]] = v
	}
	return out
}

// TestDDLAcrossRestore: schema changes made after the base backup are
// replayed in commit order, so restores before and after each one are
// exact; sequences end up at least where the source had them; a table
// created without a key never breaks the source's UPDATE/DELETE.
func TestDDLAcrossRestore(t *testing.T) {
	e := newEnv(t)
	e.exec(`CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL, qty int)`)
	e.exec(`INSERT INTO items (name, qty) SELECT 'item ' || g, g FROM generate_series(1, 100) g`)
	e.mustRun("setup")
	e.startAgent()
	e.waitBackup(1)

	type point struct {
		cp   fidState
		seqs map[string]int64
	}
	var points []point
	mark := func(name string) {
		st := e.fidState(name)
		points = append(points, point{st, e.sequences(e.dsn)})
	}
	e.exec(`INSERT INTO items (name, qty) VALUES ('before ddl', 1)`)
	mark("before any DDL")

	e.exec(`ALTER TABLE items ADD COLUMN price numeric(8,2) DEFAULT 9.99`)
	e.exec(`INSERT INTO items (name, qty, price) VALUES ('priced', 2, 1.50)`)
	e.exec(`UPDATE items SET price = 5 WHERE id % 10 = 0`)
	mark("after ADD COLUMN DEFAULT")

	e.exec(`ALTER TABLE items DROP COLUMN name`)
	e.exec(`UPDATE items SET qty = qty * 2 WHERE id % 3 = 0`)
	e.exec(`INSERT INTO items (qty) VALUES (7)`)
	mark("after DROP COLUMN")

	e.exec(`CREATE TABLE later (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text, at date DEFAULT '2026-01-01')`)
	e.exec(`INSERT INTO later (v) SELECT 'v' || g FROM generate_series(1, 50) g`)
	e.exec(`DELETE FROM later WHERE id > 45`)
	mark("after CREATE TABLE")

	// One query string mixing DDL and DML: each DDL runs at its place.
	e.exec(`CREATE TABLE multi (a int PRIMARY KEY); INSERT INTO multi VALUES (1), (2);
		ALTER TABLE multi ADD COLUMN b text DEFAULT 'x'; INSERT INTO multi VALUES (3, 'y'); UPDATE multi SET b = 'z' WHERE a = 1`)
	mark("after multi-statement string")

	// A table created without a key gets REPLICA IDENTITY FULL from the
	// capture trigger, so the source's UPDATE and DELETE on it work.
	e.exec(`CREATE TABLE nokey (a int, b text)`)
	e.exec(`INSERT INTO nokey VALUES (1, 'one'), (1, 'one'), (2, 'two')`)
	e.exec(`UPDATE nokey SET b = 'uno' WHERE a = 1`)
	e.exec(`DELETE FROM nokey WHERE a = 2`)
	if got := e.query1(`SELECT relreplident::text FROM pg_class WHERE relname = 'nokey'`); got != "f" {
		t.Fatalf("nokey has replica identity %q, want f (FULL)", got)
	}
	e.exec(`CREATE TYPE mood AS ENUM ('sad', 'ok'); ALTER TYPE mood ADD VALUE 'happy'`)
	e.exec(`CREATE SCHEMA crm; CREATE TABLE crm.notes (id int PRIMARY KEY, m mood, body text); CREATE INDEX ON crm.notes (m)`)
	e.exec(`INSERT INTO crm.notes VALUES (1, 'happy', 'hi'), (2, 'sad', NULL)`)
	e.exec(`ALTER TABLE crm.notes ALTER COLUMN id TYPE bigint`)
	e.exec(`INSERT INTO crm.notes VALUES (5000000000, 'ok', 'big')`)
	e.exec(`ALTER TABLE items RENAME COLUMN qty TO quantity`)
	e.exec(`UPDATE items SET quantity = 0 WHERE id = 1`)
	mark("after keyless table, enum, schema, type change, rename")

	e.waitArchived()
	sourceNow := nextValues(t, e.dsn)
	lastPoint := points[len(points)-1]
	if len(lastPoint.seqs) < 2 {
		t.Fatalf("expected the items and later sequences, got %v", lastPoint.seqs)
	}
	for i, p := range points {
		db := fmt.Sprintf("ddl_%d", i)
		e.mustRun("restore", "--target-dsn", e.pg.DSN(db), "--to-time", p.cp.at.Format(time.RFC3339Nano))
		e.assertRestored(db, p.cp.sums, "checkpoint "+p.cp.name)
		tables := make([]string, 0, len(p.cp.sums))
		for k := range p.cp.sums {
			tables = append(tables, k)
		}
		assertSameRows(t, "checkpoint "+p.cp.name, p.cp.rows, tableRows(t, e.pg.DSN(db), tables))
		got := e.sequences(e.pg.DSN(db))
		for seq, want := range p.seqs {
			if got[seq] < want {
				t.Fatalf("checkpoint %s: sequence %s is at %d after restore, the source had handed out %d", p.cp.name, seq, got[seq], want)
			}
		}
		if i == len(points)-2 {
			if w := lastPoint.seqs["public.later_id_seq"]; got["public.later_id_seq"] != w {
				t.Fatalf("later_id_seq restored at %d at the multi-statement checkpoint, the source had %d (rows 46-50 were deleted, so only the snapshot knows)", got["public.later_id_seq"], w)
			}
		}
		// Acceptance 3: every serial/identity table takes a new row, its
		// value at or past the source's at T and not past what the source
		// has handed out since; exact at the last checkpoint, after which no
		// sequence moved.
		upper := map[string]int64{}
		for col := range p.cp.next {
			upper[col] = sourceNow[col]
		}
		assertSequences(t, "checkpoint "+p.cp.name, e.pg.DSN(db), p.cp.next, upper, i == len(points)-1)
	}
	// DDL shows in the log.
	if out := e.mustRun("log", "--op", "ddl"); !strings.Contains(out, "DDL ALTER TABLE") || !strings.Contains(out, "DDL CREATE TABLE") {
		t.Fatalf("log --op ddl:\n%s", out)
	}
}
