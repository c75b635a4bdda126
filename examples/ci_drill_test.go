package examples_test

import (
	"testing"

	"github.com/wayback-pitr/wayback"
	"github.com/wayback-pitr/wayback/testenv"
	"github.com/wayback-pitr/wayback/testenv/stack"
)

// TestCIRestoreDrill is the drill a team runs in CI (README, "Restore
// drills in CI"): the agent ships to S3 and GCS, the database dies without
// a shutdown, one store is cut off for a while, and a restore into a fresh
// server must equal the source table by table. The same test runs on local
// processes (make test) and, with -tags containers and
// WAYBACK_TESTENV=containers, on Docker containers with the agent as a
// sidecar (make test-containers).
func TestCIRestoreDrill(t *testing.T) {
	ctx := t.Context()
	s := stack.New(t, stack.Options{Database: "shop"})
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(s.Exec(ctx, `CREATE TABLE orders (id serial PRIMARY KEY, total numeric(10,2), note text);
	                  INSERT INTO orders (total, note) SELECT g * 1.5, 'first' FROM generate_series(1, 500) g;`))
	must(s.StartAgent(ctx))

	must(s.Exec(ctx, `UPDATE orders SET note = 'paid' WHERE id % 3 = 0;`))
	must(s.KillDatabase(ctx))
	must(s.StartDatabase(ctx))
	// The agent is back (in container mode its sidecar restarted with the
	// database) and has everything: only then is a store cut off, since an
	// agent starting checks that every store answers.
	must(s.Sync(ctx))
	must(s.PauseStore(ctx, 1)) // GCS unreachable; S3 alone keeps min_copies 1
	must(s.Exec(ctx, `DELETE FROM orders WHERE id % 10 = 0;
	                  INSERT INTO orders (total, note) VALUES (99.99, 'while GCS was away');`))
	must(s.Sync(ctx))
	must(s.ResumeStore(ctx, 1))

	want, err := testenv.Checksums(ctx, s.SourceDSN())
	must(err)
	s.AssertRestoresTo(t, nil, wayback.Latest(), want)
}
