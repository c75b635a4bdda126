package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/wayback-pitr/wayback/basebackup"
	"github.com/wayback-pitr/wayback/wal"
)

// verifyJSON is the part of `wayback verify --json` scripts rely on.
type verifyJSON struct {
	OK     bool `json:"ok"`
	Stores []struct {
		URL      string `json:"url"`
		Verdict  string `json:"verdict"`
		Segments int    `json:"segments"`
		Backups  int    `json:"backups"`
		Bytes    int64  `json:"bytes"`
		FromLSN  string `json:"from_lsn"`
		ToLSN    string `json:"to_lsn"`
		Problems []struct {
			Kind   string `json:"kind"`
			Key    string `json:"key"`
			Detail string `json:"detail"`
		} `json:"problems"`
	} `json:"stores"`
}

// TestVerify checks a real archive in two stores: clean after a workload,
// then with a corrupt segment in store A (A broken and named with the key,
// B still ok), then with a middle segment deleted from store B (B broken
// with a gap).
func TestVerify(t *testing.T) {
	e := newEnv(t)
	e.exec(`CREATE TABLE items (id bigserial PRIMARY KEY, name text, qty int)`)
	e.exec(`INSERT INTO items (name, qty) SELECT 'item ' || g, g FROM generate_series(1, 200) g`)
	e.mustRun("setup")
	a := e.startAgent()
	e.waitBackup(1)
	// Several segments after the backup (flush_interval is 200ms).
	for i := range 5 {
		e.exec(`INSERT INTO items (name, qty) SELECT 'more ' || g, g FROM generate_series(1, 300) g`)
		e.exec(`UPDATE items SET qty = qty + $1 WHERE id % 5 = 0`, i)
		time.Sleep(250 * time.Millisecond)
	}
	e.waitArchived()
	a.stop(t) // nothing in flight: both stores hold the same objects

	verify := func() (result, verifyJSON) {
		t.Helper()
		r := e.run("verify", "--json")
		var v verifyJSON
		if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
			t.Fatalf("verify --json: %v\n%s", err, r)
		}
		if len(v.Stores) != 2 || v.Stores[0].URL != e.stores[0] || v.Stores[1].URL != e.stores[1] {
			t.Fatalf("verify --json stores: %+v", v.Stores)
		}
		return r, v
	}

	r := e.run("verify")
	if r.code != 0 || !strings.Contains(r.stdout, "all 2 stores ok") {
		t.Fatalf("verify of a clean archive:\n%s", r)
	}
	r, v := verify()
	if r.code != 0 || !v.OK {
		t.Fatalf("verify --json of a clean archive:\n%s", r)
	}
	for _, s := range v.Stores {
		if s.Verdict != "ok" || len(s.Problems) != 0 || s.Backups != 1 || s.Segments < 4 || s.Bytes == 0 || s.FromLSN == "" || s.ToLSN == "" {
			t.Fatalf("clean store %s: %+v", s.URL, s)
		}
	}

	// Segments after the backup's consistent point, in stream order.
	manifests, _ := filepath.Glob(filepath.Join(e.storeDir(0), "backups", "*", "manifest.json"))
	if len(manifests) != 1 {
		t.Fatalf("manifests: %v", manifests)
	}
	mb, err := os.ReadFile(manifests[0])
	if err != nil {
		t.Fatal(err)
	}
	m, err := basebackup.ParseManifest(mb)
	if err != nil {
		t.Fatal(err)
	}
	type seg struct {
		key      string
		from, to wal.LSN
		size     int64
	}
	var after []seg
	paths, _ := filepath.Glob(filepath.Join(e.storeDir(0), "segments", "*.seg"))
	for _, p := range paths {
		key := "segments/" + filepath.Base(p)
		from, to, err := wal.ParseSegmentKey(key)
		if err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if from >= m.LSN() {
			after = append(after, seg{key, from, to, st.Size()})
		}
	}
	sort.Slice(after, func(i, j int) bool { return after[i].from < after[j].from })
	if len(after) < 4 {
		t.Fatalf("only %d segments after the backup: %+v", len(after), after)
	}

	// Corrupt one segment with data in store A.
	var victim seg
	for _, s := range after[:len(after)-1] {
		if s.size > 200 {
			victim = s
			break
		}
	}
	if victim.key == "" {
		t.Fatalf("no segment with data among %+v", after)
	}
	vpath := filepath.Join(e.storeDir(0), filepath.FromSlash(victim.key))
	b, err := os.ReadFile(vpath)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-10] ^= 0x40
	if err := os.WriteFile(vpath, b, 0o644); err != nil {
		t.Fatal(err)
	}

	r = e.run("verify")
	if r.code == 0 {
		t.Fatalf("verify with a corrupt segment succeeded:\n%s", r)
	}
	t.Logf("verify with a corrupt segment in store A:\n%s", r)
	lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
	last := lines[len(lines)-1]
	if !strings.HasPrefix(last, "wayback: verify: store "+e.stores[0]+" is broken: 1 corrupt segment ("+victim.key+")") || strings.Contains(last, e.stores[1]) {
		t.Fatalf("error line %q should name store A, the key and not store B\n%s", last, r)
	}
	if !strings.Contains(r.stdout, "corrupt    "+victim.key) || !strings.Contains(r.stdout, "store "+e.stores[1]+": ok") {
		t.Fatalf("human output should list the corrupt key and B ok:\n%s", r)
	}
	r, v = verify()
	if r.code == 0 || v.OK {
		t.Fatalf("verify --json with a corrupt segment succeeded:\n%s", r)
	}
	sa, sb := v.Stores[0], v.Stores[1]
	if sa.Verdict != "broken" || sb.Verdict != "ok" {
		t.Fatalf("verdicts A=%s B=%s, want broken and ok:\n%s", sa.Verdict, sb.Verdict, r.stdout)
	}
	if len(sa.Problems) == 0 || sa.Problems[0].Kind != "corrupt" || sa.Problems[0].Key != victim.key {
		t.Fatalf("store A's first problem should be the corrupt %s: %+v", victim.key, sa.Problems)
	}

	// Delete a middle segment (another one) from store B.
	var gone seg
	for _, s := range after[1 : len(after)-1] {
		if s.key != victim.key {
			gone = s
			break
		}
	}
	if err := os.Remove(filepath.Join(e.storeDir(1), filepath.FromSlash(gone.key))); err != nil {
		t.Fatal(err)
	}
	r, v = verify()
	if r.code == 0 {
		t.Fatalf("verify with a gap succeeded:\n%s", r)
	}
	t.Logf("verify --json with a gap in store B:\n%s", r)
	sa, sb = v.Stores[0], v.Stores[1]
	if sa.Verdict != "broken" || sb.Verdict != "broken" {
		t.Fatalf("verdicts A=%s B=%s, want both broken:\n%s", sa.Verdict, sb.Verdict, r.stdout)
	}
	var gapSeen, missingSeen bool
	for _, p := range sb.Problems {
		switch p.Kind {
		case "gap":
			gapSeen = strings.Contains(p.Detail, gone.from.String()) && strings.Contains(p.Detail, gone.to.String())
		case "missing":
			missingSeen = missingSeen || p.Key == gone.key
		case "corrupt":
			t.Fatalf("store B has no corrupt object: %+v", p)
		}
	}
	if !gapSeen || !missingSeen {
		t.Fatalf("store B should report a gap from %s to %s and %s missing: %+v", gone.from, gone.to, gone.key, sb.Problems)
	}
	if msg := r.stderr; !strings.Contains(msg, "store "+e.stores[1]+" is broken: 1 gap (LSN "+gone.from.String()+" to "+gone.to.String()+")") {
		t.Fatalf("error should name B's gap:\n%s", r)
	}
}
