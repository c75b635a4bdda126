package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wayback-pitr/wayback/basebackup"
	"github.com/wayback-pitr/wayback/store"
	"github.com/wayback-pitr/wayback/testenv"
	"github.com/wayback-pitr/wayback/wal"
)

// lsnCheckpoint is the source's content at an LSN: every transaction
// committed before it and none after (writes are quiesced around it).
type lsnCheckpoint struct {
	name string
	lsn  string
	sums map[string]testenv.TableSum
}

func (e *env) lsnCheckpoint(name string) lsnCheckpoint {
	e.t.Helper()
	sums, err := testenv.Checksums(e.t.Context(), e.dsn)
	if err != nil {
		e.t.Fatal(err)
	}
	return lsnCheckpoint{name: name, lsn: e.query1("SELECT pg_current_wal_insert_lsn()::text"), sums: sums}
}

// TestRetentionKilled covers acceptance 1 and 2 of issue 6 end to end and
// black-box (TestRetention drives the same from inside): four real
// base backups (their manifests then dated one day apart, as four
// daily backups would be), segments between them, a GFS policy keeping
// the two newest days. `wayback retention` is killed with SIGKILL at many
// points of its deletions (an S3 store hangs on the n-th request, then the
// process is killed); after every kill `verify` accepts the archive and
// the instant right after the oldest kept backup restores exactly. A final
// run completes the expiry; every checkpoint after the oldest kept backup
// then restores exactly, the expired backups and the segments below the
// oldest kept backup are gone from both stores, and a checkpoint before it
// is refused with one clear line.
func TestRetentionKilled(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	s3 := testenv.NewS3(t)
	if err := s3.CreateBucket(ctx, "wb-ret"); err != nil {
		t.Fatal(err)
	}
	e.stores = []string{e.stores[0], s3.URL("wb-ret", "app") + "&max_attempts=1"}
	dir := t.TempDir()
	base := fmt.Sprintf("postgres:\n  dsn: %q\nstores:\n  - %q\n  - %q\nflush_interval: 200ms\n", e.dsn, e.stores[0], e.stores[1])
	e.config = filepath.Join(dir, "wayback.yaml")
	if err := os.WriteFile(e.config, []byte(base), 0o600); err != nil {
		t.Fatal(err)
	}
	retCfg := filepath.Join(dir, "retention.yaml")
	if err := os.WriteFile(retCfg, []byte(base+"retention:\n  daily: 2\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	e.exec(`CREATE TABLE acct (id int PRIMARY KEY, owner text NOT NULL, balance numeric NOT NULL, note text)`)
	e.exec(`INSERT INTO acct SELECT g, 'owner-' || g, g * 10, NULL FROM generate_series(1, 500) g`)
	e.mustRun("setup")
	agent := e.startAgent()
	waitManifests(t, e.storeDir(0), 1)
	e.waitArchived()

	var cps []lsnCheckpoint // in stream order
	phase := func(i int) {
		e.exec(fmt.Sprintf(`UPDATE acct SET balance = balance + %d, note = 'phase %d' WHERE id %% 5 = %d`, i, i, i%5))
		e.exec(fmt.Sprintf(`INSERT INTO acct SELECT g, 'late-' || g, g, 'phase %d' FROM generate_series(%d, %d) g`, i, 1000+100*i, 1049+100*i))
		e.exec(fmt.Sprintf(`DELETE FROM acct WHERE id %% 13 = %d`, i))
		e.waitArchived()
		cps = append(cps, e.lsnCheckpoint(fmt.Sprintf("after phase %d", i)))
	}
	// Backup 0 is the agent's initial one; 1, 2, 3 are taken by hand, with
	// changes between them (two checkpoints between the two kept ones).
	phase(0)
	e.mustRun("backup")
	phase(1)
	e.mustRun("backup")
	phase(2)
	phase(3)
	e.mustRun("backup")
	phase(4)
	// Archive past the last checkpoint, so that it is inside the range.
	e.waitArchived()
	agent.stop(t)

	// Date the backups one day apart, the newest today: daily: 2 keeps the
	// two newest and expires the two oldest.
	stores := openStores(t, e.stores)
	ids := redateBackups(t, stores, time.Now().UTC())
	if len(ids) != 4 {
		t.Fatalf("want 4 backups, have %v", ids)
	}
	expired, kept := ids[:2], ids[2:]
	oldestKept := backupLSN(t, stores[0], kept[0])
	var after []lsnCheckpoint // checkpoints after the oldest kept backup
	var before lsnCheckpoint
	for _, cp := range cps {
		l, err := wal.ParseLSN(cp.lsn)
		if err != nil {
			t.Fatal(err)
		}
		if l > oldestKept {
			after = append(after, cp)
		} else {
			before = cp
		}
	}
	if len(after) < 3 || before.name == "" {
		t.Fatalf("checkpoints around the oldest kept backup (LSN %s): %d after, before %q", oldestKept, len(after), before.name)
	}
	expirable := func() (n int, left []string) {
		for _, s := range stores {
			objs, err := s.List(ctx, "")
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range objs {
				gone := false
				for _, id := range expired {
					gone = gone || strings.HasPrefix(o.Key, basebackup.Prefix+id+"/")
				}
				if _, to, err := wal.ParseSegmentKey(o.Key); err == nil && to <= oldestKept {
					gone = true
				}
				if strings.HasPrefix(o.Key, basebackup.Prefix) || strings.HasPrefix(o.Key, wal.SegmentPrefix) {
					n++
				}
				if gone {
					left = append(left, s.URL()+" "+o.Key)
				}
			}
		}
		return n, left
	}
	total, toExpire := expirable()
	if len(toExpire) < 6 {
		t.Fatalf("only %d objects to expire: the test would prove little: %v", len(toExpire), toExpire)
	}

	// A dry run deletes nothing and names both expired backups.
	dry := e.run("retention", "--dry-run", "--config", retCfg)
	if dry.code != 0 {
		t.Fatalf("retention --dry-run:\n%s", dry)
	}
	for _, id := range expired {
		if !strings.Contains(dry.stdout, id) {
			t.Errorf("retention --dry-run does not name expired backup %s:\n%s", id, dry.stdout)
		}
	}
	if n, left := expirable(); n != total || len(left) != len(toExpire) {
		t.Fatalf("retention --dry-run deleted objects: %d -> %d objects, %d -> %d expirable", total, n, len(toExpire), len(left))
	}
	jdry := e.run("retention", "--dry-run", "--json", "--config", retCfg)
	if jdry.code != 0 || !json.Valid([]byte(jdry.stdout)) {
		t.Fatalf("retention --dry-run --json does not print JSON:\n%s", jdry)
	}

	// Kill the expiry at growing depths: the S3 store hangs on the n-th
	// request of the run, and the process is killed while it waits.
	partial := 0
	killed := 0
	for skip := 2; ; skip += 3 {
		if killed > 40 {
			t.Fatalf("retention never completed after %d kills", killed)
		}
		inj0 := s3.Faults.Injected()
		s3.Faults.SetFaultAfter(skip, testenv.FaultHang, 0)
		cmd := exec.Command(waybackBin, "retention", "--config", retCfg)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		finished := false
		deadline := time.Now().Add(60 * time.Second)
		for !finished {
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("retention (hang after %d requests) failed instead of hanging: %v\n%s", skip, err, out.String())
				}
				finished = true
				continue
			case <-time.After(20 * time.Millisecond):
			}
			if s3.Faults.Injected() > inj0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("retention neither finished nor reached request %d in 60s", skip)
			}
		}
		if !finished {
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			<-done
		}
		s3.Faults.SetFault(testenv.FaultNone)
		if finished {
			break
		}
		killed++
		_, left := expirable()
		if len(left) > 0 && len(left) < len(toExpire) {
			partial++
		}
		if r := e.run("verify"); r.code != 0 {
			t.Fatalf("verify after retention was killed at S3 request %d (%d of %d expirable objects left):\n%s", skip, len(left), len(toExpire), r)
		}
		db := fmt.Sprintf("killed%d", killed)
		if r := e.run("restore", "--target-dsn", e.pg.DSN(db), "--to-lsn", after[0].lsn); r.code != 0 {
			t.Fatalf("restore after retention was killed at S3 request %d:\n%s", skip, r)
		}
		e.assertRestored(db, after[0].sums, fmt.Sprintf("%s, retention killed at S3 request %d", after[0].name, skip))
	}
	if partial == 0 {
		t.Fatalf("no kill (of %d) interrupted the deletions half-way: the crash test proved nothing", killed)
	}
	t.Logf("retention killed %d times, %d of them half-way through the deletions", killed, partial)

	// A last complete run: idempotent over what the killed runs deleted.
	if r := e.run("retention", "--config", retCfg); r.code != 0 {
		t.Fatalf("retention:\n%s", r)
	}
	if _, left := expirable(); len(left) != 0 {
		t.Fatalf("after retention these expired objects remain:\n%s", strings.Join(left, "\n"))
	}
	for _, s := range stores {
		for _, id := range kept {
			if _, err := store.ReadAll(ctx, s, basebackup.ManifestKey(id)); err != nil {
				t.Fatalf("kept backup %s: %v", id, err)
			}
		}
	}
	if r := e.run("verify"); r.code != 0 {
		t.Fatalf("verify after retention:\n%s", r)
	}
	for i, cp := range after {
		db := fmt.Sprintf("after%d", i)
		if r := e.run("restore", "--target-dsn", e.pg.DSN(db), "--to-lsn", cp.lsn); r.code != 0 {
			t.Fatalf("restore %s (LSN %s):\n%s", cp.name, cp.lsn, r)
		}
		e.assertRestored(db, cp.sums, cp.name+" after retention")
	}
	r := e.run("restore", "--target-dsn", e.pg.DSN("tooold"), "--to-lsn", before.lsn)
	if r.code == 0 || !strings.HasPrefix(r.stderr, "wayback:") || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
		t.Fatalf("restore before the oldest kept backup should fail with one line:\n%s", r)
	}
	if e.dbExists("tooold") {
		t.Fatal("a refused restore left its target database behind")
	}
}

// waitManifests waits until dir (a file store) holds n backup manifests.
func waitManifests(t *testing.T, dir string, n int) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		if m, _ := filepath.Glob(filepath.Join(dir, "backups", "*", "manifest.json")); len(m) >= n {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s did not get %d base backups within 90s", dir, n)
}

func openStores(t *testing.T, urls []string) []store.Store {
	t.Helper()
	var out []store.Store
	for _, u := range urls {
		s, err := store.Open(t.Context(), u, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		out = append(out, s)
	}
	return out
}

// redateBackups rewrites every backup manifest in every store so that the
// backups, in LSN order, are one day apart with the newest at now. It
// returns their IDs in that order. Only the times change: restores in
// the test go by LSN, which the manifests keep.
func redateBackups(t *testing.T, stores []store.Store, now time.Time) []string {
	t.Helper()
	ctx := t.Context()
	objs, err := stores[0].List(ctx, basebackup.Prefix)
	if err != nil {
		t.Fatal(err)
	}
	type bk struct {
		id  string
		lsn wal.LSN
	}
	var bks []bk
	for _, o := range objs {
		if id := basebackup.IDFromKey(o.Key); id != "" {
			bks = append(bks, bk{id, backupLSN(t, stores[0], id)})
		}
	}
	sort.Slice(bks, func(i, j int) bool { return bks[i].lsn < bks[j].lsn })
	var ids []string
	for i, b := range bks {
		at := now.Add(-time.Duration(len(bks)-1-i) * 24 * time.Hour)
		for _, s := range stores {
			raw, err := store.ReadAll(ctx, s, basebackup.ManifestKey(b.id))
			if err != nil {
				t.Fatal(err)
			}
			var m map[string]any
			if err := json.Unmarshal(raw, &m); err != nil {
				t.Fatal(err)
			}
			m["started_at"] = at.Add(-time.Second).Format(time.RFC3339Nano)
			m["consistent_time"] = at.Format(time.RFC3339Nano)
			m["finished_at"] = at.Add(time.Second).Format(time.RFC3339Nano)
			out, _ := json.MarshalIndent(m, "", "  ")
			if err := store.PutBytes(ctx, s, basebackup.ManifestKey(b.id), out); err != nil {
				t.Fatal(err)
			}
		}
		ids = append(ids, b.id)
	}
	return ids
}

func backupLSN(t *testing.T, s store.Store, id string) wal.LSN {
	t.Helper()
	raw, err := store.ReadAll(t.Context(), s, basebackup.ManifestKey(id))
	if err != nil {
		t.Fatal(err)
	}
	m, err := basebackup.ParseManifest(raw)
	if err != nil {
		t.Fatal(err)
	}
	return m.LSN()
}
