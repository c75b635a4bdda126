package replay

import (
	"reflect"
	"testing"
)

func TestSplitStatements(t *testing.T) {
	q := `create table a(x text default 'a;b'); -- c;omment
	INSERT INTO a VALUES (E'it\'s;'); /* block ; /* nested; */ */ ALTER TABLE "we;ird" ADD c int;
	create function f() returns int language sql as $body$ select 1; $body$;
	DO $$ BEGIN PERFORM 1; END $$;  ;
	comment on table a is 'x''; y'`
	got := splitStatements(q)
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
	} {
		if got := isSelectInto(s); got != want {
			t.Errorf("isSelectInto(%q) = %v, want %v", s, got, want)
		}
	}
	m := &ddlMessage{Query: `SELECT 1; SELECT a INTO n FROM t; CREATE INDEX ON n (a)`, N: 2, Tag: "CREATE INDEX"}
	if s, err := m.statement(); err != nil || s != "CREATE INDEX ON n (a)" {
		t.Fatalf("statement 2 = %q, %v", s, err)
	}
}
