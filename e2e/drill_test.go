package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wayback-pitr/wayback/basebackup"
	"github.com/wayback-pitr/wayback/wal"
)

// drillJSON is the part of `wayback verify --deep --json` scripts rely on.
type drillJSON struct {
	OK   bool `json:"ok"` // the per-store verdicts
	Deep struct {
		OK     bool   `json:"ok"`
		Backup string `json:"backup"`
		Tables []struct {
			Table    string `json:"table"`
			WantRows int64  `json:"want_rows"`
			GotRows  int64  `json:"got_rows"`
			WantSum  string `json:"want_sum"`
			GotSum   string `json:"got_sum"`
			OK       bool   `json:"ok"`
			Problem  string `json:"problem"`
		} `json:"tables"`
		Bad    int `json:"bad_tables"`
		Replay struct {
			OK           bool   `json:"ok"`
			Transactions int    `json:"transactions"`
			ReachedLSN   string `json:"reached_lsn"`
			Error        string `json:"error"`
		} `json:"replay"`
	} `json:"deep"`
}

// TestDrill runs restore drills on a real archive: a clean one passes
// (local scratch cluster and a user-named scratch database, which is gone
// afterwards); a backup data file swapped for the same table's file of an
// older backup, re-checksummed in the manifest so that the object-level
// verify passes, fails naming the table; a segment after the newest backup
// removed from every store fails the replay.
func TestDrill(t *testing.T) {
	e := newEnv(t)
	e.exec(`CREATE TABLE items (id bigserial PRIMARY KEY, name text, qty int, seen date)`)
	e.exec(`CREATE TABLE notes (id int PRIMARY KEY, body text)`)
	e.exec(`INSERT INTO items (name, qty, seen) SELECT 'item ' || g, g, date '2026-01-01' + g FROM generate_series(1, 500) g`)
	e.exec(`INSERT INTO notes SELECT g, repeat('n', g % 50) FROM generate_series(1, 100) g`)
	e.mustRun("setup")
	a := e.startAgent()
	e.waitBackup(1)
	// Same row count, other contents: the first backup's items file is a
	// valid but wrong stand-in for the second's.
	e.exec(`UPDATE items SET qty = qty * 2 WHERE id % 3 = 0`)
	e.waitArchived()
	e.mustRun("backup")
	for i := range 4 {
		e.exec(`INSERT INTO notes SELECT g, 'later' FROM generate_series(1000 + $1::int * 10, 1009 + $1::int * 10) g`, i)
		e.exec(`UPDATE items SET name = name || '+' WHERE id % 7 = $1`, i)
		time.Sleep(250 * time.Millisecond)
	}
	e.waitArchived()
	a.stop(t)

	deep := func(args ...string) (result, drillJSON) {
		t.Helper()
		r := e.run(append([]string{"verify", "--deep", "--json"}, args...)...)
		var v drillJSON
		if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
			t.Fatalf("verify --deep --json: %v\n%s", err, r)
		}
		return r, v
	}

	// Clean archive, private local cluster.
	r := e.run("verify", "--deep")
	if r.code != 0 || !strings.Contains(r.stdout, "drill passed") || !strings.Contains(r.stdout, "2 tables read back, 0 bad") {
		t.Fatalf("deep verify of a clean archive:\n%s", r)
	}
	t.Logf("clean drill:\n%s", r.stdout)
	// Clean archive, user-named scratch database that does not exist yet.
	r, v := deep("--scratch-dsn", e.pg.DSN("drill_scratch"))
	if r.code != 0 || !v.OK || !v.Deep.OK || len(v.Deep.Tables) != 2 || v.Deep.Bad != 0 || !v.Deep.Replay.OK || v.Deep.Replay.Transactions < 8 {
		t.Fatalf("deep verify --json of a clean archive:\n%s", r)
	}
	for _, tc := range v.Deep.Tables {
		if !tc.OK || tc.WantSum == "" || tc.WantSum != tc.GotSum || tc.WantRows != tc.GotRows {
			t.Fatalf("table check %+v", tc)
		}
	}
	if e.dbExists("drill_scratch") {
		t.Fatal("the scratch database the drill created is still there")
	}
	// A non-empty scratch database is refused before anything is written.
	e.exec(`SELECT 1`)
	r = e.run("verify", "--deep", "--scratch-dsn", e.dsn)
	if r.code == 0 || !strings.Contains(r.stderr, "wayback: ") || !strings.Contains(r.stderr, "is not empty") {
		t.Fatalf("deep verify into the non-empty source database:\n%s", r)
	}

	// Swap the newest backup's items file for the older backup's.
	manifests, _ := filepath.Glob(filepath.Join(e.storeDir(0), "backups", "*", "manifest.json"))
	sort.Strings(manifests) // IDs start with the consistent time
	if len(manifests) != 2 {
		t.Fatalf("manifests: %v", manifests)
	}
	read := func(p string) *basebackup.Manifest {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		m, err := basebackup.ParseManifest(b)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	oldM, newM := read(manifests[0]), read(manifests[1])
	fileOf := func(m *basebackup.Manifest, name string) (int, basebackup.FileRef) {
		for i, tb := range m.Tables {
			if tb.Name == name {
				return i, tb.Files[0]
			}
		}
		t.Fatalf("no table %s in backup %s", name, m.ID)
		return 0, basebackup.FileRef{}
	}
	_, oldRef := fileOf(oldM, "items")
	ti, newRef := fileOf(newM, "items")
	if oldM.Tables[0].RowSum == "" || newM.Tables[ti].Rows != 500 {
		t.Fatalf("manifests lack row digests or items rows: %+v", newM.Tables)
	}
	saved := map[string][]byte{}
	for i := range 2 {
		dir := e.storeDir(i)
		data, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(oldRef.Key)))
		if err != nil {
			t.Fatal(err)
		}
		target := filepath.Join(dir, filepath.FromSlash(newRef.Key))
		mpath := filepath.Join(dir, filepath.FromSlash(newM.Key()))
		for _, p := range []string{target, mpath} {
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			saved[p] = b
		}
		if err := os.WriteFile(target, data, 0o644); err != nil {
			t.Fatal(err)
		}
		m := read(mpath)
		sum := sha256.Sum256(data)
		m.Tables[ti].Files[0].Size, m.Tables[ti].Files[0].RawSize, m.Tables[ti].Files[0].SHA256 = int64(len(data)), oldRef.RawSize, hex.EncodeToString(sum[:])
		mb, err := json.MarshalIndent(m, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(mpath, mb, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// A scratch database in the source cluster: no initdb per drill.
	scratchDSN := e.pg.DSN("drill_scratch")
	r = e.run("verify", "--deep", "--scratch-dsn", scratchDSN)
	t.Logf("drill with a swapped data file:\n%s", r)
	if !strings.Contains(r.stdout, "verify: all 2 stores ok") {
		t.Fatalf("the object-level verify should pass on a re-checksummed file (the deep check is what catches it):\n%s", r)
	}
	if r.code == 0 || !strings.Contains(r.stdout, "BAD  public.items: row digest") || !strings.Contains(r.stdout, "2 tables read back, 1 bad") {
		t.Fatalf("deep verify with a swapped data file should mark public.items bad:\n%s", r)
	}
	if lines := strings.Split(strings.TrimSpace(r.stderr), "\n"); !strings.HasPrefix(lines[len(lines)-1], "wayback: restore drill of backup "+newM.ID+" failed: table public.items: row digest") {
		t.Fatalf("the error line should name table public.items:\n%s", r)
	}
	for p, b := range saved {
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// Remove a segment after the newest backup from every store.
	var after []string
	paths, _ := filepath.Glob(filepath.Join(e.storeDir(0), "segments", "*.seg"))
	for _, p := range paths {
		key := "segments/" + filepath.Base(p)
		from, _, err := wal.ParseSegmentKey(key)
		if err != nil {
			t.Fatal(err)
		}
		if st, err := os.Stat(p); err == nil && from >= newM.LSN() && st.Size() > 200 {
			after = append(after, key)
		}
	}
	sort.Strings(after)
	if len(after) < 2 {
		t.Fatalf("only %d segments with data after the newest backup", len(after))
	}
	gone := after[0]
	for i := range 2 {
		if err := os.Remove(filepath.Join(e.storeDir(i), filepath.FromSlash(gone))); err != nil {
			t.Fatal(err)
		}
	}
	r, v = deep("--scratch-dsn", scratchDSN)
	t.Logf("drill with a segment gone:\n%s", r)
	if r.code == 0 || v.Deep.OK || v.Deep.Replay.OK || !strings.Contains(v.Deep.Replay.Error, "gap in the archive") {
		t.Fatalf("deep verify with a segment removed from every store passed:\n%s", r)
	}
	if v.Deep.Bad != 0 || len(v.Deep.Tables) != 2 {
		t.Fatalf("the backup itself is fine again: %+v", v.Deep.Tables)
	}
}

// TestScheduledDrill runs the agent with verify.schedule on an encrypted
// archive: it drills on its own (reading through the key), passes on a
// good archive, and reports a failed drill once a segment after the
// backup is gone from every store.
func TestScheduledDrill(t *testing.T) {
	e := newEnv(t)
	keyFile, _ := writeKeyFile(t, t.TempDir(), "wayback.key")
	f, err := os.OpenFile(e.config, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("verify:\n  schedule: '@every 2s'\nencryption:\n  key_file: " + strconv.Quote(keyFile) + "\n")
	f.Close()
	e.exec(`CREATE TABLE items (id int PRIMARY KEY, v text)`)
	e.exec(`INSERT INTO items SELECT g, 'v' || g FROM generate_series(1, 300) g`)
	e.mustRun("setup")
	a := e.startAgent()
	e.waitBackup(1)
	for i := range 3 {
		e.exec(`UPDATE items SET v = v || '+' WHERE id % 3 = $1`, i)
		time.Sleep(250 * time.Millisecond)
	}
	e.waitArchived()

	// waitLog waits for a JSON log entry with this message after skip
	// entries and returns it with the count of entries seen.
	waitLog := func(msg string, skip int) (map[string]any, int) {
		t.Helper()
		deadline := time.Now().Add(90 * time.Second)
		for time.Now().Before(deadline) {
			b, _ := os.ReadFile(a.log)
			lines := strings.Split(string(b), "\n")
			for i := skip; i < len(lines); i++ {
				var entry map[string]any
				if json.Unmarshal([]byte(lines[i]), &entry) == nil && entry["msg"] == msg {
					return entry, i + 1
				}
			}
			time.Sleep(200 * time.Millisecond)
		}
		b, _ := os.ReadFile(a.log)
		t.Fatalf("no %q in the agent log within 90s:\n%s", msg, tail(string(b), 30))
		return nil, 0
	}
	entry, seen := waitLog("restore drill passed", 0)
	if entry["tables"] != float64(1) || entry["transactions"].(float64) < 1 {
		t.Fatalf("scheduled drill entry: %v", entry)
	}

	// Remove the backup's first data-bearing segment everywhere. The
	// manifest is encrypted; the backup ID ends in its LSN as 16 hex digits.
	id, _ := entry["backup"].(string)
	n, err := strconv.ParseUint(id[strings.LastIndexByte(id, '-')+1:], 16, 64)
	if err != nil {
		t.Fatalf("backup ID %q: %v", id, err)
	}
	backupLSN := wal.LSN(n)
	var after []string
	paths, _ := filepath.Glob(filepath.Join(e.storeDir(0), "segments", "*.seg"))
	for _, p := range paths {
		key := "segments/" + filepath.Base(p)
		from, _, err := wal.ParseSegmentKey(key)
		if err != nil {
			t.Fatal(err)
		}
		if st, err := os.Stat(p); err == nil && from >= backupLSN && st.Size() > 200 {
			after = append(after, key)
		}
	}
	sort.Strings(after)
	if len(after) < 2 {
		t.Fatalf("only %d segments with data after the backup", len(after))
	}
	for i := range 2 {
		if err := os.Remove(filepath.Join(e.storeDir(i), filepath.FromSlash(after[0]))); err != nil {
			t.Fatal(err)
		}
	}
	entry, _ = waitLog("restore drill failed", seen)
	if msg, _ := entry["error"].(string); !strings.Contains(msg, "gap in the archive") {
		t.Fatalf("failed drill entry should name the gap: %v", entry)
	}
	a.stop(t)
}

// TestDrillEveryType guards against false alarms: a backup of every type
// family (the fidelity test's columns, TOASTed values, a generated column,
// duplicate keyless rows, partitions), taken under a database whose output
// settings differ from wayback's pinned ones, reads back with the digests
// its manifest recorded.
func TestDrillEveryType(t *testing.T) {
	e := newEnv(t)
	cols := fidelityColumns()
	e.exec(`ALTER DATABASE app SET DateStyle = 'SQL, DMY'; ALTER DATABASE app SET IntervalStyle = 'sql_standard';
		ALTER DATABASE app SET extra_float_digits = 0; ALTER DATABASE app SET TimeZone = 'America/St_Johns';
		ALTER DATABASE app SET bytea_output = 'escape'`)
	e.exec(fidelitySchema(cols))
	e.exec(insertTypeRows("types", cols, 1, 12, 0))
	e.exec(insertTypeRows("types_nokey", cols, 1, 12, 0) + insertTypeRows("types_nokey", cols, 1, 12, 0))
	e.exec(`CREATE TABLE toasty (id int PRIMARY KEY, big text, blob bytea);
		INSERT INTO toasty SELECT g, (SELECT string_agg(md5(g::text || h::text), '') FROM generate_series(1, 400) h),
			decode((SELECT string_agg(md5(h::text || g::text), '') FROM generate_series(1, 300) h), 'hex') FROM generate_series(1, 3) g;
		CREATE TABLE gen (id int PRIMARY KEY, a int, b int GENERATED ALWAYS AS (a * 2) STORED);
		INSERT INTO gen (id, a) SELECT g, g FROM generate_series(1, 5) g;
		CREATE TABLE measure (id int, region text, v float8, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
		CREATE TABLE measure_eu PARTITION OF measure FOR VALUES IN ('eu');
		CREATE TABLE measure_other PARTITION OF measure DEFAULT;
		INSERT INTO measure SELECT g, (ARRAY['eu', 'us'])[g % 2 + 1], g / 3.0 FROM generate_series(1, 30) g`)
	e.mustRun("setup", "--replica-identity-full")
	a := e.startAgent()
	e.waitBackup(1)
	e.exec(`UPDATE gen SET a = a + 1`)
	e.waitArchived()
	a.stop(t)

	r := e.run("verify", "--deep", "--json")
	var v drillJSON
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
		t.Fatalf("verify --deep --json: %v\n%s", err, r)
	}
	if r.code != 0 || !v.Deep.OK || v.Deep.Bad != 0 || len(v.Deep.Tables) != 6 {
		t.Fatalf("deep verify of a backup of every type:\n%s", r)
	}
	for _, tc := range v.Deep.Tables {
		if tc.WantSum == "" || tc.WantSum != tc.GotSum || tc.GotRows == 0 {
			t.Fatalf("table check %+v", tc)
		}
	}
}
