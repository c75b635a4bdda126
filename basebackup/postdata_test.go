package basebackup

import (
	"reflect"
	"testing"
)

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
ALTER TABLE public.c CLUSTER ON ex;

--
-- Name: t$1_a; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX "t$1_a" ON public.t$1 USING btree (a);

--
-- PostgreSQL database dump complete
--

`
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
		{postIndex, "public", "t$1"},
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
