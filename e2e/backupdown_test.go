package e2e

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wayback-pitr/wayback/store/storetest"
	"github.com/wayback-pitr/wayback/testenv"
)

// backupJSON is the part of `wayback backup --json` these tests read.
type backupJSON struct {
	ID          string            `json:"id"`
	Tables      []json.RawMessage `json:"tables"`
	Stores      []string          `json:"stores"`
	MissingFrom []string          `json:"missing_from"`
}

// TestBackupWithStoreDown: `wayback backup` beside a running agent, with
// one of two stores (GCS) down. With min_copies 2 it fails with one line
// naming GCS and writes nothing; `wayback retention` fails the same way and
// deletes nothing. With min_copies 1 it backs up to S3, warns that GCS
// lacks the backup and says so in --json; once GCS answers the agent
// backfills it, and a restore from GCS alone equals the source. When only
// the backup's host cannot reach GCS (the agent's writes to it never fail),
// the agent's audit of backups/ finds what GCS lacks and backfills it all
// the same, and verify accepts both stores.
func TestBackupWithStoreDown(t *testing.T) {
	c := newCloudEnv(t, 1)
	ctx := t.Context()
	c.exec(schema)
	c.insertCustomers(30)
	c.insertOrders(100)
	c.mustRun("setup")
	a := c.startAgent("--repair-interval", "1s")
	c.waitBackupCloud()
	c.insertOrders(60)
	c.waitArchived()
	c.waitComplete()
	s3 := openRaw(t, c.stores[0])
	backupKeys := func() []string { return storetest.ListKeys(t, ctx, s3, "backups/") }
	oneLine := func(what string, r result, parts ...string) {
		t.Helper()
		line := strings.TrimSpace(r.stderr)
		ok := r.code == 1 && !strings.Contains(line, "\n") && strings.HasPrefix(line, "wayback: ") && !strings.Contains(line, "s3://wb-s3")
		for _, p := range parts {
			ok = ok && strings.Contains(line, p)
		}
		if !ok {
			t.Fatalf("%s with GCS down: want exit 1 and one line naming only GCS with %q, got:\n%s", what, parts, r)
		}
	}

	// GCS down. Fewer than min_copies answer: nothing is written.
	c.gcs.Faults.SetFault(testenv.FaultRefuse)
	before := backupKeys()
	r := c.run("backup", "--min-copies", "2")
	oneLine("backup with min_copies 2", r, "gs://wb-gcs/shop", "1 of 2 stores answered but min_copies is 2, so nothing was written")
	if after := backupKeys(); !slices.Equal(after, before) {
		t.Fatalf("backup that failed for want of stores wrote to S3: %v -> %v", before, after)
	}
	// Retention needs every store; two backups, --last 1 would expire one.
	r = c.run("retention", "--last", "1")
	oneLine("retention", r, "gs://wb-gcs/shop", "nothing was deleted", "again when every store answers")
	if after := backupKeys(); !slices.Equal(after, before) {
		t.Fatalf("retention deleted from S3 with GCS down: %v -> %v", before, after)
	}

	// min_copies 1: the backup goes to S3 and says GCS lacks it.
	c.insertOrders(40)
	c.exec(`UPDATE customers SET balance = coalesce(balance, 0) + 7`)
	r = c.run("backup", "--json")
	var out backupJSON
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &out) != nil {
		t.Fatalf("backup with GCS down and min_copies 1 should succeed:\n%s", r)
	}
	if out.ID == "" || len(out.Tables) == 0 || len(out.Stores) != 1 || !strings.HasPrefix(out.Stores[0], "s3://wb-s3/shop") ||
		len(out.MissingFrom) != 1 || !strings.HasPrefix(out.MissingFrom[0], "gs://wb-gcs/shop") {
		t.Fatalf("backup --json: want the manifest with stores [S3] and missing_from [GCS], got:\n%s", r.stdout)
	}
	if !strings.Contains(r.stderr, "lacks this backup") || !strings.Contains(r.stderr, "gs://wb-gcs/shop") || !strings.Contains(r.stderr, "backfills") {
		t.Fatalf("backup with GCS down: no warning naming GCS on stderr:\n%s", r.stderr)
	}
	if !slices.Contains(backupKeys(), "backups/"+out.ID+"/manifest.json") {
		t.Fatalf("backup %s has no manifest in S3", out.ID)
	}

	// GCS answers: the running agent backfills the backup, and GCS alone
	// restores it to the source's content.
	c.gcs.Faults.SetFault(testenv.FaultNone)
	c.waitComplete()
	want := c.checkpoint("after the backup with GCS down")
	c.waitArchived()
	c.waitComplete()
	restored := c.mustRun("restore", "--store", c.stores[1], "--target-dsn", c.pg.DSN("gcs_alone"), "--latest")
	if !strings.Contains(restored, "restored base backup "+out.ID) {
		t.Fatalf("restore from GCS alone did not use backup %s:\n%s", out.ID, restored)
	}
	c.assertRestored("gcs_alone", want.sums, "GCS alone, after a backup taken while it was down")

	// GCS unreachable from the backup's host only: the agent sees no
	// failure, so only its audit of backups/ can find what GCS lacks.
	audits := func() int {
		b, _ := os.ReadFile(a.log)
		n := 0
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, "store lacks objects another store holds") && strings.Contains(line, "gs://wb-gcs/shop") {
				n++
			}
		}
		return n
	}
	auditsBefore := audits()
	u, err := url.Parse(c.stores[1])
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("endpoint", "http://127.0.0.1:1")
	u.RawQuery = q.Encode()
	cut := filepath.Join(t.TempDir(), "cut-off.yaml")
	cfg := fmt.Sprintf("postgres:\n  dsn: %q\nstores:\n  - %q\n  - %q\nmin_copies: 1\n", c.dsn, c.stores[0], u.String())
	if err := os.WriteFile(cut, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	c.insertOrders(20)
	r = c.run("backup", "--json", "--config", cut)
	var cutOut backupJSON
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &cutOut) != nil || len(cutOut.Stores) != 1 || len(cutOut.MissingFrom) != 1 {
		t.Fatalf("backup with GCS unreachable from here: want success stored in S3 alone:\n%s", r)
	}
	for deadline := time.Now().Add(60 * time.Second); audits() == auditsBefore; time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the agent's audit did not find the backup GCS lacks within 60s")
		}
	}
	c.waitComplete()
	gcsKeys := storetest.ListKeys(t, ctx, openRaw(t, c.stores[1]), "backups/"+cutOut.ID+"/")
	if !slices.Contains(gcsKeys, "backups/"+cutOut.ID+"/manifest.json") {
		t.Fatalf("GCS lacks backup %s after the agent's audit: %v", cutOut.ID, gcsKeys)
	}
	c.waitArchived()
	a.stop(t)
	if v := c.verify(); !v.OK || v.Stores[0].Verdict != "ok" || v.Stores[1].Verdict != "ok" || v.Stores[1].Backups != 3 {
		t.Fatalf("verify after the backfills: want both stores ok with 3 backups, got %+v", v)
	}
}
