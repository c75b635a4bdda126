package sqltext

import (
	"context"
	"reflect"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/wayback-pitr/wayback/testenv"
)

// TestAgreesWithServer runs the valid cases on a real PostgreSQL three
// ways: the whole text as one simple query (the server splits it), each
// piece Split cuts, and each statement Statements returns. All three
// must give the same results, statement by statement. The off cases run
// in a session with standard_conforming_strings off.
func TestAgreesWithServer(t *testing.T) {
	pg := testenv.NewCluster(t, testenv.Options{})
	ctx := t.Context()
	connect := func(setup string) *pgconn.PgConn {
		t.Helper()
		conn, err := pgconn.Connect(ctx, pg.DSN("postgres"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close(context.WithoutCancel(ctx)) })
		if _, err := conn.Exec(ctx, setup).ReadAll(); err != nil {
			t.Fatalf("run %q: %v", setup, err)
		}
		return conn
	}
	on := connect("SET standard_conforming_strings = on")
	off := connect("SET standard_conforming_strings = off; SET escape_string_warning = off")
	var conn *pgconn.PgConn
	run := func(sql string) [][][]string {
		t.Helper()
		res, err := conn.Exec(ctx, sql).ReadAll()
		if err != nil {
			t.Fatalf("run %q: %v", sql, err)
		}
		var out [][][]string
		for _, r := range res {
			if r.CommandTag.String() == "" {
				continue // an empty query: a piece with no statement
			}
			var rows [][]string
			for _, row := range r.Rows {
				var vals []string
				for _, v := range row {
					vals = append(vals, string(v))
				}
				rows = append(rows, vals)
			}
			out = append(out, rows)
		}
		return out
	}
	n, nOff := 0, 0
	for _, c := range allSplitCases() {
		if !c.server {
			continue
		}
		n++
		conn = on
		if c.off {
			conn = off
			nOff++
		}
		lx := c.lexer()
		whole := run(c.sql)
		if len(whole) == 0 {
			t.Errorf("%s: the server returned no results for %q", c.name, c.sql)
		}
		var pieces, stmts [][][]string
		for _, p := range lx.Split(c.sql) {
			pieces = append(pieces, run(p)...)
		}
		for _, s := range lx.Statements(c.sql) {
			r := run(s)
			if len(r) != 1 {
				t.Errorf("%s: statement %q is %d statements to the server", c.name, s, len(r))
			}
			stmts = append(stmts, r...)
		}
		if !reflect.DeepEqual(pieces, whole) {
			t.Errorf("%s: Split's pieces give %q, the whole text %q", c.name, pieces, whole)
		}
		if !reflect.DeepEqual(stmts, whole) {
			t.Errorf("%s: Statements give %q, the whole text %q", c.name, stmts, whole)
		}
	}
	if n < 10 || nOff < 5 {
		t.Fatalf("only %d cases ran on the server, %d of them with standard_conforming_strings off", n, nOff)
	}
}
