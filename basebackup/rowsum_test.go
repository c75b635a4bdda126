package basebackup

import "testing"

func TestRowSumOrderIndependentAndSplit(t *testing.T) {
	feed := func(chunks ...string) string {
		var r RowSum
		for _, c := range chunks {
			r.Write([]byte(c))
		}
		return r.String()
	}
	a := feed("1\tx\n2\ty\n3\t\\N\n")
	if b := feed("3\t\\N\n", "1\tx\n2\ty\n"); a != b {
		t.Fatalf("order changed the sum: %s vs %s", a, b)
	}
	if b := feed("1\t", "x\n2", "\ty\n3\t\\", "N\n"); a != b {
		t.Fatalf("split writes changed the sum: %s vs %s", a, b)
	}
	if b := feed("1\tx\n2\ty\n3\tz\n"); a == b {
		t.Fatal("different contents gave the same sum")
	}
	if b := feed("1\tx\n1\tx\n2\ty\n3\t\\N\n"); a == b {
		t.Fatal("a duplicated row did not change the sum")
	}
	var r RowSum
	r.Write([]byte("a\nb\n"))
	if r.Rows() != 2 {
		t.Fatalf("rows = %d, want 2", r.Rows())
	}
}

func TestRowSumMerge(t *testing.T) {
	var whole, a, b, merged RowSum
	whole.Write([]byte("1\tx\n2\ty\n3\t\\N\n"))
	a.Write([]byte("2\ty\n"))
	b.Write([]byte("3\t\\N\n1\tx")) // the last row without its newline
	merged.Merge(&a)
	merged.Merge(&b)
	if merged.String() != whole.String() || merged.Rows() != 3 {
		t.Fatalf("merged %s (%d rows), want %s (3 rows)", merged.String(), merged.Rows(), whole.String())
	}
}
