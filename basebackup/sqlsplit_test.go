package basebackup

import (
	"reflect"
	"strings"
	"testing"
)

func TestSplitStatements(t *testing.T) {
	sql := `SET a = 'x;y';
-- a comment; with a semicolon
CREATE FUNCTION f() RETURNS text LANGUAGE sql AS $_$ SELECT 'a;b'; $_$;
CREATE FUNCTION g() RETURNS text LANGUAGE sql AS $$SELECT $1 || ';'$$;
COMMENT ON TABLE "we;ird""t" IS E'it\'s; here';
/* block ; /* nested ; */ still ; */ SELECT 'it''s;';
SELECT a$b FROM t WHERE x = $1;
SELECT 1`
	want := []string{
		`SET a = 'x;y';`,
		"\n-- a comment; with a semicolon\nCREATE FUNCTION f() RETURNS text LANGUAGE sql AS $_$ SELECT 'a;b'; $_$;",
		"\nCREATE FUNCTION g() RETURNS text LANGUAGE sql AS $$SELECT $1 || ';'$$;",
		"\nCOMMENT ON TABLE \"we;ird\"\"t\" IS E'it\\'s; here';",
		"\n/* block ; /* nested ; */ still ; */ SELECT 'it''s;';",
		"\nSELECT a$b FROM t WHERE x = $1;",
		"\nSELECT 1",
	}
	got := splitStatements(sql)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("split:\n%q\nwant:\n%q", got, want)
	}
	if strings.Join(got, "") != sql {
		t.Fatal("the statements do not add up to the input")
	}
	if got := splitStatements("SELECT 1;\n-- the end\n"); len(got) != 1 {
		t.Fatalf("a trailing comment is no statement: %q", got)
	}
}

func TestClassifyPostData(t *testing.T) {
	sql := `SET default_tablespace = '';
SELECT pg_catalog.set_config('search_path', '', false);
ALTER TABLE ONLY public.orders
    ADD CONSTRAINT orders_pkey PRIMARY KEY (id);
ALTER TABLE ONLY "My Schema"."Odd.""Name"""
    ADD CONSTRAINT u UNIQUE (a);
ALTER TABLE ONLY public.items
    ADD CONSTRAINT items_order_fkey FOREIGN KEY (order_id) REFERENCES public.orders(id);
CREATE UNIQUE INDEX items_sku ON public.items USING btree (sku) WHERE (note <> 'x;y');
CREATE INDEX parent_idx ON ONLY public.parent USING btree (a);
ALTER INDEX public.parent_idx ATTACH PARTITION public.child_idx;
CREATE TRIGGER t AFTER INSERT ON public.items FOR EACH ROW EXECUTE FUNCTION public.f();
ALTER TABLE ONLY public.c ADD CONSTRAINT ex EXCLUDE USING gist (r WITH &&);
ALTER TABLE public.c CLUSTER ON ex;`
	type got struct {
		kind          postDataKind
		schema, table string
	}
	want := []got{
		{postSetting, "", ""},
		{postSetting, "", ""},
		{postIndex, "public", "orders"},
		{postIndex, "My Schema", `Odd."Name"`},
		{postSerial, "", ""},
		{postIndex, "public", "items"},
		{postIndex, "public", "parent"},
		{postSerial, "", ""},
		{postSerial, "", ""},
		{postIndex, "public", "c"},
		{postSerial, "", ""},
	}
	st := classifyPostData(sql)
	var have []got
	for _, s := range st {
		have = append(have, got{s.Kind, s.Schema, s.Table})
	}
	if !reflect.DeepEqual(have, want) {
		t.Fatalf("classified:\n%v\nwant:\n%v", have, want)
	}
}
