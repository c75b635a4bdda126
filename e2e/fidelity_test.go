package e2e

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/wayback-pitr/wayback/testenv"
)

// typeColumn is one column of the fidelity tables with the edge values it
// cycles through, as SQL literals.
type typeColumn struct {
	name, typ string
	vals      []string
}

// allBytes is a bytea literal holding every byte value once.
func allBytes() string {
	var b strings.Builder
	b.WriteString(`'\x`)
	for i := 0; i < 256; i++ {
		fmt.Fprintf(&b, "%02x", i)
	}
	b.WriteString(`'`)
	return b.String()
}

// fidelityColumns covers every built-in type family with edge values. No
// text value can hold NUL (U+0000): PostgreSQL rejects it in text, json and
// xml alike, so there is nothing to replay; bytea carries byte 0 instead.
func fidelityColumns() []typeColumn {
	return []typeColumn{
		{"flag", "boolean", []string{`true`, `false`}},
		{"chr", `"char"`, []string{`'a'`, `E'\\001'`, `''`}},
		{"nm", "name", []string{`'a name with spaces'`, `'ÄÖÜ'`}},
		{"numinf", "numeric", []string{`'Infinity'`, `'-Infinity'`, `'-0'`}},
		{"num", "numeric", []string{`'NaN'`, `'0'`, `'-0.000'`, `'1.50'`, `'1.5'`, `'123456789012345678901234567890.123456789012345678901234567890'`, `'1e-300'`, `'-9.99e+500'`}},
		{"numneg", "numeric(7,-2)", []string{`'12345'`, `'-99999'`, `'0'`}},
		{"f4", "real", []string{`'NaN'`, `'Infinity'`, `'-Infinity'`, `'-0'`, `'0'`, `'1.17549435e-38'`, `'3.4028235e38'`, `'0.1'`, `'1e-45'`}},
		{"f8", "double precision", []string{`'NaN'`, `'Infinity'`, `'-Infinity'`, `'-0'`, `'0'`, `'2.2250738585072014e-308'`, `'1.7976931348623157e308'`, `'0.30000000000000004'`, `'5e-324'`}},
		{"i2", "smallint", []string{`-32768`, `32767`, `0`}},
		{"i8", "bigint", []string{`-9223372036854775808`, `9223372036854775807`, `0`}},
		{"txt", "text", []string{`''`, `'plain'`, `'😀👍🏽 family: 👨‍👩‍👧'`, `U&'e\0301 \00E9 \FFFD \+01F600'`, `E'tab\there\nnewline\r\\backslash "quotes" ''single'''`, `'NULL'`, `' '`, `'עברית العربية 中文'`, `E'\\N'`}},
		{"vc", "varchar(20)", []string{`'abc  '`, `''`, `'ß'`}},
		{"ch", "char(3)", []string{`'a'`, `''`, `'abc'`}},
		{"bin", "bytea", []string{allBytes(), `''`, `'\x00'`, `'\x5c7830'`}},
		{"js", "json", []string{`'{"b": 1, "a": [1, 2.50, {"x": null}], "a": "dup"}'`, `'"str"'`, `'null'`, `'[]'`, `'  1e1000 '`, `'{"e": "\u00e9\ud83d\ude00"}'`}},
		{"jb", "jsonb", []string{`'{"b": 1, "a": [true, false, null]}'`, `'"é"'`, `'1.000'`, `'[]'`, `'{}'`, `'null'`}},
		{"jsa", "json[]", []string{`ARRAY['{"a":1}', '[1, 2]']::json[]`, `'{}'`}},
		{"ia", "int[]", []string{`'{{1,2},{3,4}}'`, `'{}'`, `'{NULL,1,NULL}'`, `'[0:1]={5,6}'`, `'{{{1},{2}},{{3},{4}}}'`, `'{NULL}'`}},
		{"ta", "text[]", []string{`'{"a,b","NULL",NULL,"","\\\\","\""}'`, `'{}'`, `'{{a,b},{c,d}}'`}},
		{"r4", "int4range", []string{`'empty'`, `'[1,10)'`, `'(,5]'`, `'(,)'`}},
		{"rts", "tstzrange", []string{`'[-infinity,infinity]'`, `'empty'`, `'[2026-01-01 00:00:00+00,)'`}},
		{"rnum", "numrange", []string{`'(0.5,NaN)'`, `'[1.10,1.2]'`}},
		{"rd", "daterange", []string{`'[2026-01-01,infinity)'`, `'empty'`}},
		{"mr", "int4multirange", []string{`'{}'`, `'{[1,3),[5,7)}'`, `'{(,)}'`, `'{[1,2),[2,3)}'`}},
		{"mood", "fid_mood", []string{`'sad'`, `'happy'`, `'ok'`}},
		{"dom", "fid_posint", []string{`1`, `2147483647`}},
		{"domtxt", "fid_code", []string{`'AB'`, `'ZZ'`}},
		{"comp", "fid_pair", []string{`'(1,"x y")'`, `'(,)'`, `'(-3,"")'`, `ROW(NULL, 'q"uote')::fid_pair`}},
		{"compa", "fid_pair[]", []string{`ARRAY['(1,a)'::fid_pair, NULL]`, `'{}'`}},
		{"id", "uuid", []string{`'00000000-0000-0000-0000-000000000000'`, `'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'`, `'ffffffff-ffff-ffff-ffff-ffffffffffff'`}},
		{"ip", "inet", []string{`'192.168.0.1/24'`, `'::1'`, `'10.0.0.1'`, `'::ffff:1.2.3.4/128'`}},
		{"net", "cidr", []string{`'10.0.0.0/8'`, `'2001:db8::/32'`, `'0.0.0.0/0'`}},
		{"mac", "macaddr", []string{`'08:00:2b:01:02:03'`, `'00:00:00:00:00:00'`}},
		{"mac8", "macaddr8", []string{`'08:00:2b:01:02:03:04:05'`, `'ff:ff:ff:ff:ff:ff:ff:ff'`}},
		{"cash", "money", []string{`'-12.34'`, `'92233720368547758.07'`, `'-92233720368547758.08'`, `'0'`}},
		{"bits", "bit(4)", []string{`B'1010'`, `B'0000'`}},
		{"vbits", "varbit", []string{`B''`, `B'1'`, `B'1010101010101010101010101010101010101'`}},
		{"ivl", "interval", []string{`'1 year 2 mons -3 days 04:05:06.789'`, `'-178000000 years'`, `'0'`, `'1 microsecond'`, `'-1 days +23:59:59.999999'`}},
		{"d", "date", []string{`'infinity'`, `'-infinity'`, `'4713-01-01 BC'`, `'5874897-12-31'`, `'2000-02-29'`}},
		{"ts", "timestamp", []string{`'infinity'`, `'-infinity'`, `'294276-12-31 23:59:59.999999'`, `'4713-01-01 00:00:00 BC'`, `'2026-11-23 01:02:03.000001'`}},
		{"tstz", "timestamptz", []string{`'infinity'`, `'-infinity'`, `'2026-03-29 02:30:00+02'`, `'1901-12-13 20:45:52+00'`, `'2026-11-23 01:02:03.5-09:30'`}},
		{"tm", "time", []string{`'24:00:00'`, `'00:00:00'`, `'23:59:59.999999'`}},
		{"tmtz", "timetz", []string{`'24:00:00-15:59'`, `'12:00+14'`, `'00:00:00.000001+00'`}},
		{"tsv", "tsvector", []string{`'a fat cat:1A,2B sat:3 ''don''''t'''`, `''`}},
		{"tsq", "tsquery", []string{`'fat & (rat | !cat) <-> sat:*'`, `'x'`}},
		{"doc", "xml", []string{`'<a b="1">x &amp; y</a>'`, `'text only'`, `'<r><![CDATA[<&>]]></r><!-- c -->'`}},
		{"pt", "point", []string{`'(1,2)'`, `'(-0,1e300)'`, `'(NaN,Infinity)'`}},
		{"ln", "line", []string{`'{1,-1,0}'`, `'{0,1,-2.5}'`}},
		{"seg", "lseg", []string{`'[(0,0),(1,1)]'`, `'[(1,1),(0,0)]'`}},
		{"bx", "box", []string{`'(2,2),(0,0)'`, `'(4,1),(0,0)'`}},
		{"pth", "path", []string{`'[(0,0),(1,1),(2,0)]'`, `'((0,0),(1,1))'`}},
		{"poly", "polygon", []string{`'((0,0),(1,1),(1,0))'`, `'((0,0))'`}},
		{"circ", "circle", []string{`'<(0,0),1>'`, `'<(1,1),0.5>'`}},
		{"o", "oid", []string{`4294967295`, `0`}},
		{"rc", "regclass", []string{`'pg_class'`, `'pg_catalog.pg_type'`}},
		{"rt", "regtype", []string{`'integer'`, `'timestamp with time zone'`}},
		{"lsn", "pg_lsn", []string{`'16/B374D848'`, `'0/0'`, `'FFFFFFFF/FFFFFFFF'`}},
		{"x", "xid", []string{`'12345'`, `'4294967295'`}},
		{"x8", "xid8", []string{`'18446744073709551615'`, `'0'`}},
		{"snap", "pg_snapshot", []string{`'10:20:10,14,15'`, `'1:1:'`}},
		{"rp", "regproc", []string{`'now'`, `'pg_catalog.int4in'`}},
		{"rn", "regnamespace", []string{`'pg_catalog'`, `'public'`}},
		{"ov", "oidvector", []string{`'1 2 3'`, `''`}},
		{"ci", "citext", []string{`'MiXeD'`, `'mixed'`, `'Straße'`}},
		{"hs", "hstore", []string{`'"a"=>"1", "b"=>NULL, "c d"=>"e\"f"'`, `''`}},
	}
}

// fidelitySchema creates the types, extensions and tables of the test.
func fidelitySchema(cols []typeColumn) string {
	var b strings.Builder
	b.WriteString(`CREATE EXTENSION citext; CREATE EXTENSION hstore;
		CREATE TYPE fid_mood AS ENUM ('sad', 'ok', 'happy');
		CREATE DOMAIN fid_posint AS int CHECK (VALUE > 0);
		CREATE DOMAIN fid_code AS text COLLATE "C" CHECK (VALUE ~ '^[A-Z]{2}$');
		CREATE TYPE fid_pair AS (n int, s text);
		CREATE TABLE types (rid int PRIMARY KEY`)
	for _, c := range cols {
		fmt.Fprintf(&b, ", %s %s", c.name, c.typ)
	}
	b.WriteString(`);
		CREATE TABLE types_nokey (LIKE types);`)
	return b.String()
}

// insertTypeRows inserts n rows with ids from first: row i takes each
// column's value number (i+shift) mod len, and every len(vals)+1-th row is
// all NULL.
func insertTypeRows(table string, cols []typeColumn, first, n, shift int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "INSERT INTO %s VALUES (%d", table, first+i)
		for _, c := range cols {
			if (i+shift)%(len(c.vals)+1) == len(c.vals) {
				b.WriteString(", NULL")
			} else {
				b.WriteString(", " + c.vals[(i+shift)%(len(c.vals)+1)])
			}
		}
		b.WriteString(");\n")
	}
	return b.String()
}

// fidState is the source's content at an instant: checksums, every row's
// text, and each serial/identity column's next value.
type fidState struct {
	checkpoint
	rows  map[string][]string
	next  map[string]int64  // "schema.table.column" -> value nextval would return
	views map[string]string // materialized views' contents
}

// pinned makes text output independent of session settings.
const pinned = `SET LOCAL TimeZone = 'UTC'; SET LOCAL DateStyle = 'ISO, MDY'; SET LOCAL IntervalStyle = 'postgres';
	SET LOCAL extra_float_digits = 1; SET LOCAL bytea_output = 'hex'; SET LOCAL lc_monetary = 'C'`

// tableRows returns every table's rows as text (sorted), read in one
// snapshot with pinned output settings.
func tableRows(t *testing.T, dsn string, tables []string) map[string][]string {
	t.Helper()
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(ctx, pinned); err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, name := range tables {
		schema, table, _ := strings.Cut(name, ".")
		rows, err := tx.Query(ctx, `SELECT ROW(t.*)::text FROM ONLY `+pgx.Identifier{schema, table}.Sanitize()+` t`)
		if err != nil {
			t.Fatal(err)
		}
		texts, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatalf("read %s: %v", name, err)
		}
		slices.Sort(texts)
		out[name] = texts
	}
	return out
}

// nextValues returns what nextval would hand out next for every sequence:
// those owned by a column (serial or identity) keyed "schema.table.column",
// the others "sequence:name".
func nextValues(t *testing.T, dsn string) map[string]int64 {
	t.Helper()
	rows, err := testenv.QueryRows(t.Context(), dsn, `SELECT n.nspname || '.' || c.relname || '.' || a.attname, s.seqrelid::regclass::text
		FROM pg_depend d JOIN pg_sequence s ON s.seqrelid = d.objid
		JOIN pg_class c ON c.oid = d.refobjid JOIN pg_namespace n ON n.oid = c.relnamespace
		JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = d.refobjsubid
		WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
		  AND n.nspname <> 'wayback'`)
	if err != nil {
		t.Fatal(err)
	}
	free, err := testenv.QueryRows(t.Context(), dsn, `SELECT 'sequence:' || s.seqrelid::regclass::text, s.seqrelid::regclass::text FROM pg_sequence s
		JOIN pg_class c ON c.oid = s.seqrelid JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname <> 'wayback' AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = s.seqrelid AND d.deptype IN ('a', 'i'))`)
	if err != nil {
		t.Fatal(err)
	}
	rows = append(rows, free...)
	out := map[string]int64{}
	for _, r := range rows {
		v, err := testenv.QueryRows(t.Context(), dsn, `SELECT CASE WHEN is_called THEN last_value + (SELECT seqincrement FROM pg_sequence WHERE seqrelid = $1::regclass) ELSE last_value END FROM `+r[1], r[1])
		if err != nil {
			t.Fatal(err)
		}
		n, _ := strconv.ParseInt(v[0][0], 10, 64)
		out[r[0]] = n
	}
	return out
}

// insertNext inserts one row into table letting the serial or identity
// column col take its next value, and returns that value. The other
// columns copy an existing row (so NOT NULL columns are satisfied), or
// take their defaults when the table is empty.
func insertNext(t *testing.T, dsn, col string) (int64, error) {
	t.Helper()
	parts := strings.SplitN(col, ".", 3)
	rel := pgx.Identifier{parts[0], parts[1]}.Sanitize()
	others, err := testenv.QueryRows(t.Context(), dsn, `SELECT coalesce(string_agg(quote_ident(attname), ', ' ORDER BY attnum), '') FROM pg_attribute
		WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped AND attgenerated = '' AND attname <> $2`, rel, parts[2])
	if err != nil {
		return 0, err
	}
	ret := ` RETURNING ` + pgx.Identifier{parts[2]}.Sanitize()
	q := `INSERT INTO ` + rel + ` DEFAULT VALUES` + ret
	if c := others[0][0]; c != "" {
		q = `INSERT INTO ` + rel + ` (` + c + `) SELECT ` + c + ` FROM ` + rel + ` LIMIT 1` + ret
	}
	rows, err := testenv.QueryRows(t.Context(), dsn, q)
	if err == nil && len(rows) == 0 {
		rows, err = testenv.QueryRows(t.Context(), dsn, `INSERT INTO `+rel+` DEFAULT VALUES`+ret)
	}
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(rows[0][0], 10, 64)
}

// assertSequences checks acceptance 3 on a restored database: for every
// serial/identity column, the next value is at or past the source's at T
// (want) and not past upper (no value the source handed out after T
// exceeds it), exactly want when exact is set; and a new row takes it
// without a duplicate key.
func assertSequences(t *testing.T, what, dsn string, want, upper map[string]int64, exact bool) {
	t.Helper()
	got := nextValues(t, dsn)
	if len(got) != len(want) {
		t.Fatalf("%s: restored database has sequences for %v, source had %v", what, got, want)
	}
	for col, w := range want {
		if got[col] < w || got[col] > upper[col] || (exact && got[col] != w) {
			t.Fatalf("%s: next value for %s is %d after restore; the source would have handed out %d at T and never more than %d since (exact: %v)", what, col, got[col], w, upper[col], exact)
		}
		var v int64
		var err error
		if name, ok := strings.CutPrefix(col, "sequence:"); ok {
			var rows [][]string
			if rows, err = testenv.QueryRows(t.Context(), dsn, `SELECT nextval($1::regclass)`, name); err == nil {
				v, err = strconv.ParseInt(rows[0][0], 10, 64)
			}
		} else {
			v, err = insertNext(t, dsn, col)
		}
		if err != nil {
			t.Fatalf("%s: inserting a row into %s after restore: %v", what, col, err)
		}
		if v != got[col] {
			t.Fatalf("%s: a new row in %s got %d, the sequence said %d", what, col, v, got[col])
		}
	}
}

func (e *env) fidState(name string) fidState {
	e.t.Helper()
	cp := e.checkpoint(name)
	tables := make([]string, 0, len(cp.sums))
	for k := range cp.sums {
		tables = append(tables, k)
	}
	return fidState{checkpoint: cp, rows: tableRows(e.t, e.dsn, tables), next: nextValues(e.t, e.dsn), views: e.matviews(e.dsn)}
}

// matviews returns every materialized view's rows as text (not populated:
// "unpopulated").
func (e *env) matviews(dsn string) map[string]string {
	e.t.Helper()
	names, err := testenv.QueryRows(e.t.Context(), dsn, `SELECT schemaname, matviewname, ispopulated::text FROM pg_matviews`)
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[string]string{}
	for _, n := range names {
		key := n[0] + "." + n[1]
		if n[2] != "true" {
			out[key] = "unpopulated"
			continue
		}
		rows, err := testenv.QueryRows(e.t.Context(), dsn, `SELECT coalesce(string_agg(ROW(m.*)::text, ';' ORDER BY ROW(m.*)::text), '') FROM `+pgx.Identifier{n[0], n[1]}.Sanitize()+` m`)
		if err != nil {
			e.t.Fatal(err)
		}
		out[key] = rows[0][0]
	}
	return out
}

// assertSameRows compares restored rows with the source's, table by table,
// naming the first row that differs.
func assertSameRows(t *testing.T, what string, want, got map[string][]string) {
	t.Helper()
	for table, w := range want {
		g := got[table]
		if slices.Equal(w, g) {
			continue
		}
		for i := 0; i < max(len(w), len(g)); i++ {
			var wr, gr string
			if i < len(w) {
				wr = w[i]
			}
			if i < len(g) {
				gr = g[i]
			}
			if wr != gr {
				t.Fatalf("%s: table %s: %d rows restored, source had %d; first difference at sorted row %d:\n source:   %.600q\n restored: %.600q", what, table, len(g), len(w), i, wr, gr)
			}
		}
	}
}

// query1On is query1 on another database of the source's cluster.
func (e *env) query1On(db, sql string, args ...any) string {
	e.t.Helper()
	rows, err := testenv.QueryRows(e.t.Context(), e.pg.DSN(db), sql, args...)
	if err != nil || len(rows) != 1 || len(rows[0]) != 1 {
		e.t.Fatalf("query %q on %s: %v (%d rows)", sql, db, err, len(rows))
	}
	return rows[0][0]
}

// spilled reads how many transactions the server spilled to disk while
// decoding for the wayback slot.
func (e *env) spilled() int64 {
	n, _ := strconv.ParseInt(e.query1(`SELECT coalesce((SELECT spill_txns FROM pg_stat_replication_slots WHERE slot_name = 'wayback'), 0)::text`), 10, 64)
	return n
}

// TestFidelity: every built-in type family with edge values, unchanged
// TOAST, NULL vs empty, stored generated columns, keyless tables with
// duplicate rows, every TRUNCATE form, partitioned tables with ATTACH and
// DETACH, and a transaction the server spills to disk, all changed after
// the base backup, restore exactly: row by row as text and by checksum, at
// several instants, from one source into several targets. Serial and
// identity columns take new rows after every restore, with the next value
// at or past the source's at T (exact where no value was handed out
// between T and the next sequence snapshot).
func TestFidelity(t *testing.T) {
	e := newEnv(t)
	cols := fidelityColumns()
	// Output settings a DBA may well choose for a database: every session
	// there, the agent's included, prints values this way unless wayback
	// pins its own. Under DMY a date like 03/04 means April, not March.
	e.exec(`ALTER DATABASE app SET DateStyle = 'SQL, DMY'; ALTER DATABASE app SET IntervalStyle = 'sql_standard';
		ALTER DATABASE app SET extra_float_digits = 0; ALTER DATABASE app SET TimeZone = 'America/St_Johns';
		ALTER DATABASE app SET bytea_output = 'escape'`)
	e.exec(`ALTER SYSTEM SET logical_decoding_work_mem = '64kB'`)
	e.exec(`SELECT pg_reload_conf()`)
	e.exec(fidelitySchema(cols))
	e.exec(insertTypeRows("types", cols, 1, 12, 0))
	e.exec(insertTypeRows("types_nokey", cols, 1, 12, 0) + insertTypeRows("types_nokey", cols, 1, 12, 0))
	bigText := `(SELECT string_agg(md5(random()::text || g::text), '') FROM generate_series(1, 400) g)` // 12.8 kB, incompressible
	e.exec(`CREATE TABLE toasty (id int PRIMARY KEY, big text, blob bytea, small int);
		INSERT INTO toasty SELECT g, ` + bigText + `, decode(` + bigText + `, 'hex'), g FROM generate_series(1, 3) g;
		CREATE TABLE toasty_full (id int, big text, small int);
		INSERT INTO toasty_full SELECT g, ` + bigText + `, g FROM generate_series(1, 3) g;
		CREATE TABLE nulls (id serial PRIMARY KEY, t text, a int[], b bytea, j jsonb, c fid_pair);
		INSERT INTO nulls (t, a, b, j, c) VALUES (NULL, NULL, NULL, NULL, NULL), ('', '{}', '', 'null', '(,)');
		CREATE TABLE gen (id int GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, a int, b int GENERATED ALWAYS AS (a * 2) STORED, c text GENERATED ALWAYS AS ('v' || a) STORED);
		INSERT INTO gen (a) SELECT g FROM generate_series(1, 5) g;
		CREATE TABLE dup (a int, b text);
		INSERT INTO dup VALUES (1, 'x'), (1, 'x'), (2, 'y'), (2, 'y'), (3, NULL), (3, NULL);
		CREATE TABLE t_plain (id serial PRIMARY KEY, v text);
		CREATE TABLE t_a (id int PRIMARY KEY); CREATE TABLE t_b (id int PRIMARY KEY);
		CREATE TABLE t_parent (id int PRIMARY KEY); CREATE TABLE t_child (id int PRIMARY KEY, p int REFERENCES t_parent);
		CREATE TABLE t_ident (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text);
		INSERT INTO t_plain (v) SELECT 'p' || g FROM generate_series(1, 10) g;
		INSERT INTO t_a SELECT generate_series(1, 5); INSERT INTO t_b SELECT generate_series(1, 5);
		INSERT INTO t_parent SELECT generate_series(1, 5); INSERT INTO t_child SELECT g, g FROM generate_series(1, 5) g;
		INSERT INTO t_ident (v) SELECT 'i' || g FROM generate_series(1, 20) g;
		CREATE TABLE measure (id int, region text, v int, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
		CREATE TABLE measure_eu PARTITION OF measure FOR VALUES IN ('eu');
		CREATE TABLE measure_us PARTITION OF measure FOR VALUES IN ('us');
		CREATE TABLE measure_other PARTITION OF measure DEFAULT;
		INSERT INTO measure SELECT g, (ARRAY['eu', 'us', 'xx'])[g % 3 + 1], g FROM generate_series(1, 30) g;
		CREATE TABLE measure_jp (v int, region text NOT NULL, id int NOT NULL, PRIMARY KEY (id, region));
		INSERT INTO measure_jp VALUES (5, 'jp', 500), (6, 'jp', 501);
		ALTER TABLE measure ATTACH PARTITION measure_jp FOR VALUES IN ('jp');
		CREATE TABLE events (id bigserial, at date NOT NULL DEFAULT '2026-06-01', v text, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
		CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
		CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
		INSERT INTO events (at, v) SELECT DATE '2025-06-01' + g * 3, 'e' || g FROM generate_series(1, 100) g;
		CREATE TABLE big (id int PRIMARY KEY, v text);
		CREATE TABLE audited (id int PRIMARY KEY, v text); CREATE TABLE audit_log (n serial PRIMARY KEY, what text);
		CREATE FUNCTION audit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO audit_log (what) VALUES (TG_OP || ' ' || NEW.id); RETURN NEW; END $$;
		CREATE TRIGGER audited_always AFTER INSERT OR UPDATE ON audited FOR EACH ROW EXECUTE FUNCTION audit();
		ALTER TABLE audited ENABLE ALWAYS TRIGGER audited_always;
		CREATE TABLE audited2 (id int PRIMARY KEY);
		CREATE TRIGGER audited2_replica AFTER INSERT ON audited2 FOR EACH ROW EXECUTE FUNCTION audit();
		INSERT INTO audited VALUES (1, 'before backup');
		CREATE TABLE plog (a int, b text) PARTITION BY RANGE (a);
		CREATE TABLE plog_low PARTITION OF plog FOR VALUES FROM (0) TO (100);
		INSERT INTO plog VALUES (1, 'x'), (1, 'x'), (50, 'y');
		CREATE MATERIALIZED VIEW mv_base AS SELECT count(*) AS n, sum(id) AS s FROM t_a;
		CREATE TABLE inh_parent (id int PRIMARY KEY, v text);
		CREATE TABLE inh_child (extra int) INHERITS (inh_parent); ALTER TABLE inh_child ADD PRIMARY KEY (id);
		INSERT INTO inh_parent VALUES (1, 'p1'), (2, 'p2'), (3, 'p3'); INSERT INTO inh_child VALUES (1, 'c1', 0), (2, 'c2', 0), (3, 'c3', 0);
		CREATE TABLE inh_bag (a int, b text); CREATE TABLE inh_bag_child () INHERITS (inh_bag);
		INSERT INTO inh_bag VALUES (1, 'same'), (2, 'same'); INSERT INTO inh_bag_child VALUES (1, 'same'), (2, 'same');
		CREATE TABLE inh_odd (c int, b text, a int) INHERITS (inh_bag); INSERT INTO inh_odd VALUES (7, 'x', 8)`)

	e.mustRun("setup", "--replica-identity-full")
	// FOR ALL TABLES without publish_via_partition_root: changes arrive
	// under the leaf partitions, never the parent, and replay writes the
	// leaves directly.
	if got := e.query1(`SELECT pubviaroot::text || ':' || puballtables::text FROM pg_publication WHERE pubname = 'wayback'`); got != "false:true" {
		t.Fatalf("publication via root:all tables = %s, want false:true", got)
	}
	if got := e.query1(`SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_publication_tables WHERE pubname = 'wayback' AND tablename LIKE 'measure%'`); got != "measure_eu,measure_jp,measure_other,measure_us" {
		t.Fatalf("published partitions of measure: %s", got)
	}
	for _, tbl := range []string{"types_nokey", "dup", "toasty_full", "inh_bag", "inh_bag_child", "plog_low"} {
		if got := e.query1(`SELECT relreplident::text FROM pg_class WHERE relname = $1`, tbl); got != "f" {
			t.Fatalf("setup left %s with replica identity %q, want f (FULL)", tbl, got)
		}
	}
	e.startAgent()
	e.waitBackup(1)

	var states []fidState
	// 1. Every type through the stream: inserts, updates to other edge
	// values, deletes; the keyless copy changes one of two identical rows.
	e.exec(insertTypeRows("types", cols, 101, 12, 5))
	e.exec(insertTypeRows("types_nokey", cols, 101, 12, 5) + insertTypeRows("types_nokey", cols, 101, 12, 5))
	var upd strings.Builder
	for i, c := range cols {
		v := c.vals[(i+1)%len(c.vals)]
		fmt.Fprintf(&upd, "UPDATE types SET %s = %s WHERE rid %% 5 = %d;\n", c.name, v, i%5)
		fmt.Fprintf(&upd, "UPDATE types_nokey SET %s = %s WHERE ctid IN (SELECT min(ctid) FROM types_nokey WHERE rid %% 7 = %d GROUP BY rid);\n", c.name, v, i%7)
	}
	e.exec(upd.String())
	e.exec(`DELETE FROM types WHERE rid IN (3, 104);
		DELETE FROM types_nokey WHERE ctid IN (SELECT min(ctid) FROM types_nokey WHERE rid IN (2, 5, 103, 110) GROUP BY rid)`)
	// Rows that differ only where a type's "=" is looser than identity:
	// box and circle compare areas, citext ignores case, numeric ignores
	// trailing zeros, float says -0 = 0; json has no "=" at all (nor do arrays or composites holding it).
	e.exec(`INSERT INTO types_nokey (rid, bx, circ, ci, num, f8, js, jsa) VALUES
		(500, '(2,2),(0,0)', '<(0,0),1>', 'abc', 1.0, 0, '{"a":1}', '{}'),
		(500, '(4,1),(0,0)', '<(5,5),1>', 'ABC', 1.00, '-0', '{"a":1}', '{}')`)
	e.exec(`UPDATE types_nokey SET txt = 'second' WHERE rid = 500 AND ci = 'ABC'::text`)
	e.exec(`DELETE FROM types_nokey WHERE rid = 500 AND txt IS NULL`)
	// Unchanged TOAST: another column changes, the >8 kB values are not
	// sent again and must survive.
	e.exec(`INSERT INTO toasty SELECT g, ` + bigText + `, decode(` + bigText + `, 'hex'), g FROM generate_series(4, 6) g`)
	e.exec(`UPDATE toasty SET small = small + 100`)
	e.exec(`UPDATE toasty SET big = big || 'tail', small = -small WHERE id IN (2, 5)`)
	e.exec(`INSERT INTO toasty_full SELECT g, ` + bigText + `, g FROM generate_series(4, 5) g;
		UPDATE toasty_full SET small = small + 100; DELETE FROM toasty_full WHERE id = 2`)
	// NULL vs empty.
	e.exec(`INSERT INTO nulls (t, a, b, j, c) VALUES (NULL, '{}', '', NULL, NULL), ('', NULL, NULL, '""', '(,)'), ('', '{NULL}', '\x', '[]', '(0,"")');
		UPDATE nulls SET t = '' WHERE id = 1; UPDATE nulls SET t = NULL, a = NULL WHERE id = 2`)
	// Generated columns are computed on the target, never written.
	e.exec(`INSERT INTO gen (a) VALUES (10), (NULL); UPDATE gen SET a = a + 1 WHERE id <= 3; DELETE FROM gen WHERE id = 4`)
	// Identical rows: change and delete one of two.
	e.exec(`UPDATE dup SET b = 'x2' WHERE ctid = (SELECT min(ctid) FROM dup WHERE a = 1);
		DELETE FROM dup WHERE ctid = (SELECT min(ctid) FROM dup WHERE a = 2);
		UPDATE dup SET a = 30 WHERE ctid = (SELECT max(ctid) FROM dup WHERE a = 3);
		INSERT INTO dup VALUES (4, 'z'), (4, 'z')`)
	// Plain inheritance: a change to the parent's own row must not touch
	// the child's row with the same values.
	e.exec(`UPDATE ONLY inh_parent SET v = 'p1x' WHERE id = 1; DELETE FROM ONLY inh_parent WHERE id = 2;
		UPDATE inh_child SET v = v || '!' WHERE id = 3;
		UPDATE ONLY inh_bag SET b = 'changed' WHERE a = 1; DELETE FROM ONLY inh_bag WHERE a = 2`)
	// A column added with a non-volatile, non-constant default: existing
	// rows read the value computed at the ALTER, which is in no stream.
	// Rows inserted later have their own; a later ALTER must not touch them.
	e.exec(`ALTER TABLE t_b ADD COLUMN added_at timestamptz DEFAULT now(), ADD COLUMN k int DEFAULT 5`)
	time.Sleep(20 * time.Millisecond)
	e.exec(`INSERT INTO t_b (id) VALUES (6)`)
	e.exec(`ALTER TABLE t_b ADD COLUMN note text DEFAULT 'n'`)
	// Tables created with their rows: the rows arrive as INSERTs (before
	// the DDL message, which fires at the command's end).
	e.exec(`CREATE TABLE ctas AS SELECT id, v FROM t_plain WHERE id <= 5`)
	e.exec(`SELECT id, v || '!' AS v INTO sel_into FROM t_plain WHERE id > 5`)
	e.exec(`CREATE MATERIALIZED VIEW mv AS SELECT count(*) AS n, string_agg(v, ',' ORDER BY id) AS vs FROM t_plain`)
	e.exec(`INSERT INTO ctas VALUES (99, 'later'); UPDATE sel_into SET v = 'x' WHERE id = 6`)
	states = append(states, e.fidState("types, TOAST, NULL/empty, generated, duplicates, inheritance, CREATE TABLE AS"))

	// 2. TRUNCATE in every form, partitions.
	e.exec(`TRUNCATE t_plain; INSERT INTO t_plain (v) VALUES ('after plain truncate')`)
	e.exec(`TRUNCATE t_a, t_b; INSERT INTO t_b VALUES (42)`)
	e.exec(`TRUNCATE t_parent CASCADE; INSERT INTO t_parent VALUES (7); INSERT INTO t_child VALUES (1, 7)`)
	e.exec(`TRUNCATE t_ident RESTART IDENTITY; INSERT INTO t_ident (v) VALUES ('one'), ('two'), ('three')`)
	e.exec(`TRUNCATE ONLY inh_parent; INSERT INTO inh_parent VALUES (9, 'p9')`)
	e.exec(`REFRESH MATERIALIZED VIEW mv; REFRESH MATERIALIZED VIEW mv_base`)
	// Commands that cannot run in a transaction block on the source; replay
	// runs every DDL inside one.
	e.exec(`CREATE INDEX CONCURRENTLY t_plain_v ON t_plain (v)`)
	e.exec(`CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS mv_n ON mv (n)`)
	e.exec(`REFRESH MATERIALIZED VIEW CONCURRENTLY mv`)
	e.exec(`DROP INDEX CONCURRENTLY t_plain_v`)
	// An extension's script runs many DDL commands, each firing the
	// capture trigger under the one query string; so does CREATE SCHEMA
	// with elements. Only the outer statement replays.
	e.exec(`CREATE EXTENSION pg_trgm; CREATE TABLE trgm (id int PRIMARY KEY, s text); CREATE INDEX trgm_s ON trgm USING gin (s gin_trgm_ops)`)
	e.exec(`INSERT INTO trgm VALUES (1, 'hello'), (2, 'world')`)
	e.exec(`CREATE SCHEMA elems CREATE TABLE e1 (id int PRIMARY KEY) CREATE VIEW v1 AS SELECT id FROM e1; INSERT INTO elems.e1 VALUES (1)`)
	e.exec(`TRUNCATE events; INSERT INTO events (at, v) VALUES ('2026-05-05', 'after truncate'), ('2025-05-05', 'old year')`)
	e.exec(`INSERT INTO measure VALUES (100, 'eu', 1), (101, 'us', 1), (102, 'zz', 1);
		UPDATE measure SET region = 'us' WHERE id IN (3, 100);
		UPDATE measure SET region = 'qq' WHERE id = 101;
		UPDATE measure SET region = 'eu' WHERE region = 'xx' AND id < 10`)
	e.exec(`CREATE TABLE measure_ap (LIKE measure INCLUDING ALL); INSERT INTO measure_ap VALUES (200, 'ap', 5), (201, 'ap', 6)`)
	e.exec(`ALTER TABLE measure ATTACH PARTITION measure_ap FOR VALUES IN ('ap')`)
	e.exec(`INSERT INTO measure VALUES (202, 'ap', 7); UPDATE measure SET v = v * 10 WHERE region IN ('ap', 'jp')`)
	e.exec(`ALTER TABLE measure DETACH PARTITION measure_us`)
	e.exec(`INSERT INTO measure_us VALUES (300, 'us', 1); INSERT INTO measure VALUES (301, 'us', 2); DELETE FROM measure_us WHERE id = 1`)
	e.exec(`ALTER TABLE events DETACH PARTITION events_2025 CONCURRENTLY`)
	e.exec(`INSERT INTO events_2025 (at, v) VALUES ('2025-12-31', 'detached')`)
	// Literals in DDL parse as the source session parsed them (the
	// database's DateStyle SQL, DMY and TimeZone America/St_Johns above):
	// '03/04/2026' is the 3rd of April, and the partition bounds are St
	// John's midnights, so the first row belongs to January.
	e.exec(`CREATE TABLE ev_tz (at timestamptz NOT NULL, v int) PARTITION BY RANGE (at);
		CREATE TABLE ev_tz_jan PARTITION OF ev_tz FOR VALUES FROM ('2026-01-01 00:00') TO ('2026-02-01 00:00');
		CREATE TABLE ev_tz_rest PARTITION OF ev_tz DEFAULT`)
	e.exec(`INSERT INTO ev_tz VALUES ('2026-01-31 23:30', 1), ('2026-01-01 00:10', 2), ('2026-02-01 00:30', 3)`)
	e.exec(`ALTER TABLE gen ADD COLUMN d date DEFAULT '03/04/2026'; INSERT INTO gen (a) VALUES (40)`)
	// A keyless table with a type from its own schema, created and changed
	// in one transaction under another search_path, changed again later
	// under the default one: replay must name the type the same way in
	// both.
	e.exec(`CREATE SCHEMA fs; SET search_path = fs, public; CREATE TYPE kind AS ENUM ('a', 'b'); CREATE TABLE bag (k kind, n int);
		INSERT INTO bag VALUES ('a', 1), ('a', 1), ('b', 2); UPDATE bag SET n = 3 WHERE k = 'b'`)
	e.exec(`UPDATE fs.bag SET n = 4 WHERE k = 'b'; DELETE FROM fs.bag WHERE ctid = (SELECT min(ctid) FROM fs.bag WHERE k = 'a')`)
	// Acceptance 4 after schema changes: a table that loses its key, or
	// its replica identity index, must keep taking UPDATE and DELETE.
	e.exec(`CREATE TABLE pkdrop (id int PRIMARY KEY, v text); INSERT INTO pkdrop VALUES (1, 'a'), (2, 'b'), (3, 'b2')`)
	e.exec(`ALTER TABLE pkdrop DROP CONSTRAINT pkdrop_pkey`)
	e.exec(`UPDATE pkdrop SET v = 'a2' WHERE id = 1; DELETE FROM pkdrop WHERE v = 'b'`)
	// Triggers that fire even under session_replication_role = replica:
	// their effects are in the stream already and must not happen twice.
	e.exec(`INSERT INTO audited VALUES (2, 'after'); UPDATE audited SET v = 'changed' WHERE id = 1`)
	e.exec(`ALTER TABLE audited2 ENABLE REPLICA TRIGGER audited2_replica; INSERT INTO audited2 VALUES (1)`)
	// Keyless partitions: one from before setup, one created now, one
	// whose identity a user resets to DEFAULT.
	e.exec(`CREATE TABLE plog_high PARTITION OF plog FOR VALUES FROM (100) TO (200); INSERT INTO plog VALUES (150, 'z'), (150, 'z')`)
	e.exec(`ALTER TABLE plog_low REPLICA IDENTITY DEFAULT`)
	e.exec(`UPDATE plog SET b = 'x2' WHERE ctid = (SELECT min(ctid) FROM plog_low WHERE a = 1) AND a = 1;
		DELETE FROM plog WHERE ctid = (SELECT min(ctid) FROM plog_high) AND a = 150; UPDATE plog SET a = 160 WHERE a = 50`)
	e.exec(`CREATE TABLE ridx (id int NOT NULL, v text); CREATE UNIQUE INDEX ridx_id ON ridx (id); ALTER TABLE ridx REPLICA IDENTITY USING INDEX ridx_id;
		INSERT INTO ridx VALUES (1, 'a'), (2, 'b')`)
	e.exec(`DROP INDEX ridx_id`)
	e.exec(`UPDATE ridx SET v = 'a2' WHERE id = 1; DELETE FROM ridx WHERE id = 2`)
	// Savepoints, as migration tools and psql's ON_ERROR_ROLLBACK use them:
	// DDL and rows inside released and rolled-back subtransactions.
	e.exec(`BEGIN; SAVEPOINT a; CREATE TABLE sp_t (id int PRIMARY KEY, v text); RELEASE a;
		INSERT INTO sp_t VALUES (1, 'top');
		SAVEPOINT b; INSERT INTO sp_t VALUES (2, 'rolled back'); ALTER TABLE sp_t ADD COLUMN gone int; ROLLBACK TO b;
		SAVEPOINT c; ALTER TABLE sp_t ADD COLUMN kept int DEFAULT 7; INSERT INTO sp_t VALUES (3, 'sub', 8); RELEASE c;
		UPDATE sp_t SET kept = 9 WHERE id = 1; COMMIT`)
	states = append(states, e.fidState("truncates, partitions, DDL literals, search_path, lost keys, savepoints"))

	// 3. One transaction far beyond logical_decoding_work_mem (64kB): the
	// server spills it to disk and sends it at commit.
	spilledBefore := e.spilled()
	e.exec(`BEGIN; INSERT INTO big SELECT g, 'row ' || g FROM generate_series(1, 50000) g;
		UPDATE big SET v = v || '!' WHERE id % 10 = 0; DELETE FROM big WHERE id % 100 = 1;
		INSERT INTO toasty SELECT g, ` + bigText + `, decode(` + bigText + `, 'hex'), g FROM generate_series(7, 9) g;
		UPDATE toasty SET small = small + 1; UPDATE toasty SET id = id + 1000 WHERE id = 6; COMMIT`)
	e.exec(`INSERT INTO gen (a) VALUES (77); INSERT INTO t_plain (v) VALUES ('last')`)
	// Sequences created after the base backup that handed out exactly their
	// first value: the restored one must not hand it out again.
	e.exec(`CREATE TABLE fresh (id serial PRIMARY KEY, v text); INSERT INTO fresh (v) VALUES ('gone'); DELETE FROM fresh`)
	e.exec(`CREATE SEQUENCE standalone; SELECT nextval('standalone')`)
	states = append(states, e.fidState("large spilled transaction"))

	// Let the agent record the sequences' final positions, then have the
	// archive catch up past that record.
	e.exec(`INSERT INTO dup VALUES (9, 'sync')`)
	time.Sleep(time.Second)
	e.waitArchived()
	deadline := time.Now().Add(30 * time.Second)
	for e.spilled() <= spilledBefore {
		if time.Now().After(deadline) {
			t.Fatalf("the server never spilled a transaction for the slot (spill_txns stayed %d): the large-transaction case was not exercised", spilledBefore)
		}
		time.Sleep(200 * time.Millisecond)
	}
	sourceNow := nextValues(t, e.dsn)

	for i, s := range states {
		db := fmt.Sprintf("fid_%d", i)
		e.mustRun("restore", "--target-dsn", e.pg.DSN(db), "--to-time", s.at.Format(time.RFC3339Nano))
		e.assertRestored(db, s.sums, s.name)
		tables := make([]string, 0, len(s.sums))
		for k := range s.sums {
			tables = append(tables, k)
		}
		assertSameRows(t, s.name, s.rows, tableRows(t, e.pg.DSN(db), tables))
		// Materialized views: created from the base backup's schema or by
		// replayed DDL, refreshed where the source refreshed them.
		if got := e.matviews(e.pg.DSN(db)); !maps.Equal(got, s.views) {
			t.Fatalf("%s: materialized views restored as %q, source had %q", s.name, got, s.views)
		}
		// Acceptance 3. The bound is the largest value the source's
		// sequence had after T: its value now, unless RESTART IDENTITY
		// lowered it since. Nothing handed out a value after the last
		// state, so the last restore is exact, not just bounded.
		upper := map[string]int64{}
		for col := range s.next {
			upper[col] = sourceNow[col]
			for _, later := range states[i:] {
				upper[col] = max(upper[col], later.next[col])
			}
		}
		assertSequences(t, s.name, e.pg.DSN(db), s.next, upper, i == len(states)-1)
		// Extensions come back with the schema (pg_dump writes CREATE
		// EXTENSION); the target server must have them installed.
		if got := e.query1On(db, `SELECT string_agg(extname, ',' ORDER BY extname) FROM pg_extension WHERE extname IN ('citext', 'hstore')`); got != "citext,hstore" {
			t.Fatalf("%s: restored database has extensions %q, want citext,hstore", s.name, got)
		}
	}
	// The exactness check above relies on the source standing still.
	for col, want := range states[len(states)-1].next {
		if sourceNow[col] != want {
			t.Fatalf("source sequence %s moved after the last state (%d -> %d): the test itself is wrong", col, want, sourceNow[col])
		}
	}
}
