package e2e

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wayback-pitr/wayback/store"
	"github.com/wayback-pitr/wayback/store/storetest"
	"github.com/wayback-pitr/wayback/testenv"
)

// TestBackupStoreFailsMidway: GCS answers `wayback backup`'s check, then
// refuses every request from halfway through the backup on (a fault that
// lets through half as many requests as a clean backup makes of GCS).
// With min_copies 1 the backup goes on in S3 alone and succeeds, naming
// GCS as lacking it (a warning, and "missing_from" in --json); GCS holds
// part of it but no manifest, and S3 alone restores it to the source's
// checksums. With min_copies 2 the same failure ends the backup within
// seconds with exit 1 and a last line naming GCS, and neither store holds
// a manifest of it; verify counts its leftover objects as no backup and
// calls neither store broken.
func TestBackupStoreFailsMidway(t *testing.T) {
	c := newCloudEnv(t, 1)
	ctx := t.Context()
	c.exec(schema)
	c.insertCustomers(30)
	c.insertOrders(100)
	// Many small tables: a backup uploads each as an object of its own, so
	// that half of a backup's requests end well inside its uploads.
	for i := range 40 {
		c.exec(fmt.Sprintf(`CREATE TABLE extra_%02d (id int PRIMARY KEY, v text);
			INSERT INTO extra_%02d SELECT g, md5(g::text) FROM generate_series(1, %d) g`, i, i, 50+i))
	}
	c.mustRun("setup")
	s3, gcs := openRaw(t, c.stores[0]), openRaw(t, c.stores[1])
	manifests := func(s store.Store) []string {
		var out []string
		for _, k := range storetest.ListKeys(t, ctx, s, "backups/") {
			if strings.HasSuffix(k, "/manifest.json") {
				out = append(out, k)
			}
		}
		return out
	}
	s3URL, gcsURL := "s3://wb-s3/shop", "gs://wb-gcs/shop"

	// A clean backup, counting the requests it makes of GCS (nothing else
	// talks to it meanwhile: no agent runs).
	before := c.gcs.Faults.Requests()
	c.mustRun("backup")
	perBackup := int(c.gcs.Faults.Requests() - before)
	if perBackup < 40 {
		t.Fatalf("a backup of 42 tables made %d requests of GCS: too few to cut it off halfway", perBackup)
	}
	want := c.checkpoint("the source, unchanged from here on")
	s3Before, gcsBefore := manifests(s3), manifests(gcs)
	if len(s3Before) != 1 || !slices.Equal(s3Before, gcsBefore) {
		t.Fatalf("after a clean backup: S3 manifests %v, GCS %v; want the same one in both", s3Before, gcsBefore)
	}

	// min_copies 1: GCS fails partway, the backup goes on in S3.
	injected := c.gcs.Faults.Injected()
	c.gcs.Faults.SetFaultAfter(perBackup/2, testenv.FaultRefuse, 0)
	began := time.Now()
	r := c.run("backup", "--json", "--min-copies", "1")
	took := time.Since(began)
	c.gcs.Faults.SetFault(testenv.FaultNone)
	if c.gcs.Faults.Injected() == injected {
		t.Fatalf("the fault never hit GCS during the backup (skip %d requests):\n%s", perBackup/2, r)
	}
	var out backupJSON
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &out) != nil {
		t.Fatalf("backup with GCS failing partway and min_copies 1 should succeed (took %s):\n%s", took, r)
	}
	if out.ID == "" || len(out.Stores) != 1 || !strings.HasPrefix(out.Stores[0], s3URL) ||
		len(out.MissingFrom) != 1 || !strings.HasPrefix(out.MissingFrom[0], gcsURL) {
		t.Fatalf("backup --json: want stores [S3] and missing_from [GCS], got:\n%s", r.stdout)
	}
	if !strings.Contains(r.stderr, "failed during the backup, so it lacks this backup") || !strings.Contains(r.stderr, gcsURL) {
		t.Fatalf("backup with GCS failing partway: no warning naming GCS as lacking the backup:\n%s", r.stderr)
	}
	if got := manifests(s3); len(got) != 2 || !slices.Contains(got, "backups/"+out.ID+"/manifest.json") {
		t.Fatalf("S3 manifests %v: want the clean backup's and %s's", got, out.ID)
	}
	gcsPart := storetest.ListKeys(t, ctx, gcs, "backups/"+out.ID+"/")
	if len(gcsPart) == 0 || slices.Contains(gcsPart, "backups/"+out.ID+"/manifest.json") {
		t.Fatalf("GCS holds %v of backup %s: want part of it (cut off partway), without the manifest", gcsPart, out.ID)
	}
	restored := c.mustRun("restore", "--store", c.stores[0], "--target-dsn", c.pg.DSN("s3_alone"), "--latest")
	if !strings.Contains(restored, "restored base backup "+out.ID) {
		t.Fatalf("restore from S3 did not use backup %s:\n%s", out.ID, restored)
	}
	c.assertRestored("s3_alone", want.sums, "S3 alone, from the backup GCS failed partway through")
	t.Logf("min_copies 1: GCS cut off after %d of about %d requests; backup took %s", perBackup/2, perBackup, took.Round(time.Millisecond))

	// min_copies 2: the same failure leaves too few stores; the backup
	// stops with one line and writes no manifest anywhere.
	s3Before, gcsBefore = manifests(s3), manifests(gcs)
	injected = c.gcs.Faults.Injected()
	c.gcs.Faults.SetFaultAfter(perBackup/2, testenv.FaultRefuse, 0)
	began = time.Now()
	r = c.run("backup", "--min-copies", "2")
	took = time.Since(began)
	c.gcs.Faults.SetFault(testenv.FaultNone)
	if c.gcs.Faults.Injected() == injected {
		t.Fatalf("the fault never hit GCS during the backup with min_copies 2:\n%s", r)
	}
	lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
	line := lines[len(lines)-1]
	for _, part := range []string{"wayback: backup ", gcsURL, "failed while it was being written", "min_copies is 2",
		"no manifest was written anywhere", "Run 'wayback backup' again when the stores answer"} {
		if r.code != 1 || !strings.Contains(line, part) || strings.Contains(line, s3URL) || !strings.HasPrefix(line, "wayback: ") {
			t.Fatalf("backup with GCS failing partway and min_copies 2: want exit 1 and a last line naming only GCS, with %q; got:\n%s", part, r)
		}
	}
	// Three quick tries of GCS's two attempts each, against a refusing
	// server: seconds. Holding (the agent's way) would have hit the
	// harness's 3-minute limit.
	if took > time.Minute {
		t.Fatalf("backup with too few stores left took %s to fail, want well under a minute", took)
	}
	if got := manifests(s3); !slices.Equal(got, s3Before) {
		t.Fatalf("failed backup wrote a manifest to S3: %v -> %v", s3Before, got)
	}
	if got := manifests(gcs); !slices.Equal(got, gcsBefore) {
		t.Fatalf("failed backup wrote a manifest to GCS: %v -> %v", gcsBefore, got)
	}
	m := regexp.MustCompile(`wayback: backup (\S+) failed`).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("no backup id in %q", line)
	}
	leftover := append(storetest.ListKeys(t, ctx, s3, "backups/"+m[1]+"/"), storetest.ListKeys(t, ctx, gcs, "backups/"+m[1]+"/")...)
	if len(leftover) == 0 {
		t.Fatalf("backup %s failed before writing anything: the fault did not cut it off partway", m[1])
	}
	t.Logf("min_copies 2: failed in %s, leaving %d objects of %s without a manifest:\n%s", took.Round(time.Millisecond), len(leftover), m[1], line)

	// The leftovers are no backup to verify: S3 holds two, GCS one (it
	// lacks the one it failed partway through), and neither is broken.
	v := c.verify()
	if v.Stores[0].Backups != 2 || v.Stores[1].Backups != 1 || v.Stores[0].Verdict == "broken" || v.Stores[1].Verdict == "broken" {
		t.Fatalf("verify after the failed backup: want S3 with 2 backups, GCS with 1, neither broken; got %+v", v.Stores)
	}
}
