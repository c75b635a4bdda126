package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wayback-pitr/wayback/store"
	"github.com/wayback-pitr/wayback/testenv"
)

// cloudEnv is a source shipping to an in-process S3 and GCS server.
type cloudEnv struct {
	*env
	s3  *testenv.S3Server
	gcs *testenv.GCSServer
}

func newCloudEnv(t *testing.T, minCopies int) *cloudEnv {
	t.Helper()
	e := newEnv(t)
	c := &cloudEnv{env: e, s3: testenv.NewS3(t), gcs: testenv.NewGCS(t)}
	if err := c.s3.CreateBucket(t.Context(), "wb-s3"); err != nil {
		t.Fatal(err)
	}
	if err := c.gcs.CreateBucket(t.Context(), "wb-gcs"); err != nil {
		t.Fatal(err)
	}
	// Few retries, so that an outage is noticed within a test's patience.
	e.stores = []string{c.s3.URL("wb-s3", "shop") + "&max_attempts=2", c.gcs.URL("wb-gcs", "shop") + "&max_attempts=2"}
	cfg := fmt.Sprintf("postgres:\n  dsn: %q\nstores:\n  - %q\n  - %q\nmin_copies: %d\nflush_interval: 200ms\n", e.dsn, e.stores[0], e.stores[1], minCopies)
	if err := os.WriteFile(e.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return c
}

// listing is the part of `wayback list --json` these tests read.
type listing struct {
	Backups []struct{ ID string } `json:"backups"`
	Stores  []struct {
		URL      string   `json:"url"`
		Error    string   `json:"error"`
		Backups  []string `json:"backups"`
		Segments int      `json:"segments"`
		Missing  []string `json:"missing"`
	} `json:"stores"`
}

func (c *cloudEnv) list() listing {
	c.t.Helper()
	var l listing
	out := c.mustRun("list", "--json")
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		c.t.Fatalf("list --json: %v\n%s", err, out)
	}
	return l
}

// waitBackupCloud waits until both stores list a complete backup.
func (c *cloudEnv) waitBackupCloud() {
	c.t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		l := c.list()
		if len(l.Stores) == 2 && len(l.Stores[0].Backups) > 0 && len(l.Stores[1].Backups) > 0 {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	c.t.Fatal("no base backup in both clouds within 90s")
}

// waitComplete waits until no store lacks an object another store holds.
func (c *cloudEnv) waitComplete() {
	c.t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	var l listing
	for time.Now().Before(deadline) {
		l = c.list()
		if len(l.Stores[0].Missing)+len(l.Stores[1].Missing) == 0 && l.Stores[0].Error == "" && l.Stores[1].Error == "" {
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
	c.t.Fatalf("stores not backfilled within 90s: %+v", l.Stores)
}

// restoreFrom restores into db from a single store and compares.
func (c *cloudEnv) restoreFrom(storeURL, db string, want map[string]testenv.TableSum, what string) {
	c.t.Helper()
	c.mustRun("restore", "--store", storeURL, "--target-dsn", c.pg.DSN(db), "--latest")
	c.assertRestored(db, want, what)
}

func (c *cloudEnv) slotLSN() string {
	return c.query1("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'wayback'")
}

// TestCloudsEitherStoreAlone ships to S3 and GCS at once; each store alone
// restores the exact content.
func TestCloudsEitherStoreAlone(t *testing.T) {
	c := newCloudEnv(t, 2)
	c.exec(schema)
	c.insertCustomers(50)
	c.insertOrders(300)
	c.mustRun("setup")
	c.startAgent("--repair-interval", "1s")
	c.waitBackupCloud()
	c.insertOrders(500)
	c.exec(`UPDATE orders SET status = 'shipped' WHERE id % 4 = 0`)
	c.exec(`DELETE FROM customers WHERE name LIKE '%9'`)
	want := c.checkpoint("shipped")
	c.waitArchived()
	c.restoreFrom(c.stores[0], "from_s3", want.sums, "S3 alone")
	c.restoreFrom(c.stores[1], "from_gcs", want.sums, "GCS alone")
}

// TestCloudOutage: with min_copies 1 a failing store does not stop
// shipping and is backfilled when it returns; with min_copies 2 the slot
// holds during the outage and nothing is lost.
func TestCloudOutage(t *testing.T) {
	c := newCloudEnv(t, 1)
	c.exec(schema)
	c.insertCustomers(30)
	c.mustRun("setup")
	a := c.startAgent("--repair-interval", "1s")
	c.waitBackupCloud()

	c.gcs.Faults.SetFault(testenv.FaultError5xx)
	for i := 0; i < 10; i++ {
		c.insertOrders(50)
		c.exec(`UPDATE customers SET balance = coalesce(balance, 0) + 1`)
	}
	c.waitArchived() // durable in S3 alone: the slot advanced during the outage
	if l := c.list(); l.Stores[1].Error == "" {
		t.Fatalf("GCS answered during its outage? %+v", l.Stores[1])
	}
	c.gcs.Faults.SetFault(testenv.FaultNone)
	c.waitComplete()
	want := c.checkpoint("after outage")
	c.waitArchived()
	c.waitComplete()
	c.restoreFrom(c.stores[1], "gcs_backfilled", want.sums, "GCS after backfill")
	a.stop(t)
	// Drained: verify must now find both stores complete and valid.
	if v := c.verify(); !v.OK || v.Stores[0].Verdict != "ok" || v.Stores[1].Verdict != "ok" {
		t.Fatalf("verify after backfill: %+v", v)
	}

	// min_copies 2: an S3 outage holds the slot.
	cfg, _ := os.ReadFile(c.config)
	os.WriteFile(c.config, []byte(strings.Replace(string(cfg), "min_copies: 1", "min_copies: 2", 1)), 0o600)
	c.startAgent("--repair-interval", "1s")
	c.waitArchived()
	c.s3.Faults.SetFault(testenv.FaultRefuse)
	before := c.slotLSN()
	c.insertOrders(200)
	c.exec(`DELETE FROM orders WHERE id % 5 = 0`)
	time.Sleep(3 * time.Second)
	if after := c.slotLSN(); after != before {
		t.Fatalf("slot advanced from %s to %s while only one of two required stores was reachable", before, after)
	}
	c.s3.Faults.SetFault(testenv.FaultNone)
	want = c.checkpoint("after s3 outage")
	c.waitArchived()
	c.waitComplete()
	c.restoreFrom(c.stores[0], "s3_after", want.sums, "S3 after outage with min_copies 2")
	c.restoreFrom(c.stores[1], "gcs_after", want.sums, "GCS after S3 outage with min_copies 2")
}

// TestCloudCorruption: an object altered in one store is detected and
// restore succeeds from the other.
func TestCloudCorruption(t *testing.T) {
	c := newCloudEnv(t, 2)
	c.exec(schema)
	c.insertCustomers(40)
	c.mustRun("setup")
	a := c.startAgent()
	c.waitBackupCloud()
	c.insertOrders(400)
	want := c.checkpoint("before corruption")
	c.waitArchived()
	a.stop(t) // nothing in flight: both stores hold the same objects
	l := c.list()
	// Corrupt every segment and the backup's manifest in S3.
	segs, err := c.s3Keys("shop/segments/")
	if err != nil || len(segs) == 0 {
		t.Fatalf("segments in S3: %v %v", segs, err)
	}
	for _, k := range segs {
		if err := c.s3.CorruptObject(t.Context(), "wb-s3", k); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.s3.CorruptObject(t.Context(), "wb-s3", "shop/backups/"+l.Backups[0].ID+"/data/00000.copy.lz4"); err != nil {
		t.Fatal(err)
	}
	// verify names the corrupt store and passes the other.
	if v := c.verify(); v.OK || v.Stores[0].Verdict != "broken" || v.Stores[1].Verdict != "ok" {
		t.Fatalf("verify with corrupt S3 copies: %+v", v)
	}
	// Restore lists S3 first: every read falls back to GCS.
	r := c.run("restore", "--target-dsn", c.pg.DSN("restored"), "--latest")
	if r.code != 0 {
		t.Fatalf("restore with S3 corrupt: %s", r)
	}
	if !strings.Contains(r.stderr, "trying the next") {
		t.Fatalf("restore did not report falling back:\n%s", r.stderr)
	}
	c.assertRestored("restored", want.sums, "restore with corrupt S3 copies")
	// From S3 alone the corruption is an error, and nothing is left behind.
	r = c.run("restore", "--store", c.stores[0], "--target-dsn", c.pg.DSN("never"), "--latest")
	if r.code == 0 || !strings.Contains(r.stderr, "no valid copy") {
		t.Fatalf("restore from corrupt S3 alone: %s", r)
	}
	if c.dbExists("never") {
		t.Fatal("failed restore left a database behind")
	}
}

// verify runs `wayback verify --json` and decodes it; a non-zero exit is
// expected exactly when the JSON says not ok.
func (c *cloudEnv) verify() verifyJSON {
	c.t.Helper()
	r := c.run("verify", "--json")
	var v verifyJSON
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil || len(v.Stores) != 2 {
		c.t.Fatalf("verify --json: %v\n%s", err, r)
	}
	if (r.code == 0) != v.OK {
		c.t.Fatalf("verify exit status %d disagrees with ok=%v:\n%s", r.code, v.OK, r)
	}
	return v
}

// s3Keys lists bucket keys (with the store prefix "shop/") under prefix,
// through the S3 API.
func (c *cloudEnv) s3Keys(prefix string) ([]string, error) {
	s, err := store.Open(c.t.Context(), c.stores[0], nil)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	objs, err := s.List(c.t.Context(), strings.TrimPrefix(prefix, "shop/"))
	var keys []string
	for _, o := range objs {
		keys = append(keys, "shop/"+o.Key)
	}
	return keys, err
}

// TestCloudBadInput: a missing bucket, wrong credentials and an unreachable
// endpoint each give one clear line before any data is touched.
func TestCloudBadInput(t *testing.T) {
	c := newCloudEnv(t, 2)
	c.mustRun("setup")
	local := "file://" + filepath.Join(t.TempDir(), "local")
	cases := []struct {
		name, url, want string
	}{
		{"missing bucket", strings.Replace(c.stores[0], "s3://wb-s3/", "s3://no-such-bucket/", 1), "no-such-bucket"},
		{"wrong credentials", strings.Replace(c.stores[0], "access_key_id=", "access_key_id=wrong", 1), "credentials"},
		{"unreachable S3", "s3://wb-s3/shop?endpoint=http://127.0.0.1:1&region=us-east-1&path_style=true&access_key_id=a&secret_access_key=b&max_attempts=1", "127.0.0.1:1"},
		{"missing GCS bucket", strings.Replace(c.stores[1], "gs://wb-gcs/", "gs://no-such-gcs/", 1), "no-such-gcs"},
	}
	for _, tc := range cases {
		r := c.run("agent", "--store", local, "--store", tc.url)
		lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
		last := lines[len(lines)-1]
		if r.code == 0 || !strings.HasPrefix(last, "wayback: ") || !strings.Contains(last, tc.want) {
			t.Fatalf("%s: want a one-line error naming %q, got:\n%s", tc.name, tc.want, r)
		}
		if strings.Contains(r.stderr, "secret") && strings.Contains(r.stderr, c.s3.SecretAccessKey()) {
			t.Fatalf("%s: the secret key was printed", tc.name)
		}
		if _, err := os.Stat(strings.TrimPrefix(local, "file://") + "/archive.json"); err == nil {
			t.Fatalf("%s: data was written to the other store before the error", tc.name)
		}
	}
}
