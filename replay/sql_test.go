package replay

import (
	"strings"
	"testing"

	"github.com/wayback-pitr/wayback/wal"
)

// TestRowMatching: keyed tables match by key with typed parameters; FULL
// tables by binary row image; every table but a partitioned parent with
// ONLY, so an inheritance parent's change never reaches its children.
func TestRowMatching(t *testing.T) {
	keyed := &wal.Relation{Namespace: "s", Name: "t", ReplicaIdentity: 'd', Columns: []wal.Column{{Name: "id", Key: true}, {Name: "c"}}}
	full := &wal.Relation{Namespace: "s", Name: "bag", ReplicaIdentity: 'f', Columns: []wal.Column{{Name: "a", Key: true}, {Name: "b", Key: true}, {Name: "c", Key: true}}}
	root := &wal.Relation{Namespace: "s", Name: "root", ReplicaIdentity: 'd', Columns: []wal.Column{{Name: "id", Key: true}}}
	tables := targetTables{
		"s.t":    {types: map[string]string{"id": "s.pair", "c": "text"}},
		"s.bag":  {types: map[string]string{"a": "box", "b": "public.citext", "c": "integer"}, btree: map[string]bool{"b": true, "c": true}},
		"s.root": {partitioned: true, types: map[string]string{"id": "integer"}},
	}
	text := func(s string) wal.Value { return wal.Value{Kind: wal.KindText, Data: []byte(s)} }
	cases := []struct {
		c    *wal.Change
		want string
	}{
		{&wal.Change{Op: wal.OpDelete, Rel: keyed, OldKind: 'K', Old: wal.Tuple{text("(1,x)"), {Kind: wal.KindNull}}},
			`DELETE FROM ONLY "s"."t" WHERE "id" = $1::s.pair`},
		{&wal.Change{Op: wal.OpUpdate, Rel: full, OldKind: 'O', Old: wal.Tuple{text("(1,1),(0,0)"), {Kind: wal.KindNull}, text("5")}, New: wal.Tuple{text("(1,1),(0,0)"), text("x"), text("5")}},
			`UPDATE ONLY "s"."bag" SET "b" = $1 WHERE ctid = (SELECT ctid FROM (SELECT ctid, * FROM ONLY "s"."bag" WHERE "b" IS NULL AND "c" = $3::integer OFFSET 0) t WHERE pg_catalog.record_image_eq(ROW("a", "b", "c"), ROW($2::box, NULL::public.citext, $3::integer)) LIMIT 1)`},
		{&wal.Change{Op: wal.OpDelete, Rel: root, OldKind: 'K', Old: wal.Tuple{text("1")}},
			`DELETE FROM "s"."root" WHERE "id" = $1::integer`},
		{&wal.Change{Op: wal.OpTruncate, Truncated: []*wal.Relation{keyed, root}, TruncateOptions: wal.TruncateCascade | wal.TruncateRestartIdentity},
			`TRUNCATE ONLY "s"."t", "s"."root" RESTART IDENTITY CASCADE`},
	}
	for _, tc := range cases {
		s, err := buildChange(tc.c, tables)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Join(strings.Fields(s.sql), " ") != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.c.Op, s.sql, tc.want)
		}
	}
}

// TestCTASFirst: the DDL message of CREATE TABLE AS moves in front of the
// new table's INSERTs, which the stream carries before it; other changes
// keep their order.
func TestCTASFirst(t *testing.T) {
	other := &wal.Relation{Namespace: "public", Name: "other"}
	made := &wal.Relation{Namespace: "public", Name: "made"}
	ddl := wal.Change{Op: wal.OpMessage, Prefix: DDLPrefix, Content: []byte(`{"query":"CREATE TABLE made AS SELECT 1","n":1,"tag":"CREATE TABLE AS","tables":[{"s":"public","n":"made"}]}`)}
	in := []wal.Change{{Op: wal.OpInsert, Rel: other}, {Op: wal.OpInsert, Rel: made}, {Op: wal.OpInsert, Rel: made}, ddl, {Op: wal.OpInsert, Rel: made}}
	got := ctasFirst(in)
	want := []string{"insert other", "message", "insert made", "insert made", "insert made"}
	for i, c := range got {
		var d string
		if c.Op == wal.OpMessage {
			d = "message"
		} else {
			d = "insert " + c.Rel.Name
		}
		if d != want[i] {
			t.Fatalf("change %d is %s, want %s (all: %v)", i, d, want[i], got)
		}
	}
	if in[3].Op != wal.OpMessage {
		t.Fatal("ctasFirst changed its input")
	}
}

// TestShapeMatchesBuild: a statement whose text comes from the shape cache
// has the parameters, in the order, that building it afresh gives.
func TestShapeMatchesBuild(t *testing.T) {
	rel := &wal.Relation{Namespace: "s", Name: "t", ReplicaIdentity: 'd', Columns: []wal.Column{{Name: "a"}, {Name: "k1", Key: true}, {Name: "b"}, {Name: "k2", Key: true}, {Name: "c"}}}
	tables := targetTables{"s.t": {types: map[string]string{"k1": "integer", "k2": "text"}}}
	text := func(s string) wal.Value { return wal.Value{Kind: wal.KindText, Data: []byte(s)} }
	null, u := wal.Value{Kind: wal.KindNull}, wal.Value{Kind: wal.KindUnchanged}
	changes := []*wal.Change{
		{Op: wal.OpInsert, Rel: rel, New: wal.Tuple{text("a"), text("1"), null, text("x"), text("")}},
		{Op: wal.OpInsert, Rel: rel, New: wal.Tuple{null, text("2"), u, text("y"), text("c")}},
		{Op: wal.OpUpdate, Rel: rel, New: wal.Tuple{text("a2"), text("1"), u, text("x"), null}},
		{Op: wal.OpUpdate, Rel: rel, New: wal.Tuple{u, text("1"), text("b"), text("x"), u}},
	}
	a := &applier{}
	for _, c := range changes {
		for round := 0; round < 2; round++ { // first builds, second hits the cache
			got, err := a.build(c, tables)
			if err != nil {
				t.Fatal(err)
			}
			want, err := buildChange(c, tables)
			if err != nil {
				t.Fatal(err)
			}
			if got.sql != want.sql || got.wantOne != want.wantOne || len(got.params) != len(want.params) {
				t.Fatalf("%s round %d: got %q %v, want %q %v", c.Op, round, got.sql, got.params, want.sql, want.params)
			}
			for i := range got.params {
				if (got.params[i] == nil) != (want.params[i] == nil) || string(got.params[i]) != string(want.params[i]) {
					t.Fatalf("%s round %d: parameter %d is %q, want %q", c.Op, round, i+1, got.params[i], want.params[i])
				}
			}
		}
	}
	if len(a.shapes) != len(changes) {
		t.Fatalf("%d shapes cached, want %d", len(a.shapes), len(changes))
	}
}
