package workload

import (
	"strings"
	"testing"
)

func script(seed uint64, n int) string {
	g := New(seed)
	var b strings.Builder
	for _, s := range g.Schema() {
		b.WriteString(s)
	}
	for i := 0; i < n; i++ {
		b.WriteString(g.Next().SQL())
	}
	return b.String()
}

func TestSameSeedSameWorkload(t *testing.T) {
	if a, b := script(7, 200), script(7, 200); a != b {
		t.Fatal("seed 7 produced two different workloads")
	}
	if script(7, 200) == script(8, 200) {
		t.Fatal("seeds 7 and 8 produced the same workload")
	}
}

// TestMix checks that a few hundred steps exercise every kind of change
// the differential test relies on.
func TestMix(t *testing.T) {
	s := script(1, 400)
	for _, want := range []string{"INSERT INTO items", "UPDATE items SET id", "DELETE FROM items", "UPDATE events SET id = id + 1000",
		"ADD COLUMN", "DROP COLUMN", "CREATE TABLE made_", "ALTER TYPE mood ADD VALUE", "TRUNCATE", "ROLLBACK;", "DELETE FROM notes", "ALTER COLUMN"} {
		if !strings.Contains(s, want) {
			t.Errorf("400 steps of seed 1 contain no %q", want)
		}
	}
}
