package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wayback-pitr/wayback/store"
	"github.com/wayback-pitr/wayback/store/storetest"
	"github.com/wayback-pitr/wayback/testenv"
)

// lastLine is the last line of a command's stderr: the one-line error.
func lastLine(r result) string {
	lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
	return lines[len(lines)-1]
}

// agentLogHas waits up to 60s for the agent's log to contain every one of
// parts on one line.
func agentLogHas(t *testing.T, p *agentProc, parts ...string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(p.log)
		for _, line := range strings.Split(string(b), "\n") {
			ok := true
			for _, s := range parts {
				ok = ok && strings.Contains(line, s)
			}
			if ok {
				return
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("agent log has no line with %q", parts)
}

// TestAgentStartsWithStoreDown: with min_copies 1 the agent starts while
// one of two stores (GCS) does not answer, ships to the other, and
// backfills the missing store when it answers, so that it alone restores
// the exact content. With min_copies 2 it refuses to start with one line
// naming the store and exit status 1, touching nothing. A store that
// answers but holds no archive.json does not get a new archive identity
// while the store that may hold it is down.
func TestAgentStartsWithStoreDown(t *testing.T) {
	c := newCloudEnv(t, 1)
	c.exec(schema)
	c.insertCustomers(30)
	c.insertOrders(100)
	c.mustRun("setup")
	a := c.startAgent("--repair-interval", "1s")
	c.waitBackupCloud()
	c.insertOrders(100)
	c.waitArchived()
	a.stop(t)

	c.gcs.Faults.SetFault(testenv.FaultRefuse)
	c.insertOrders(50) // waiting in the slot

	// min_copies 2: nothing starts, nothing is written, the slot holds.
	s3Before, err := c.s3Keys("shop/")
	if err != nil {
		t.Fatal(err)
	}
	slotBefore := c.slotLSN()
	r := c.run("agent", "--min-copies", "2")
	last := lastLine(r)
	if r.code != 1 || !strings.HasPrefix(last, "wayback: ") || !strings.Contains(last, "gs://wb-gcs/shop") ||
		!strings.Contains(last, "min_copies is 2") || strings.Contains(last, "s3://wb-s3") {
		t.Fatalf("agent with min_copies 2 and GCS down: want exit 1 and one line naming only GCS, got:\n%s", r)
	}
	if s3After, err := c.s3Keys("shop/"); err != nil || !slices.Equal(s3After, s3Before) {
		t.Fatalf("S3 changed although the agent did not start: %v -> %v (%v)", s3Before, s3After, err)
	}
	if after := c.slotLSN(); after != slotBefore {
		t.Fatalf("slot moved from %s to %s although the agent did not start", slotBefore, after)
	}

	// A store that answers but holds nothing, beside the down store that
	// holds the archive: no new archive.json is invented.
	fresh := filepath.Join(t.TempDir(), "fresh")
	r = c.run("agent", "--store", "file://"+fresh, "--store", c.stores[1], "--min-copies", "1")
	if last := lastLine(r); r.code != 1 || !strings.Contains(last, "archive.json") || !strings.Contains(last, "gs://wb-gcs/shop") {
		t.Fatalf("agent with an empty store and the archive's other store down: want exit 1 naming archive.json and GCS, got:\n%s", r)
	}
	if _, err := os.Stat(filepath.Join(fresh, "archive.json")); err == nil {
		t.Fatal("a new archive.json was written while the store holding the archive's was down")
	}

	// min_copies 1: the agent starts, says so once, ships to S3 alone.
	a = c.startAgent("--repair-interval", "1s")
	agentLogHas(t, a, "store did not answer at start", "gs://wb-gcs/shop", "backfilled", `"answered":1`)
	for i := 0; i < 5; i++ {
		c.insertOrders(40)
		c.exec(`UPDATE customers SET balance = coalesce(balance, 0) + $1`, i+1)
	}
	c.exec(`DELETE FROM orders WHERE id % 7 = 0`)
	c.waitArchived() // durable in S3 alone: the slot advanced with GCS down
	if l := c.list(); l.Stores[1].Error == "" {
		t.Fatalf("GCS answered during its outage? %+v", l.Stores[1])
	}

	// GCS answers: it is backfilled and restores alone.
	c.gcs.Faults.SetFault(testenv.FaultNone)
	agentLogHas(t, a, "store down at start answers now", "gs://wb-gcs/shop")
	c.waitComplete()
	c.insertOrders(30)
	want := c.checkpoint("after GCS came back")
	c.waitArchived()
	c.waitComplete()
	c.restoreFrom(c.stores[1], "gcs_alone", want.sums, "GCS alone, down when the agent started")
	c.restoreFrom(c.stores[0], "s3_alone", want.sums, "S3 alone")
	a.stop(t)
	if v := c.verify(); !v.OK || v.Stores[0].Verdict != "ok" || v.Stores[1].Verdict != "ok" {
		t.Fatalf("verify after backfill: %+v", v)
	}

	// GCS fails while the agent runs, so the newest segments are in S3
	// alone; then the agent restarts while S3 is down. GCS's archive ends
	// before the slot: the rest may be in S3, so the agent waits for it
	// (status 1) instead of leaving a gap or stopping for an operator.
	a = c.startAgent("--repair-interval", "1s")
	c.waitArchived()
	c.gcs.Faults.SetFault(testenv.FaultError5xx)
	c.insertOrders(60)
	c.waitArchived()
	a.stop(t)
	c.gcs.Faults.SetFault(testenv.FaultNone)
	c.s3.Faults.SetFault(testenv.FaultRefuse)
	r = c.run("agent")
	if last := lastLine(r); r.code != 1 || !strings.Contains(last, "s3://wb-s3/shop") || !strings.Contains(last, "may hold the rest") {
		t.Fatalf("agent with the archive's newest segments only in the down store: want exit 1 naming S3, got:\n%s", r)
	}
	c.s3.Faults.SetFault(testenv.FaultNone)
	a = c.startAgent("--repair-interval", "1s")
	c.insertOrders(10)
	want = c.checkpoint("after S3 came back")
	c.waitArchived()
	c.waitComplete()
	c.restoreFrom(c.stores[1], "gcs_final", want.sums, "GCS alone after S3 was down at start")
	a.stop(t)
}

// TestEncryptedStartWithStoreDown: an encrypted archive in a file store
// gets an S3 store added to its configuration while S3 is down. The agent
// starts with the data key the file store holds and creates none; when S3
// answers it receives the key object first, then everything else, and
// restores alone. A store holding no key beside the down store holding the
// key makes the start fail (status 1) without creating a key.
func TestEncryptedStartWithStoreDown(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	s3 := testenv.NewS3(t)
	if err := s3.CreateBucket(ctx, "wb-enc"); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	keyFile, _ := writeKeyFile(t, dir, "wayback.key")
	s3URL := s3.URL("wb-enc", "shop") + "&max_attempts=2"
	writeCfg := func(name string, stores ...string) string {
		var b strings.Builder
		fmt.Fprintf(&b, "postgres:\n  dsn: %q\nstores:\n", e.dsn)
		for _, s := range stores {
			fmt.Fprintf(&b, "  - %q\n", s)
		}
		fmt.Fprintf(&b, "min_copies: 1\nflush_interval: 200ms\nencryption:\n  key_file: %q\n", keyFile)
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	fileOnly := writeCfg("file.yaml", e.stores[0])
	both := writeCfg("both.yaml", e.stores[0], s3URL)
	keysIn := func(url string) []string {
		t.Helper()
		return storetest.ListKeys(t, ctx, openRaw(t, url), "keys/")
	}

	e.exec(`CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL, n numeric)`)
	e.exec(`INSERT INTO notes SELECT i, 'base-' || i, i * 1.5 FROM generate_series(1, 2000) i`)
	e.mustRun("setup")
	e.config = fileOnly
	e.stores = e.stores[:1]
	a := e.startAgent()
	e.waitBackup(1)
	e.waitArchived()
	a.stop(t)
	dataKeys := keysIn(e.stores[0])
	if len(dataKeys) != 1 {
		t.Fatalf("file store holds key objects %v, want one", dataKeys)
	}

	// S3 joins the configuration while down.
	s3.Faults.SetFault(testenv.FaultRefuse)
	e.config = both
	e.stores = []string{e.stores[0], s3URL}
	a = e.startAgent("--repair-interval", "1s")
	agentLogHas(t, a, "store did not answer at start", "s3://wb-enc/shop")
	e.exec(`INSERT INTO notes SELECT i, 'stream-' || i, i FROM generate_series(2001, 3000) i`)
	e.exec(`UPDATE notes SET body = body || '-updated' WHERE id % 7 = 0`)
	e.exec(`DELETE FROM notes WHERE id % 11 = 0`)
	e.waitArchived()
	if got := keysIn(e.stores[0]); !slices.Equal(got, dataKeys) {
		t.Fatalf("a data key was created while S3 was down: file store keys %v, before %v", got, dataKeys)
	}

	s3.Faults.SetFault(testenv.FaultNone)
	agentLogHas(t, a, "store down at start answers now", "s3://wb-enc/shop")
	waitNoMissing(t, e)
	e.exec(`INSERT INTO notes VALUES (5000, 'after S3 came back', 1)`)
	cp := e.checkpoint("after S3 came back")
	e.waitArchived()
	waitNoMissing(t, e)
	a.stop(t)
	for _, u := range e.stores {
		if got := keysIn(u); !slices.Equal(got, dataKeys) {
			t.Fatalf("%s holds key objects %v, want exactly the archive's %v", store.Redact(u), got, dataKeys)
		}
	}
	if _, hits := rawObjects(t, s3URL, "stream-2001"); len(hits) > 0 {
		t.Fatalf("backfill stored plaintext in S3: %v", hits)
	}
	if r := e.run("restore", "--store", s3URL, "--target-dsn", e.pg.DSN("s3_alone"), "--latest"); r.code != 0 {
		t.Fatalf("restore from S3 alone:\n%s", r)
	}
	e.assertRestored("s3_alone", cp.sums, "S3 alone, down when the agent started")

	// The key's holders: the file store and S3. With S3 down and an empty
	// store beside it, no new data key may be created.
	s3.Faults.SetFault(testenv.FaultRefuse)
	fresh := "file://" + filepath.Join(t.TempDir(), "fresh")
	e.config = writeCfg("fresh.yaml", fresh, s3URL)
	r := e.run("agent")
	if last := lastLine(r); r.code != 1 || !strings.Contains(last, "data key") || !strings.Contains(last, "s3://wb-enc/shop") {
		t.Fatalf("agent with an empty store and the key's holder down: want exit 1 naming the data key and S3, got:\n%s", r)
	}
	if got := keysIn(fresh); len(got) != 0 {
		t.Fatalf("a data key was created while the store holding the current one was down: %v", got)
	}
}

// waitNoMissing waits until `wayback list` reports no store lacking an
// object another holds, and every store listed.
func waitNoMissing(t *testing.T, e *env) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	var l listing
	for time.Now().Before(deadline) {
		out := e.mustRun("list", "--json")
		if err := json.Unmarshal([]byte(out), &l); err != nil {
			t.Fatalf("list --json: %v\n%s", err, out)
		}
		done := len(l.Stores) > 0
		for _, s := range l.Stores {
			done = done && s.Error == "" && len(s.Missing) == 0
		}
		if done {
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("stores not backfilled within 90s: %+v", l.Stores)
}
