package pgcopy_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/wayback-pitr/wayback/basebackup"
	"github.com/wayback-pitr/wayback/pgcopy"
	"github.com/wayback-pitr/wayback/testenv"
	"github.com/wayback-pitr/wayback/wal"
)

// typeCase fills a one-column table of type typ: NULL, the edge values
// (SQL expressions) and randomRows rows of each random expression of g.
type typeCase struct {
	typ    string
	edges  []string
	random []string
	arrays []string // extra array literals of typ[], beyond those built from the rows
	values any      // a Go slice of further values, sent as a parameter
}

const randomRows = 3000

var textTypes = []string{`''`, `'a b'`, `E'tab\there'`, `E'new\nline\r'`, `'ünïcödé ✓ 𝄞'`, `'"quoted"'`,
	`'back\slash'`, `'NULL'`, `'null'`, `'{a,b}'`, `' lead'`, `'trail '`, `repeat('x', 100000)`}

var typeCases = []typeCase{
	{typ: "bool", edges: []string{"true", "false"}, random: []string{"random() < 0.5"}},
	{typ: "int2", edges: []string{"-32768", "32767", "0", "-1"}, random: []string{"((random()*65535)::int - 32768)::int2", "(g % 200 - 100)::int2"}},
	{typ: "int4", edges: []string{"-2147483648", "2147483647", "0", "-1"},
		random: []string{"(floor(random()*4294967296) - 2147483648)::int4", "g - 1500"},
		arrays: []string{"'[0:1]={1,2}'", "'{{1,2},{3,4}}'", "'[2:3][-1:0]={{1,NULL},{3,4}}'", "'{{{1}}}'", "'[-2147483648:-2147483648]={7}'"}},
	{typ: "int8", edges: []string{"-9223372036854775808", "9223372036854775807", "0"},
		random: []string{"floor((random()-0.5) * 1.8e19)::int8", "(g * 7919 - 10000)::int8"}},
	{typ: "oid", edges: []string{"0", "4294967295"}, random: []string{"floor(random()*4294967295)::int8::oid"}},
	{typ: "text", edges: textTypes, random: []string{"md5(g::text) || E'\\t' || chr(32 + g % 95) || repeat(' ', g % 3)", "chr(1 + (g * 31) % 2000)"}},
	{typ: "varchar", edges: textTypes, random: []string{"md5(g::text) || chr(32 + g % 95)"}},
	{typ: "varchar(5)", edges: []string{"''", "'abcde'", "'ä'"}, random: []string{"left(md5(g::text), g % 6)"}},
	{typ: "character(10)", edges: []string{"''", "'ab'", "'ünï'", "'abcdefghij'", "' x'"}, random: []string{"left(md5(g::text), g % 11)"}},
	{typ: "bpchar", edges: []string{"''", "'ab  '"}, random: []string{"md5(g::text) || repeat(' ', g % 3)"}},
	{typ: "name", edges: []string{"''", "'pg_class'", "repeat('n', 63)", "'a b\"c'"}, random: []string{"md5(g::text)::name"}},
	{typ: `"char"`, edges: []string{`''`, `'a'`, `'"'`, `'\'`, `' '`, `','`}, random: []string{`(g % 256 - 128)::"char"`}},
	{typ: "bytea", edges: []string{`'\x'`, `'\x00ff'`, `decode(repeat('ab', 70000), 'hex')`},
		random: []string{"decode(md5(g::text), 'hex')", "decode(repeat(to_hex(g % 16), (g % 7) * 2), 'hex')"}},
	{typ: "numeric", edges: []string{"'NaN'", "'Infinity'", "'-Infinity'", "0", "'0.000'", "-1.5", "'1e1000'", "'-1e-1000'",
		"0.0000001", "123456789.123456789", "10000", "9999.9999", "-0.0001", "1.000000000000000000000", "'1e-16383'",
		"'9e131071'", "0.1", "100000000", "1e-4", "12345678901234567890.0987654321"},
		random: []string{"(random() * 10 ^ (g % 40 - 20))::numeric", "round(random()::numeric * 10::numeric ^ (g % 30), g % 10)",
			"((random() - 0.5) * 1e20)::numeric(30,5)", "(g - 1500)::numeric / 7", "trunc(random()::numeric * 10::numeric ^ (g % 300 - 150), g % 200)"}},
	{typ: "timestamptz", edges: []string{"'infinity'", "'-infinity'", "'2000-01-01'", "'1999-12-31 23:59:59.999999'", "'4713-11-24 00:00:00 BC'",
		"'294276-12-31 23:59:59.999999'", "'0001-01-01 BC'", "'0001-12-31 23:59:59.5 BC'", "'10000-01-01'", "'1970-01-01 00:00:00.5'", "'2000-02-29 12:00:00.000010'"},
		random: []string{"'2000-01-01'::timestamptz + (random() - 0.5) * interval '1 day' * 10 ^ (g % 7)",
			"'1970-01-01'::timestamptz + g::bigint * 1234567 * interval '1 microsecond'", "'4713-11-24 BC'::timestamptz + random() * interval '100000000 days'"}},
	{typ: "timestamp", edges: []string{"'infinity'", "'-infinity'", "'2000-01-01'", "'1999-12-31 23:59:59.999999'", "'4713-11-24 00:00:00 BC'",
		"'294276-12-31 23:59:59.999999'", "'0001-01-01 BC'", "'10000-01-01'"},
		random: []string{"'2000-01-01'::timestamp + (random() - 0.5) * interval '1 day' * 10 ^ (g % 7)", "'4713-11-24 BC'::timestamp + random() * interval '100000000 days'"}},
	{typ: "date", edges: []string{"'infinity'", "'-infinity'", "'4713-11-24 BC'", "'5874897-12-31'", "'0001-01-01'", "'0001-12-31 BC'", "'10000-01-01'", "'2000-02-29'", "'1900-02-28'"},
		random: []string{"'4713-11-24 BC'::date + (random() * 2e6 * (1 + g % 3))::int", "'2000-01-01'::date + (random() * 2.1e9)::int", "'2000-01-01'::date + (g - 1500) * 17"}},
	{typ: "uuid", edges: []string{"'00000000-0000-0000-0000-000000000000'", "'ffffffff-ffff-ffff-ffff-ffffffffffff'"}, random: []string{"gen_random_uuid()"}},
	{typ: "json", edges: []string{`'{"a": 1}'`, `'[1, 2,   3]'`, `'"str\u0000 é"'`, `'null'`, `'  {"b":[]}  '`},
		random: []string{"json_build_object('k', g, 'v', md5(g::text), 'f', random())"}},
	{typ: "jsonb", edges: []string{`'{"b": 1, "a": [1,2,{"c": null}]}'`, `'"x"'`, `'null'`, `'1.50'`, `'{"é": "\u00e9\n"}'`, `'[]'`},
		random: []string{"jsonb_build_object('k', g, 'v', md5(g::text), 'n', (random() * 1e10)::numeric)"}},
	{typ: "float8", edges: []string{"'NaN'", "'Infinity'", "'-Infinity'", "'-0'", "0", "1e308", "'1.7976931348623157e308'", "2.2250738585072014e-308",
		"'5e-324'", "'4.9e-324'", "0.1", "1e15", "1e14", "999999999999999", "123456789012345678", "0.0001", "0.00001", "'1e-5'", "1", "-1.5", "100", "1e16", "1e100", "0.3"},
		values: randomFloats(100000, func(r *rand.Rand) any { return math.Float64frombits(r.Uint64()) }),
		random: []string{"random() * 10 ^ (g % 600 - 300)", "(g - 1500)::float8 / 7", "1::float8 / g", "random()", "floor(random() * 10 ^ (g % 20))"}},
	{typ: "float4", edges: []string{"'NaN'", "'Infinity'", "'-Infinity'", "'-0'", "0", "'1e-45'", "'1.4e-45'", "'3.4028235e38'", "'1.17549435e-38'",
		"0.1", "100000", "1000000", "999999", "0.0001", "0.00001", "1e10", "16777217"},
		values: randomFloats(100000, func(r *rand.Rand) any { return math.Float32frombits(r.Uint32()) }),
		random: []string{"(random() * 10 ^ (g % 76 - 38))::float4", "((g - 1500)::float8 / 7)::float4", "random()::float4", "floor(random() * 10 ^ (g % 10))::float4"}},
	{typ: "time", edges: []string{"'00:00'", "'24:00:00'", "'23:59:59.999999'", "'12:34:56.5'", "'00:00:00.000001'"},
		random: []string{"(random() * interval '24 hours')::time", "'00:00'::time + g::bigint * 1000003 * interval '1 microsecond'"}},
	{typ: "timetz", edges: []string{"'00:00+00'", "'12:34:56.789-05:30'", "'23:59:59.999999+15:59:59'", "'01:02:03-15:59'", "'24:00:00-01'"},
		random: []string{"((random() * interval '24 hours')::time::text || CASE WHEN g % 2 = 0 THEN '+' ELSE '-' END || (g % 16) || ':' || (g % 60) || ':' || (g % 7))::timetz"}},
	{typ: "inet", edges: []string{"'0.0.0.0'", "'255.255.255.255/0'", "'192.168.1.5/24'", "'10.0.0.0/8'", "'::'", "'::1'", "'::ffff:1.2.3.4'",
		"'::1.2.3.4'", "'::0.0.0.2'", "'::2:0'", "'1::'", "'1:0:0:2::'", "'2001:db8::1/64'", "'fe80::1:0:0:1'", "'1:0:0:1:0:0:0:1'", "'1:0:1:0:1:0:1:0'",
		"'::ffff:0:0/96'", "'::ffff:0.0.0.0'", "'0:0:0:0:0:1:0:0'", "'::/0'", "'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128'", "'::abcd:1.2.3.4'"},
		random: []string{"set_masklen('0.0.0.0'::inet + floor(random() * 4294967296)::bigint, g % 33)",
			"(array_to_string(ARRAY(SELECT CASE WHEN random() < 0.6 THEN '0' ELSE to_hex((random() * 65535)::int) END FROM generate_series(1, 8) WHERE g > 0), ':') || '/' || (g % 129))::inet",
			"('::' || CASE WHEN g % 3 = 0 THEN 'ffff:' ELSE '' END || (g % 256) || '.' || (g % 7) || '.0.' || (g % 2))::inet"}},
	{typ: "cidr", edges: []string{"'0.0.0.0/0'", "'10.0.0.0/8'", "'192.168.1.5/32'", "'::/0'", "'::1/128'", "'2001:db8::/32'", "'::ffff:1.2.3.4/128'"},
		random: []string{"network(set_masklen('0.0.0.0'::inet + floor(random() * 4294967296)::bigint, g % 33))",
			"network((array_to_string(ARRAY(SELECT CASE WHEN random() < 0.6 THEN '0' ELSE to_hex((random() * 65535)::int) END FROM generate_series(1, 8) WHERE g > 0), ':') || '/' || (g % 129))::inet)"}},
	{typ: "money", edges: []string{"0", "'-92233720368547758.08'", "'92233720368547758.07'", "1.5", "-0.01", "0.01", "1000", "-1234567.89", "999.99"},
		random: []string{"((random() - 0.5) * 10 ^ (g % 18))::numeric(30,2)::money", "(g - 1500)::money"}},
	{typ: "interval", edges: []string{"'0'", "'1 year'", "'-1 year 2 mons'", "'1 day -00:00:01'", "'-1 days +1 hour'", "'1 mon -1 day'",
		"'178000000 years'", "'-178000000 years'", "'2147483647 days'", "'-2147483648 days'", "'2562047788:00:54.775807'", "'-2562047788:00:54.775807'::interval - '0.000001 sec'",
		"'0.000001 sec'", "'-0.000001 sec'", "'1 year 2 mons 3 days 04:05:06.789'", "'-1 mons -2 days -3 sec'", "'1 mon'", "'1 day'", "'-1 mon +1 day -1 sec'"},
		random: []string{"make_interval(g % 25 - 12, g % 13 - 6, 0, g % 61 - 30, 0, 0, (random() - 0.5) * 1e6)", "random() * interval '1000 days 3 mons'",
			"(g - 1500) * interval '1 hour 1 sec'"}},
}

// randomFloats returns n floats of random bit patterns (all exponents,
// subnormals, NaN payloads) as a []float64 or []float32.
func randomFloats(n int, gen func(*rand.Rand) any) any {
	r := rand.New(rand.NewPCG(7, 7))
	switch gen(r).(type) {
	case float32:
		out := make([]float32, n)
		for i := range out {
			out[i] = gen(r).(float32)
		}
		return out
	}
	out := make([]float64, n)
	for i := range out {
		out[i] = gen(r).(float64)
	}
	return out
}

// TestAppendText proves each type's conversion exact: PostgreSQL prints
// every value of a table (edges, random values, NULL) and arrays of them
// (one- and two-dimensional, lower bound 0, empty) under the pinned text
// settings, and AppendText of the binary COPY of the same rows must give
// the same bytes, row by row. Only a type proven here may be Supported.
func TestAppendText(t *testing.T) {
	ctx := t.Context()
	c := testenv.NewCluster(t, testenv.Options{})
	conn, err := wal.ConnectText(ctx, c.DSN(""))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for i, tc := range typeCases {
		t.Run(tc.typ, func(t *testing.T) {
			s, a := fmt.Sprintf("s%d", i), fmt.Sprintf("a%d", i)
			sql := fmt.Sprintf("CREATE TABLE %s (id bigserial, v %s); INSERT INTO %[1]s (v) VALUES (NULL)", s, tc.typ)
			for _, e := range tc.edges {
				sql += fmt.Sprintf(", ((%s)::%s)", e, tc.typ)
			}
			sql += ";\n"
			for _, r := range tc.random {
				sql += fmt.Sprintf("INSERT INTO %s (v) SELECT %s FROM generate_series(1, %d) g;\n", s, r, randomRows)
			}
			if _, err := conn.Exec(ctx, sql); err != nil {
				t.Fatalf("filling the table: %v", err)
			}
			if tc.values != nil {
				if _, err := conn.Exec(ctx, fmt.Sprintf("INSERT INTO %s (v) SELECT unnest($1::%s[])", s, tc.typ), tc.values); err != nil {
					t.Fatalf("inserting values from Go: %v", err)
				}
			}
			sql = fmt.Sprintf(`
				CREATE TABLE %[2]s AS SELECT id / 5 AS id, array_agg(v ORDER BY id) AS v FROM %[1]s GROUP BY id / 5;
				INSERT INTO %[2]s SELECT 1000000 + id / 6, array_agg(ARRAY[v, v] ORDER BY id) FROM %[1]s GROUP BY id / 6;
				UPDATE %[2]s SET v[0] = v[1] WHERE id %% 4 = 0 AND id < 1000000;
				INSERT INTO %[2]s VALUES (-1, '{}'), (-2, NULL);`, s, a)
			for j, lit := range tc.arrays {
				sql += fmt.Sprintf("INSERT INTO %s VALUES (%d, %s);\n", a, -10-j, lit)
			}
			if _, err := conn.Exec(ctx, sql); err != nil {
				t.Fatalf("filling the array table: %v", err)
			}
			checkColumn(t, ctx, conn, s)
			checkColumn(t, ctx, conn, a)
		})
	}
	t.Run("copy text", func(t *testing.T) { checkCopyText(t, ctx, conn) })
}

// checkCopyText puts a column of every type and array type above into one
// table and compares, tuple by tuple, AppendText of its COPY BINARY with its
// COPY text decoded by basebackup.ParseCopyText: the way a backup will use
// the two formats.
func checkCopyText(t *testing.T, ctx context.Context, conn *pgx.Conn) {
	sql := ""
	for i := range typeCases {
		sql += fmt.Sprintf("CREATE INDEX ON s%d (id); CREATE INDEX ON a%[1]d (id);\n", i)
	}
	sql += "CREATE TABLE allt AS SELECT g AS id"
	for i := range typeCases {
		// 1-D, 2-D and the literal edge arrays in turn
		sql += fmt.Sprintf(`, (SELECT v FROM s%d WHERE id = g) AS s%[1]d,
			(SELECT v FROM a%[1]d WHERE id = CASE g %% 4 WHEN 0 THEN 1000000 + g / 3 WHEN 1 THEN -(g %% 15) ELSE g / 3 END) AS a%[1]d`, i)
	}
	sql += " FROM generate_series(1, 2000) g"
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatal(err)
	}
	rows, err := conn.Query(ctx, "SELECT atttypid FROM pg_attribute WHERE attrelid = 'allt'::regclass AND attnum > 0 ORDER BY attnum")
	if err != nil {
		t.Fatal(err)
	}
	oids, err := pgx.CollectRows(rows, pgx.RowTo[uint32])
	if err != nil {
		t.Fatal(err)
	}
	var text, bin bytes.Buffer
	if _, err := conn.PgConn().CopyTo(ctx, &text, "COPY allt TO STDOUT"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.PgConn().CopyTo(ctx, &bin, "COPY allt TO STDOUT (FORMAT binary)"); err != nil {
		t.Fatal(err)
	}
	r := pgcopy.NewBinaryReader(&bin)
	lines := bytes.SplitAfter(text.Bytes(), []byte("\n"))
	var got []byte
	n := 0
	for ; ; n++ {
		fields, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		want, err := basebackup.ParseCopyText(lines[n])
		if err != nil || len(want) != len(fields) || len(fields) != len(oids) {
			t.Fatalf("row %d: %d text fields (%v), %d binary, %d columns", n, len(want), err, len(fields), len(oids))
		}
		for i, f := range fields {
			if f == nil {
				if want[i].Kind != wal.KindNull {
					t.Fatalf("row %d column %d: NULL only in binary", n, i)
				}
				continue
			}
			if got, err = pgcopy.AppendText(got[:0], oids[i], f); err != nil || !bytes.Equal(got, want[i].Data) {
				t.Fatalf("row %d column %d (type %d): %v\n got %s\nwant %s", n, i, oids[i], err, short(string(got)), short(string(want[i].Data)))
			}
		}
	}
	if n != 2000 || n != len(lines)-1 {
		t.Fatalf("%d binary rows, %d text lines", n, len(lines))
	}
}

// checkColumn compares PostgreSQL's text output of table.v with AppendText
// of its binary COPY, row by row.
func checkColumn(t *testing.T, ctx context.Context, conn *pgx.Conn, table string) {
	t.Helper()
	var oid uint32
	if err := conn.QueryRow(ctx, "SELECT atttypid FROM pg_attribute WHERE attrelid = $1::regclass AND attname = 'v'", table).Scan(&oid); err != nil {
		t.Fatal(err)
	}
	if !pgcopy.Supported(oid) {
		t.Fatalf("%s: type OID %d not Supported", table, oid)
	}
	rows, err := conn.Query(ctx, "SELECT v FROM "+table+" ORDER BY id", pgx.QueryResultFormats{pgx.TextFormatCode})
	if err != nil {
		t.Fatal(err)
	}
	var want [][]byte
	for rows.Next() {
		v := rows.RawValues()[0]
		if v != nil {
			v = bytes.Clone(v)
		}
		want = append(want, v)
	}
	if rows.Err() != nil {
		t.Fatal(rows.Err())
	}
	var buf bytes.Buffer
	if _, err := conn.PgConn().CopyTo(ctx, &buf, "COPY (SELECT v FROM "+table+" ORDER BY id) TO STDOUT (FORMAT binary)"); err != nil {
		t.Fatal(err)
	}
	r := pgcopy.NewBinaryReader(&buf)
	bad := 0
	var got []byte
	for i := 0; ; i++ {
		f, err := r.Next()
		if err == io.EOF {
			if i != len(want) {
				t.Fatalf("%s: %d binary rows, %d text rows", table, i, len(want))
			}
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if i >= len(want) {
			t.Fatalf("%s: more binary rows than text rows", table)
		}
		if f[0] == nil || want[i] == nil {
			if (f[0] == nil) != (want[i] == nil) {
				t.Fatalf("%s row %d: NULL in one format only", table, i)
			}
			continue
		}
		got, err = pgcopy.AppendText(got[:0], oid, f[0])
		if err != nil || !bytes.Equal(got, want[i]) {
			if bad++; bad <= 10 {
				t.Errorf("%s row %d: binary %s\n got %s (err %v)\nwant %s", table, i, short(fmt.Sprintf("%x", f[0])), short(string(got)), err, short(string(want[i])))
			}
		}
	}
	if bad > 0 {
		t.Errorf("%s: %d of %d values differ", table, bad, len(want))
	}
	if len(want) < 10 {
		t.Fatalf("%s: only %d rows", table, len(want))
	}
}

func short(s string) string {
	if len(s) > 200 {
		return s[:200] + fmt.Sprintf("...(%d bytes)", len(s))
	}
	return s
}

// TestSupportedMatches checks that AppendText refuses as unsupported
// exactly the types Supported denies.
func TestSupportedMatches(t *testing.T) {
	n := 0
	for oid := uint32(0); oid < 20000; oid++ {
		_, err := pgcopy.AppendText(nil, oid, nil)
		if errors.Is(err, pgcopy.ErrUnsupported) == pgcopy.Supported(oid) {
			t.Errorf("type OID %d: Supported %v, AppendText error %v", oid, pgcopy.Supported(oid), err)
		}
		if pgcopy.Supported(oid) {
			n++
		}
	}
	if n != 2*len(typeCases)-4 {
		t.Errorf("%d types Supported, want the %d tested ones and their arrays", n, 2*len(typeCases)-4)
	}
}

// TestUnsupported checks that a user-defined enum and composite type, and
// arrays of them, are not Supported and that AppendText refuses them.
func TestUnsupported(t *testing.T) {
	ctx := t.Context()
	c := testenv.NewCluster(t, testenv.Options{})
	dsn := c.DSN("")
	if err := testenv.Exec(ctx, dsn, `CREATE TYPE mood AS ENUM ('sad', 'ok'); CREATE TYPE pair AS (a int, b text)`); err != nil {
		t.Fatal(err)
	}
	rows, err := testenv.QueryRows(ctx, dsn, `SELECT oid FROM pg_type WHERE typname IN ('mood', 'pair', '_mood', '_pair', 'point', 'xml', 'tsvector')`)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 7 {
		t.Fatalf("found %d of 7 types", len(rows))
	}
	for _, row := range rows {
		var oid uint32
		fmt.Sscan(row[0], &oid)
		if pgcopy.Supported(oid) {
			t.Errorf("type OID %d Supported", oid)
		}
		if out, err := pgcopy.AppendText([]byte("x"), oid, []byte{0, 0, 0, 1}); !errors.Is(err, pgcopy.ErrUnsupported) || string(out) != "x" {
			t.Errorf("AppendText of type OID %d: %q, %v", oid, out, err)
		}
	}
	// A malformed value of a supported type is refused too.
	for _, v := range []struct {
		oid uint32
		v   []byte
	}{{pgcopy.Int4OID, []byte{1, 2}}, {pgcopy.NumericOID, []byte{0, 1, 0, 0, 0, 0, 0, 0}}, {pgcopy.JSONBOID, []byte("{}")},
		{pgcopy.NumericOID, []byte{0, 1, 0, 0, 0x12, 0x34, 0, 0, 0, 1}}, {1007, []byte{0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 25, 0, 0, 0, 1, 0, 0, 0, 1}}} {
		if _, err := pgcopy.AppendText(nil, v.oid, v.v); err == nil {
			t.Errorf("AppendText(%d, %x) accepted a malformed value", v.oid, v.v)
		}
	}
	if !pgcopy.Supported(pgcopy.Int4OID) {
		t.Error("int4 not Supported")
	}
}

// TestArrayOfDomain reads arrays of domains as arrays of their base types:
// PostgreSQL's binary form of one names the domain as its element type (a
// user-defined OID), and AppendText must print what array_out prints. A
// built-in element type other than the array's is still refused.
func TestArrayOfDomain(t *testing.T) {
	ctx := t.Context()
	c := testenv.NewCluster(t, testenv.Options{})
	conn, err := wal.ConnectText(ctx, c.DSN(""))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, `CREATE DOMAIN dt AS text CHECK (VALUE <> 'x');
		CREATE DOMAIN dn AS numeric(6,2); CREATE DOMAIN dd AS dn;`); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		lit, domain string
		array       uint32 // the base type's array type
	}{
		{`ARRAY['a b', NULL, '"q"', '', 'NULL', 'c,d']::dt[]`, "dt", 1009},
		{`ARRAY[ARRAY['a', 'b'], ARRAY['{', NULL]]::dt[]`, "dt", 1009},
		{`'{}'::dt[]`, "dt", 1009},
		{`'[0:2]={1.5,-2,NaN}'::dd[]`, "dd", 1231},
	} {
		var send []byte
		var text string
		var domain uint32
		if err := conn.QueryRow(ctx, "SELECT array_send("+tc.lit+"), ("+tc.lit+")::text, '"+tc.domain+"'::regtype::oid").Scan(&send, &text, &domain); err != nil {
			t.Fatal(err)
		}
		if got := binary.BigEndian.Uint32(send[8:]); got != domain {
			t.Errorf("%s: binary array names element type %d, not the domain's %d", tc.lit, got, domain)
		}
		got, err := pgcopy.AppendText(nil, tc.array, send)
		if err != nil || string(got) != text {
			t.Errorf("%s: AppendText gives %q (%v), PostgreSQL prints %q", tc.lit, got, err, text)
		}
		// The same array naming a built-in type is a misread.
		binary.BigEndian.PutUint32(send[8:], pgcopy.Int4OID)
		if _, err := pgcopy.AppendText(nil, tc.array, send); err == nil {
			t.Errorf("%s: AppendText accepted an array naming int4 as its element type", tc.lit)
		}
	}
}

// BenchmarkAppendText measures the per-value cost of the conversion for
// common column types.
func BenchmarkAppendText(b *testing.B) {
	for _, bc := range []struct {
		name string
		oid  uint32
		v    []byte
	}{
		{"int4", pgcopy.Int4OID, []byte{0x00, 0x12, 0xd6, 0x87}},
		// 12345.6789: digits 1, 2345, 6789 (base 10000), weight 1, dscale 4
		{"numeric", pgcopy.NumericOID, []byte{0, 3, 0, 1, 0, 0, 0, 4, 0, 1, 0x09, 0x29, 0x1a, 0x85}},
		// 2027-09-20 02:48:23.392832+00
		{"timestamptz", pgcopy.TimestamptzOID, []byte{0x00, 0x03, 0x1b, 0x8e, 0x7b, 0x9e, 0x0a, 0x40}},
		{"text", pgcopy.TextOID, []byte("some ordinary text value, 40 bytes long")},
		{"float8", pgcopy.Float8OID, []byte{0x40, 0x09, 0x21, 0xfb, 0x54, 0x44, 0x2d, 0x18}},
		{"date", pgcopy.DateOID, []byte{0x00, 0x00, 0x26, 0xaf}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			dst, err := pgcopy.AppendText(nil, bc.oid, bc.v)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				dst, _ = pgcopy.AppendText(dst[:0], bc.oid, bc.v)
			}
		})
	}
}

// FuzzAppendText feeds arbitrary bytes as values of every supported type:
// a malformed value must give an error and leave dst as it was, never panic.
func FuzzAppendText(f *testing.F) {
	f.Add([]byte{0, 3, 0, 1, 0, 0, 0, 4, 0, 1, 0x09, 0x29, 0x1a, 0x85})
	f.Add([]byte{0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 23, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 4, 0, 0, 0, 5, 0, 0, 0, 4, 0, 0, 0, 6})
	f.Add([]byte{0x40, 0x09, 0x21, 0xfb, 0x54, 0x44, 0x2d, 0x18, 1, 2, 3, 4, 5, 6, 7, 8})
	var oids []uint32
	for oid := uint32(0); oid < 4000; oid++ {
		if pgcopy.Supported(oid) {
			oids = append(oids, oid)
		}
	}
	f.Fuzz(func(t *testing.T, v []byte) {
		for _, oid := range oids {
			out, err := pgcopy.AppendText([]byte("x"), oid, v)
			if err != nil && string(out) != "x" {
				t.Fatalf("type %d: error %v but dst changed to %q", oid, err, out)
			}
		}
	})
}
