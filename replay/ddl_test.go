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
