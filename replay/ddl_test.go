package replay

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/wayback-pitr/wayback/sqltext"
	"github.com/wayback-pitr/wayback/wal"
)

func TestDDLStatements(t *testing.T) {
	q := `create table a(x text default 'a;b'); -- c;omment
	INSERT INTO a VALUES (E'it\'s;'); /* block ; /* nested; */ */ ALTER TABLE "we;ird" ADD c int;
	create function f() returns int language sql as $body$ select 1; $body$;
	DO $$ BEGIN PERFORM 1; END $$;  ;
	comment on table a is 'x''; y'`
	got := sqltext.Statements(q)
	want := []string{
		"create table a(x text default 'a;b')",
		`INSERT INTO a VALUES (E'it\'s;')`,
		`ALTER TABLE "we;ird" ADD c int`,
		"create function f() returns int language sql as $body$ select 1; $body$",
		"DO $$ BEGIN PERFORM 1; END $$",
		"comment on table a is 'x''; y'",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("split:\n%q\nwant\n%q", got, want)
	}
	var ddl []string
	for _, s := range got {
		if isDDL(s) {
			ddl = append(ddl, s)
		}
	}
	if len(ddl) != 4 || ddl[1] != want[2] || ddl[3] != want[5] {
		t.Fatalf("DDL statements: %q", ddl)
	}
	m := &ddlMessage{Query: q, N: 2, Tag: "ALTER TABLE"}
	if s, err := m.statement(); err != nil || s != want[2] {
		t.Fatalf("statement 2 = %q, %v", s, err)
	}
	m.N = 5
	if _, err := m.statement(); err == nil {
		t.Fatal("a fifth DDL statement was found in a string with four")
	}
	// a$$ and b$$ are identifiers, not the ends of a dollar quote that
	// would make the two statements one.
	m = &ddlMessage{Query: "CREATE TABLE a$$ (x int); CREATE TABLE b$$ (y text DEFAULT $$;$$)", N: 2, Tag: "CREATE TABLE"}
	if s, err := m.statement(); err != nil || s != "CREATE TABLE b$$ (y text DEFAULT $$;$$)" {
		t.Fatalf("statement 2 = %q, %v", s, err)
	}
}

func TestSelectIntoCountsAsDDL(t *testing.T) {
	for s, want := range map[string]bool{
		`SELECT a, b INTO new_t FROM t`:                      true,
		`select * into temp x from t where v = 'a'`:          true,
		`WITH w AS (SELECT 1) SELECT * INTO n FROM w`:        true,
		`SELECT 'go into' FROM t`:                            false,
		`SELECT "into" FROM t`:                               false,
		`WITH w AS (SELECT 1) INSERT INTO t SELECT * FROM w`: false,
		`SELECT pointinto FROM t`:                            false,
		`SELECT $$ into $$ FROM t`:                           false,
		`SELECT 1 /* into */ FROM t`:                         false,
		`(SELECT a INTO n FROM t)`:                           true,
	} {
		if got := isSelectInto(sqltext.Lexer{}, s); got != want {
			t.Errorf("isSelectInto(%q) = %v, want %v", s, got, want)
		}
	}
	m := &ddlMessage{Query: `SELECT 1; SELECT a INTO n FROM t; CREATE INDEX ON n (a)`, N: 2, Tag: "CREATE INDEX"}
	if s, err := m.statement(); err != nil || s != "CREATE INDEX ON n (a)" {
		t.Fatalf("statement 2 = %q, %v", s, err)
	}
}

// TestDDLUnderNonStandardStrings: DDL captured in a session with
// standard_conforming_strings off is cut with backslash escapes in its
// strings, and the same text captured with the setting on is not.
func TestDDLUnderNonStandardStrings(t *testing.T) {
	q := `COMMENT ON TABLE t IS 'it\'s; odd'; CREATE TABLE u (a int, b text DEFAULT 'a\';b'); SELECT 'don\'t go into' FROM t; CREATE INDEX ON u (b)`
	off := map[string]string{"standard_conforming_strings": "off", "DateStyle": "ISO, MDY"}
	want := []string{`COMMENT ON TABLE t IS 'it\'s; odd'`, `CREATE TABLE u (a int, b text DEFAULT 'a\';b')`, `CREATE INDEX ON u (b)`}
	for n, w := range want {
		m := &ddlMessage{Query: q, N: n + 1, Tag: "X", Settings: off}
		if s, err := m.statement(); err != nil || s != w {
			t.Errorf("statement %d = %q, %v; want %q", n+1, s, err, w)
		}
	}
	// Read as standard strings, the text cuts elsewhere: the first
	// statement ends inside the comment.
	m := &ddlMessage{Query: q, N: 1, Tag: "COMMENT", Settings: map[string]string{"standard_conforming_strings": "on"}}
	if s, err := m.statement(); err != nil || s != `COMMENT ON TABLE t IS 'it\'s` {
		t.Errorf("with the setting on, statement 1 = %q, %v", s, err)
	}
	if isSelectInto(sqltext.Lexer{BackslashStrings: true}, `SELECT 'don\'t go into' FROM t`) {
		t.Error("INTO inside a string counted as SELECT INTO")
	}

	// planDDL: three messages, one per DDL statement (the SELECT fires
	// none); the same text captured with the setting on is its own
	// query and is not mixed with these.
	msg := func(n int, tag, scs string) wal.Change {
		b, _ := json.Marshal(ddlMessage{Query: q, N: n, Tag: tag, Settings: map[string]string{"standard_conforming_strings": scs}})
		return wal.Change{Op: wal.OpMessage, Prefix: DDLPrefix, Content: b}
	}
	changes := []wal.Change{msg(1, "COMMENT", "off"), msg(2, "CREATE TABLE", "off"), msg(3, "CREATE INDEX", "off"), msg(1, "COMMENT", "on")}
	plan := planDDL(changes)
	for i, w := range append(want, `COMMENT ON TABLE t IS 'it\'s`) {
		if st := plan[i]; st.err != nil || st.skip || st.stmt != w {
			t.Errorf("message %d: %q (skip %v, err %v), want %q", i, st.stmt, st.skip, st.err, w)
		}
	}
}

func TestSQLString(t *testing.T) {
	for in, want := range map[string]string{
		`plain`:          `'plain'`,
		`it's`:           `'it''s'`,
		`"public"."a\n"`: `E'"public"."a\\n"'`,
		`a\'b`:           `E'a\\''b'`,
	} {
		if got := sqlString(in); got != want {
			t.Errorf("sqlString(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestInTransaction(t *testing.T) {
	for in, want := range map[string]string{
		"CREATE INDEX CONCURRENTLY i ON t (a)":                       "CREATE INDEX i ON t (a)",
		"create unique index\nconcurrently if not exists i on t (a)": "create unique index\nif not exists i on t (a)",
		"DROP INDEX CONCURRENTLY IF EXISTS i":                        "DROP INDEX IF EXISTS i",
		"ALTER TABLE p DETACH PARTITION c CONCURRENTLY":              "ALTER TABLE p DETACH PARTITION c",
		"alter table p detach partition c finalize":                  "alter table p detach partition c",
		"CREATE INDEX concurrently_named ON t (a)":                   "CREATE INDEX concurrently_named ON t (a)",
		"ALTER TABLE p ADD COLUMN concurrently int":                  "ALTER TABLE p ADD COLUMN concurrently int",
	} {
		if got := inTransaction(in); got != want {
			t.Errorf("inTransaction(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestPlanDDL: nested commands (fired under the same query string) are
// skipped, statements that fire nothing are passed over, and DDL from a DO
// block is refused.
func TestPlanDDL(t *testing.T) {
	msg := func(query string, n int, tag string) wal.Change {
		b, _ := json.Marshal(ddlMessage{Query: query, N: n, Tag: tag})
		return wal.Change{Op: wal.OpMessage, Prefix: DDLPrefix, Content: b}
	}
	refresh := "REFRESH MATERIALIZED VIEW CONCURRENTLY mv"
	role := "CREATE ROLE r; CREATE TABLE t (a int)"
	ext := "CREATE EXTENSION pg_trgm; CREATE INDEX CONCURRENTLY i ON t USING gin (s gin_trgm_ops)"
	changes := []wal.Change{
		msg(refresh, 1, "CREATE TABLE AS"), msg(refresh, 2, "ALTER TABLE"), msg(refresh, 3, "DROP TABLE"), msg(refresh, 4, "REFRESH MATERIALIZED VIEW"),
		msg(role, 1, "CREATE TABLE"),
		msg(ext, 1, "CREATE FUNCTION"), msg(ext, 2, "CREATE OPERATOR CLASS"), msg(ext, 3, "CREATE EXTENSION"), msg(ext, 4, "CREATE INDEX"),
		msg("DO $$ BEGIN CREATE TABLE x (); END $$", 1, "CREATE TABLE"),
	}
	plan := planDDL(changes)
	want := []string{"skip", "skip", "skip", refresh, "CREATE TABLE t (a int)", "skip", "skip", "CREATE EXTENSION pg_trgm", "CREATE INDEX i ON t USING gin (s gin_trgm_ops)", "error"}
	for i, w := range want {
		st := plan[i]
		got := st.stmt
		switch {
		case st.err != nil:
			got = "error"
		case st.skip:
			got = "skip"
		}
		if got != w {
			t.Errorf("message %d: %q, want %q", i, got, w)
		}
	}
}
