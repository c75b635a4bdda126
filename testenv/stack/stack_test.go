package stack_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/wayback-pitr/wayback"
	"github.com/wayback-pitr/wayback/testenv"
	"github.com/wayback-pitr/wayback/testenv/stack"
)

// TestStackDrill runs in the mode WAYBACK_TESTENV names (local in make
// test, containers in make test-containers): the agent ships to S3 and GCS;
// the database is killed and restarted; the GCS store is cut off while
// writes go on and is backfilled once back; a restore from each store
// alone into a fresh server is exact; and with one segment removed from
// both stores the drill helper fails naming the gap.
func TestStackDrill(t *testing.T) {
	ctx := t.Context()
	s := stack.New(t, stack.Options{})
	t.Logf("mode %s, stores %d", s.Mode, len(s.Stores()))
	exec := func(sql string) {
		t.Helper()
		if err := s.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	sync := func() {
		t.Helper()
		if err := s.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	exec(`CREATE TABLE accounts (id int PRIMARY KEY, owner text NOT NULL, balance numeric(12,2) NOT NULL);
	      CREATE TABLE events (id bigserial PRIMARY KEY, account int REFERENCES accounts, kind text, at timestamptz DEFAULT now());
	      INSERT INTO accounts SELECT g, 'owner ' || g, g * 10 FROM generate_series(1, 200) g;`)
	if err := s.StartAgent(ctx); err != nil {
		t.Fatal(err)
	}
	exec(`INSERT INTO events (account, kind) SELECT 1 + g % 200, 'open' FROM generate_series(1, 500) g;
	      UPDATE accounts SET balance = balance + 1 WHERE id % 3 = 0;`)
	sync()

	// The database dies without a shutdown; what it committed must all be
	// archived once it is back.
	exec(`INSERT INTO events (account, kind) SELECT 1 + g % 200, 'before kill' FROM generate_series(1, 300) g;`)
	if err := s.KillDatabase(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.StartDatabase(ctx); err != nil {
		t.Fatal(err)
	}
	exec(`UPDATE accounts SET owner = owner || ' (restarted)' WHERE id <= 50;`)
	sync()

	// GCS (store 1) is cut off; S3 alone keeps min_copies 1 satisfied.
	if err := s.PauseStore(ctx, 1); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		exec(fmt.Sprintf(`INSERT INTO events (account, kind) SELECT 1 + g %% 200, 'while cut %d' FROM generate_series(1, 100) g;
		      DELETE FROM events WHERE id %% 97 = %d;`, i, i))
		sync()
	}
	if err := s.ResumeStore(ctx, 1); err != nil {
		t.Fatal(err)
	}
	exec(`INSERT INTO events (account, kind) VALUES (7, 'after resume');`)
	sync()
	want, err := testenv.Checksums(ctx, s.SourceDSN())
	if err != nil {
		t.Fatal(err)
	}
	waitBackfilled(t, s)

	// Restore from each store alone: the GCS copy was backfilled.
	for i, u := range s.Stores() {
		if err := s.CheckRestoresTo(ctx, t, []string{u}, wayback.Latest(), want); err != nil {
			t.Fatalf("restore from store %d alone: %v", i, err)
		}
	}

	// Acceptance 3: one segment gone from both stores. The drill must fail
	// and name the gap.
	arc, err := wayback.Open(ctx, wayback.ArchiveOptions{Stores: s.Stores()})
	if err != nil {
		t.Fatal(err)
	}
	defer arc.Close()
	cat, err := arc.Catalog(ctx)
	if err != nil {
		t.Fatal(err)
	}
	backupAt := cat.Backups[len(cat.Backups)-1].LSN()
	var after []string
	var victimFrom string
	for _, seg := range cat.Segments {
		if seg.From >= backupAt {
			after = append(after, seg.Key)
		}
	}
	if len(after) < 3 {
		t.Fatalf("want at least 3 segments after the base backup, have %d", len(after))
	}
	victim := after[len(after)/2]
	for _, seg := range cat.Segments {
		if seg.Key == victim {
			victimFrom = seg.From.String()
		}
	}
	for i, st := range arc.Stores() {
		if err := st.Delete(ctx, victim); err != nil {
			t.Fatalf("delete %s from store %d: %v", victim, i, err)
		}
	}
	err = s.CheckRestoresTo(ctx, t, nil, wayback.Latest(), want)
	if err == nil {
		t.Fatalf("the drill passed with segment %s missing from every store", victim)
	}
	if !strings.Contains(err.Error(), "gap from LSN "+victimFrom) {
		t.Fatalf("the drill failed without naming the gap at %s: %v", victimFrom, err)
	}
	t.Logf("broken archive, as expected: %v", err)
}

// waitBackfilled waits until every object in the first store is in the
// second as well (the agent's repair loop copies what a store missed).
func waitBackfilled(t *testing.T, s *stack.Stack) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	var missing []string
	for {
		missing = missingIn(ctx, t, s)
		if len(missing) == 0 {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("store 1 still misses %d objects after 2 minutes, e.g. %s", len(missing), missing[0])
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func missingIn(ctx context.Context, t *testing.T, s *stack.Stack) []string {
	arc, err := wayback.Open(ctx, wayback.ArchiveOptions{Stores: s.Stores()})
	if err != nil {
		t.Fatal(err)
	}
	defer arc.Close()
	st := arc.Stores()
	a, err := st[0].List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	b, err := st[1].List(ctx, "")
	if err != nil {
		return []string{"(listing failed: " + err.Error() + ")"}
	}
	have := map[string]bool{}
	for _, o := range b {
		have[o.Key] = true
	}
	var missing []string
	for _, o := range a {
		if !have[o.Key] {
			missing = append(missing, o.Key)
		}
	}
	return missing
}
