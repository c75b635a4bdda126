package takeout

import "testing"

func TestCSVNameUnambiguous(t *testing.T) {
	cases := map[[2]string]string{
		{"public", "orders"}:         "tables/public.orders.csv",
		{"odd.schema", `we,ird "t"`}: "tables/odd%2Eschema.we%2Cird%20%22t%22.csv",
		{"a/b", "c"}:                 "tables/a%2Fb.c.csv",
	}
	seen := map[string]bool{}
	for in, want := range cases {
		got := csvName(in[0], in[1])
		if got != want {
			t.Errorf("csvName(%q, %q) = %q, want %q", in[0], in[1], got, want)
		}
		seen[got] = true
	}
	if csvName("a.b", "c") == csvName("a", "b.c") {
		t.Fatal("schema a.b table c and schema a table b.c share a file name")
	}
}
