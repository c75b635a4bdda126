package e2e

import (
	"context"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
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

// TestDDLNonStandardStrings: DDL run in a session with
// standard_conforming_strings off, whose string literals hold
// backslash-escaped quotes (and semicolons after them), replays as the
// source ran it: cut into statements where the server cut it and run
// under the same setting, with the ordinary changes after it in place.
func TestDDLNonStandardStrings(t *testing.T) {
	e := newEnv(t)
	e.exec(`CREATE TABLE t (id int PRIMARY KEY, v text)`)
	e.exec(`INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 20) g`)
	e.mustRun("setup")
	e.startAgent()
	e.waitBackup(1)

	ctx := t.Context()
	conn, err := pgconn.Connect(ctx, e.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	run := func(sql string) {
		t.Helper()
		if _, err := conn.Exec(ctx, sql).ReadAll(); err != nil {
			t.Fatalf("run %q: %v", sql, err)
		}
	}
	// The server lexes a whole query string before running any of it, so
	// the setting goes first, on its own.
	run(`SET standard_conforming_strings = off`)
	run(`COMMENT ON TABLE t IS 'it\'s; odd'; CREATE TABLE u (a int PRIMARY KEY, b text DEFAULT 'a\';b', c text DEFAULT E'x\\y', d text DEFAULT 'ends in \\')`)
	run(`INSERT INTO u (a) VALUES (1); INSERT INTO u VALUES (2, 'p\'q', 'tab\there', '\\'); INSERT INTO t VALUES (21, 'c:\\dir\'s')`)
	run(`COMMENT ON COLUMN u.b IS '\''; CREATE INDEX u_b ON u (b) WHERE b <> 'x\';y'; INSERT INTO u (a, b) VALUES (5, '\';')`)
	// Replay looks a table up by name while the DDL's settings are in
	// force: a backslash in the name must not read as an escape there.
	run(`CREATE TABLE "odd\name" (k int PRIMARY KEY); INSERT INTO "odd\name" VALUES (1), (2); ALTER TABLE "odd\name" ADD COLUMN w text DEFAULT 'w\'s\\'`)
	run(`UPDATE t SET v = v || '\'' WHERE id % 4 = 0`)
	// Ordinary work after it in a standard session, DDL included, where a
	// backslash is just a backslash.
	e.exec(`INSERT INTO u (a, b) VALUES (3, 'c:\dir')`)
	e.exec(`ALTER TABLE u ADD COLUMN e text DEFAULT 'std\'`)
	e.exec(`INSERT INTO u (a) VALUES (4); UPDATE t SET v = v || '\' WHERE id % 3 = 0; DELETE FROM t WHERE id = 7`)
	e.exec(`INSERT INTO "odd\name" VALUES (3, 'x')`)

	// What the session made of its strings, checked on the source first.
	meta := func(dsn string) [][]string {
		t.Helper()
		rows, err := testenv.QueryRows(ctx, dsn, `
			SELECT c.relname, a.attname, coalesce(pg_get_expr(d.adbin, d.adrelid), '-'),
				coalesce(col_description(c.oid, a.attnum), '-'), coalesce(obj_description(c.oid, 'pg_class'), '-'),
				coalesce(a.attmissingval::text, '-')
			FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
			LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
			WHERE n.nspname = 'public' AND c.relkind = 'r'
			UNION ALL SELECT indexname, indexdef, '', '', '', '' FROM pg_indexes WHERE schemaname = 'public'
			ORDER BY 1, 2`)
		if err != nil {
			t.Fatal(err)
		}
		return rows
	}
	want := meta(e.dsn)
	for _, c := range []struct{ sql, want string }{
		{`SELECT obj_description('t'::regclass, 'pg_class')`, `it's; odd`},
		{`SELECT col_description('u'::regclass, 2)`, `'`},
		{`SELECT b || '|' || c || '|' || d || '|' || e FROM u WHERE a = 1`, `a';b|x\y|ends in \|std\`},
		{`SELECT string_agg(k || ':' || w, ',' ORDER BY k) FROM "odd\name"`, `1:w's\,2:w's\,3:x`},
		{`SELECT v FROM t WHERE id = 21`, `c:\dir's\`},
		{`SELECT count(*)::text FROM pg_indexes WHERE indexname = 'u_b' AND indexdef LIKE '%''x'''';y''%'`, `1`},
	} {
		if got := e.query1(c.sql); got != c.want {
			t.Fatalf("source: %s = %q, want %q", c.sql, got, c.want)
		}
	}

	cp := e.checkpoint("after DDL with standard_conforming_strings off")
	// A commit after the checkpoint, so the archive reaches past it.
	e.exec(`INSERT INTO t VALUES (100, 'after the checkpoint')`)
	e.waitArchived()
	// A target whose database refuses \' in string literals still takes
	// the DDL that the source accepted (replay pins backslash_quote on).
	if err := e.pg.CreateDatabase(ctx, "restored"); err != nil {
		t.Fatal(err)
	}
	if err := testenv.Exec(ctx, e.pg.DSN("postgres"), `ALTER DATABASE restored SET backslash_quote = off`); err != nil {
		t.Fatal(err)
	}
	e.mustRun("restore", "--target-dsn", e.pg.DSN("restored"), "--to-time", cp.at.Format(time.RFC3339Nano))
	e.assertRestored("restored", cp.sums, cp.name)
	for _, tbl := range []string{"public.t", "public.u", `public.odd\name`} {
		if _, ok := cp.sums[tbl]; !ok {
			t.Fatalf("no checksum for %s among %v", tbl, cp.sums)
		}
	}
	if got := meta(e.pg.DSN("restored")); !reflect.DeepEqual(got, want) {
		t.Fatalf("restored defaults, comments and indexes differ:\n got %q\nwant %q", got, want)
	}
}
