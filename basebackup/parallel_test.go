package basebackup

import (
	"context"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"
)

// TestRunJobsCriticalPathFirst: a job that others wait on runs before a
// costlier job that nothing waits on when its chain is longer, so the
// index build after a big load is not left to run alone at the end.
func TestRunJobsCriticalPathFirst(t *testing.T) {
	var order []string
	mk := func(name string, cost int64) *job {
		return &job{name: name, cost: cost, run: func(context.Context, *pgx.Conn) error {
			order = append(order, name)
			return nil
		}}
	}
	lone, load, index := mk("lone load", 10), mk("big load", 6), mk("index", 6)
	index.after(load)
	err := runJobs(t.Context(), nil, 1, []*job{lone, load, index}, func(context.Context) (*pgx.Conn, func(), error) {
		return nil, func() {}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"big load", "lone load", "index"}; !slices.Equal(order, want) {
		t.Fatalf("ran %v, want %v", order, want)
	}
}

func TestDwarfs(t *testing.T) {
	for _, tc := range []struct {
		raw, others int64
		workers     int
		want        bool
	}{
		{390, 340, 2, false},  // pgbench_accounts beside the bench's documents
		{537, 373, 2, false},  // the same, on disk
		{800, 200, 2, true},   // one table dwarfs the rest
		{800, 0, 2, true},     // the only table
		{800, 200, 1, false},  // one worker: nothing to share
		{800, 1200, 4, false}, // three other workers kept busy long enough
		{800, 1000, 4, true},  // ... and not
	} {
		if got := dwarfs(tc.raw, tc.others, tc.workers); got != tc.want {
			t.Errorf("dwarfs(%d, %d, %d) = %v, want %v", tc.raw, tc.others, tc.workers, got, tc.want)
		}
	}
}

func TestMajorVersion(t *testing.T) {
	for v, want := range map[string]int{"15.18 (Debian 15.18-0+deb12u1)": 15, "16beta1": 16, "9.6.24": 9, "": 0, "devel": 0} {
		if got := majorVersion(v); got != want {
			t.Errorf("majorVersion(%q) = %d, want %d", v, got, want)
		}
	}
}
