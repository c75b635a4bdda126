package pitr

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wayback-pitr/wayback/basebackup"
	"github.com/wayback-pitr/wayback/store"
	"github.com/wayback-pitr/wayback/wal"
)

// Hand-built pgoutput v1 messages, as the server sends them.

var testEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

func testMicros(t time.Time) uint64 { return uint64(t.Sub(testEpoch) / time.Microsecond) }

func testRel(id uint32, name string, cols ...string) []byte {
	b := binary.BigEndian.AppendUint32([]byte{wal.MsgRelation}, id)
	b = append(append(b, "public"...), 0)
	b = append(append(b, name...), 0)
	b = append(b, 'd')
	b = binary.BigEndian.AppendUint16(b, uint16(len(cols)))
	for i, c := range cols {
		flags := byte(0)
		if i == 0 {
			flags = 1 // the key
		}
		b = append(b, flags)
		b = append(append(b, c...), 0)
		b = binary.BigEndian.AppendUint32(b, 25) // text
		b = binary.BigEndian.AppendUint32(b, 0xFFFFFFFF)
	}
	return b
}

func testBegin(final wal.LSN, ts time.Time, xid uint32) []byte {
	b := binary.BigEndian.AppendUint64([]byte{wal.MsgBegin}, uint64(final))
	b = binary.BigEndian.AppendUint64(b, testMicros(ts))
	return binary.BigEndian.AppendUint32(b, xid)
}

func testCommit(commit, end wal.LSN, ts time.Time) []byte {
	b := binary.BigEndian.AppendUint64([]byte{wal.MsgCommit, 0}, uint64(commit))
	b = binary.BigEndian.AppendUint64(b, uint64(end))
	return binary.BigEndian.AppendUint64(b, testMicros(ts))
}

func testInsert(rel uint32, vals ...string) []byte {
	b := binary.BigEndian.AppendUint32([]byte{wal.MsgInsert}, rel)
	b = append(b, 'N')
	b = binary.BigEndian.AppendUint16(b, uint16(len(vals)))
	for _, v := range vals {
		b = append(b, 't')
		b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
		b = append(b, v...)
	}
	return b
}

const (
	testBase wal.LSN = 0x1000 // the backup's consistent point and the first segment's start
	testStep wal.LSN = 0x100  // each segment covers one step
)

var testT0 = time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)

// testTxn adds one committed transaction ending at end to b.
func testTxn(t *testing.T, b *wal.Builder, xid uint32, end wal.LSN) {
	t.Helper()
	ts := testT0.Add(time.Duration(xid) * time.Second)
	for _, m := range [][]byte{testBegin(end-8, ts, xid), testInsert(7, fmt.Sprint(xid), "v"), testCommit(end-8, end, ts)} {
		if _, err := b.Add(m); err != nil {
			t.Fatal(err)
		}
	}
}

// testSegments builds n segments covering [testBase, testBase+n*testStep),
// one transaction each.
func testSegments(t *testing.T, n int) (keys []string, data [][]byte) {
	t.Helper()
	b := wal.NewBuilder(testBase)
	if _, err := b.Add(testRel(7, "t", "id", "v")); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		testTxn(t, b, uint32(100+i), testBase+wal.LSN(i+1)*testStep)
		d, info, err := b.Cut(i%2 == 0)
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, wal.SegmentKey(info.From, info.To))
		data = append(data, d)
	}
	return keys, data
}

const testBackupID = "20261123T100000Z-0000000000001000"

// testBackup returns a minimal backup's objects (pre-data, post-data, one
// table file) and its manifest, consistent at testBase.
func testBackup(t *testing.T) (objects map[string][]byte, manifest []byte) {
	t.Helper()
	objects = map[string][]byte{}
	ref := func(name string, content string) basebackup.FileRef {
		key := basebackup.Prefix + testBackupID + "/" + name
		objects[key] = []byte(content)
		sum := sha256.Sum256([]byte(content))
		return basebackup.FileRef{Key: key, Size: int64(len(content)), RawSize: int64(len(content)), SHA256: hex.EncodeToString(sum[:])}
	}
	m := basebackup.Manifest{
		Version: basebackup.ManifestVersion, ID: testBackupID, ConsistentLSN: testBase.String(), ConsistentTime: testT0,
		Database: "shop", CopyFormat: "text",
		PreData:  ref("pre-data.sql.lz4", "CREATE TABLE t (id text PRIMARY KEY, v text);"),
		PostData: ref("post-data.sql.lz4", "-- nothing"),
		Tables: []basebackup.Table{{Schema: "public", Name: "t", Columns: []string{"id", "v"}, Rows: 2,
			Files: []basebackup.FileRef{ref("data/00000.copy.lz4", "1\ta\n2\tb\n")}}},
	}
	manifest, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return objects, manifest
}

// testArchive is n segments and one backup written to every store.
type testArchive struct {
	segKeys []string
	dirs    []string
	stores  []store.Store
}

func newTestArchive(t *testing.T, nStores, nSegments int) *testArchive {
	t.Helper()
	a := &testArchive{}
	keys, segs := testSegments(t, nSegments)
	a.segKeys = keys
	objs, manifest := testBackup(t)
	info, _ := json.Marshal(ArchiveInfo{Format: "wayback", Version: ArchiveVersion, SystemID: "7441", Database: "shop", Created: testT0})
	for range nStores {
		dir := t.TempDir()
		s := store.NewFile(dir)
		put := func(key string, b []byte) {
			if err := store.PutBytes(t.Context(), s, key, b); err != nil {
				t.Fatal(err)
			}
		}
		put(ArchiveKey, info)
		for i, k := range keys {
			put(k, segs[i])
		}
		for k, b := range objs {
			put(k, b)
		}
		put(basebackup.ManifestKey(testBackupID), manifest)
		a.dirs = append(a.dirs, dir)
		a.stores = append(a.stores, s)
	}
	return a
}

func (a *testArchive) path(i int, key string) string {
	return filepath.Join(a.dirs[i], filepath.FromSlash(key))
}

func (a *testArchive) verify(t *testing.T) *VerifyReport {
	t.Helper()
	var lines []string
	rep, err := Verify(t.Context(), a.stores, nil, func(f string, args ...any) { lines = append(lines, fmt.Sprintf(f, args...)) })
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) == 0 {
		t.Error("no progress reported")
	}
	if rep.OK != (rep.Err() == nil) {
		t.Errorf("OK = %v but Err() = %v", rep.OK, rep.Err())
	}
	return rep
}

func dumpReport(rep *VerifyReport) string {
	b, _ := json.MarshalIndent(rep, "", "  ")
	return string(b)
}

func wantVerdict(t *testing.T, rep *VerifyReport, i int, want Verdict) *StoreVerify {
	t.Helper()
	s := &rep.Stores[i]
	if s.Verdict != want {
		t.Fatalf("store %d verdict %s, want %s:\n%s", i, s.Verdict, want, dumpReport(rep))
	}
	return s
}

func findProblem(t *testing.T, s *StoreVerify, kind ProblemKind, key string) Problem {
	t.Helper()
	for _, p := range s.Problems {
		if p.Kind == kind && p.Key == key {
			return p
		}
	}
	t.Fatalf("no %s problem for %s in %s: %+v", kind, key, s.URL, s.Problems)
	return Problem{}
}

func TestVerifyClean(t *testing.T) {
	a := newTestArchive(t, 2, 5)
	rep := a.verify(t)
	if !rep.OK || rep.Err() != nil {
		t.Fatalf("clean archive not ok: %v\n%s", rep.Err(), dumpReport(rep))
	}
	for i := range a.stores {
		s := wantVerdict(t, rep, i, VerdictOK)
		if len(s.Problems) != 0 || s.Segments != 5 || s.Backups != 1 || s.ValidBackups != 1 {
			t.Fatalf("store %d: %+v", i, s)
		}
		// 5 segments, archive.json, the manifest and its 3 objects.
		if s.Objects != 10 || s.Bytes == 0 {
			t.Fatalf("store %d checked %d objects (%d bytes), want 10", i, s.Objects, s.Bytes)
		}
		if s.FromLSN != testBase.String() || s.ToLSN != (testBase+5*testStep).String() || s.OldestBackup != testBackupID {
			t.Fatalf("store %d covers %s-%s from %q", i, s.FromLSN, s.ToLSN, s.OldestBackup)
		}
		if s.FromTime == nil || !s.FromTime.Equal(testT0) || s.ToTime == nil || !s.ToTime.Equal(testT0.Add(104*time.Second)) {
			t.Fatalf("store %d times %v-%v", i, s.FromTime, s.ToTime)
		}
	}
	// The JSON shape scripts rely on.
	var shape struct {
		OK     bool `json:"ok"`
		Stores []struct {
			URL      string            `json:"url"`
			Verdict  string            `json:"verdict"`
			Segments int               `json:"segments"`
			Backups  int               `json:"backups"`
			Bytes    int64             `json:"bytes"`
			FromLSN  string            `json:"from_lsn"`
			ToLSN    string            `json:"to_lsn"`
			Problems []json.RawMessage `json:"problems"`
		} `json:"stores"`
	}
	b, _ := json.Marshal(rep)
	if err := json.Unmarshal(b, &shape); err != nil || len(shape.Stores) != 2 || shape.Stores[0].Verdict != "ok" ||
		shape.Stores[0].FromLSN == "" || shape.Stores[0].Problems == nil || !bytes.Contains(b, []byte(`"problems":[]`)) {
		t.Fatalf("JSON shape: %v\n%s", err, b)
	}
}

func TestVerifyCorruptSegment(t *testing.T) {
	a := newTestArchive(t, 2, 5)
	victim := a.segKeys[3]
	p := a.path(0, victim)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-3] ^= 0x40
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	rep := a.verify(t)
	s := wantVerdict(t, rep, 0, VerdictBroken)
	if pr := findProblem(t, s, ProblemCorrupt, victim); !strings.Contains(pr.Detail, "checksum") {
		t.Fatalf("corrupt detail %q", pr.Detail)
	}
	// Without its corrupt segment the store cannot cover that stretch.
	findProblem(t, s, ProblemGap, victim)
	wantVerdict(t, rep, 1, VerdictOK)
	msg := rep.Err().Error()
	for _, want := range []string{"store " + a.stores[0].URL() + " is broken", "1 corrupt segment (" + victim + ")", "1 gap"} {
		if !strings.Contains(msg, want) {
			t.Fatalf("error %q lacks %q", msg, want)
		}
	}
	if strings.Contains(msg, a.stores[1].URL()) {
		t.Fatalf("error %q names the healthy store", msg)
	}
}

func TestVerifySegmentHeaderMismatch(t *testing.T) {
	a := newTestArchive(t, 1, 3)
	// A valid segment under another segment's name.
	b, err := os.ReadFile(a.path(0, a.segKeys[0]))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(a.path(0, a.segKeys[1]), b, 0o644); err != nil {
		t.Fatal(err)
	}
	rep := a.verify(t)
	s := wantVerdict(t, rep, 0, VerdictBroken)
	if pr := findProblem(t, s, ProblemCorrupt, a.segKeys[1]); !strings.Contains(pr.Detail, "key says") {
		t.Fatalf("detail %q", pr.Detail)
	}
}

func TestVerifyGap(t *testing.T) {
	a := newTestArchive(t, 2, 5)
	middle := a.segKeys[2]
	if err := os.Remove(a.path(1, middle)); err != nil {
		t.Fatal(err)
	}
	rep := a.verify(t)
	wantVerdict(t, rep, 0, VerdictOK)
	s := wantVerdict(t, rep, 1, VerdictBroken)
	from, to := testBase+2*testStep, testBase+3*testStep
	gap := findProblem(t, s, ProblemGap, wal.SegmentKey(from, to))
	if !strings.Contains(gap.Detail, from.String()) || !strings.Contains(gap.Detail, to.String()) {
		t.Fatalf("gap detail %q does not name LSNs %s and %s", gap.Detail, from, to)
	}
	// Store A holds it: it is also missing, but the gap decides.
	findProblem(t, s, ProblemMissing, middle)
	if s.Missing.Segments != 1 || s.Segments != 4 {
		t.Fatalf("missing %+v, segments %d", s.Missing, s.Segments)
	}
	if s.Problems[0].Kind != ProblemGap {
		t.Fatalf("breaking problems should come first: %+v", s.Problems)
	}
	msg := rep.Err().Error()
	if want := fmt.Sprintf("store %s is broken: 1 gap (LSN %s to %s), lacks 1 segment other stores hold", a.stores[1].URL(), from, to); !strings.Contains(msg, want) {
		t.Fatalf("error %q lacks %q", msg, want)
	}
}

func TestVerifyOverlapIsNotAGap(t *testing.T) {
	a := newTestArchive(t, 1, 5)
	// After a crash the agent resumes behind the last segment written and
	// writes one overlapping segments 1 and 2.
	b := wal.NewBuilder(testBase + testStep)
	if _, err := b.Add(testRel(7, "t", "id", "v")); err != nil {
		t.Fatal(err)
	}
	testTxn(t, b, 101, testBase+2*testStep)
	testTxn(t, b, 102, testBase+3*testStep)
	data, info, err := b.Cut(true)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.PutBytes(t.Context(), a.stores[0], wal.SegmentKey(info.From, info.To), data); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(a.path(0, a.segKeys[2])); err != nil {
		t.Fatal(err)
	}
	rep := a.verify(t)
	s := wantVerdict(t, rep, 0, VerdictOK)
	if s.ToLSN != (testBase + 5*testStep).String() {
		t.Fatalf("covered to %s", s.ToLSN)
	}
}

func TestVerifyIncomplete(t *testing.T) {
	a := newTestArchive(t, 2, 5)
	newest := a.segKeys[4]
	if err := os.Remove(a.path(1, newest)); err != nil {
		t.Fatal(err)
	}
	rep := a.verify(t)
	wantVerdict(t, rep, 0, VerdictOK)
	s := wantVerdict(t, rep, 1, VerdictIncomplete)
	pr := findProblem(t, s, ProblemMissing, newest)
	if !strings.Contains(pr.Detail, a.stores[0].URL()) {
		t.Fatalf("missing detail %q does not name the store holding it", pr.Detail)
	}
	if s.Missing != (MissingCounts{Segments: 1}) || len(s.Problems) != 1 || s.ToLSN != (testBase+4*testStep).String() {
		t.Fatalf("store B: %+v", s)
	}
	if msg := rep.Err().Error(); !strings.Contains(msg, "store "+a.stores[1].URL()+" is incomplete: lacks 1 segment other stores hold") {
		t.Fatalf("error %q", msg)
	}
}

func TestVerifyBackupFileWrongSHA(t *testing.T) {
	a := newTestArchive(t, 2, 3)
	key := basebackup.Prefix + testBackupID + "/data/00000.copy.lz4"
	// Same size, different bytes: only the SHA-256 can tell.
	if err := os.WriteFile(a.path(1, key), []byte("1\ta\n2\tc\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	rep := a.verify(t)
	wantVerdict(t, rep, 0, VerdictOK)
	s := wantVerdict(t, rep, 1, VerdictBroken)
	if pr := findProblem(t, s, ProblemCorrupt, key); !strings.Contains(pr.Detail, "SHA-256") || !strings.Contains(pr.Detail, testBackupID) {
		t.Fatalf("detail %q", pr.Detail)
	}
	if s.ValidBackups != 0 || s.OldestBackup != "" {
		t.Fatalf("a backup with a corrupt file counted as valid: %+v", s)
	}
	if msg := rep.Err().Error(); !strings.Contains(msg, "1 corrupt backup object ("+key+")") {
		t.Fatalf("error %q", msg)
	}
}

func TestVerifyBackupFileMissing(t *testing.T) {
	a := newTestArchive(t, 2, 3)
	key := basebackup.Prefix + testBackupID + "/post-data.sql.lz4"
	if err := os.Remove(a.path(0, key)); err != nil {
		t.Fatal(err)
	}
	rep := a.verify(t)
	s := wantVerdict(t, rep, 0, VerdictBroken)
	if pr := findProblem(t, s, ProblemMissing, key); !strings.Contains(pr.Detail, "backup "+testBackupID+" lists it") {
		t.Fatalf("detail %q", pr.Detail)
	}
	if n := len(s.Problems); n != 1 {
		t.Fatalf("want the missing file reported once, got %+v", s.Problems)
	}
	if s.Missing.BackupObjects != 1 {
		t.Fatalf("missing %+v", s.Missing)
	}
	wantVerdict(t, rep, 1, VerdictOK)
}

func TestVerifyNoBackup(t *testing.T) {
	a := newTestArchive(t, 1, 3)
	if err := os.RemoveAll(filepath.Join(a.dirs[0], "backups")); err != nil {
		t.Fatal(err)
	}
	rep := a.verify(t)
	s := wantVerdict(t, rep, 0, VerdictBroken)
	findProblem(t, s, ProblemMissing, basebackup.Prefix)
	if msg := rep.Err().Error(); !strings.Contains(msg, "no base backup") {
		t.Fatalf("error %q", msg)
	}
}

func TestVerifyBackupBeforeFirstSegment(t *testing.T) {
	a := newTestArchive(t, 1, 4)
	// Without the first segment, nothing covers the backup's consistent
	// point onwards.
	if err := os.Remove(a.path(0, a.segKeys[0])); err != nil {
		t.Fatal(err)
	}
	rep := a.verify(t)
	s := wantVerdict(t, rep, 0, VerdictBroken)
	findProblem(t, s, ProblemGap, wal.SegmentKey(testBase, testBase+testStep))
}

// unlistable is a store whose listing fails.
type unlistable struct{ store.Store }

func (unlistable) List(context.Context, string) ([]store.Object, error) {
	return nil, errors.New("403 Forbidden")
}

func TestVerifyUnreachable(t *testing.T) {
	a := newTestArchive(t, 2, 3)
	a.stores[1] = unlistable{a.stores[1]}
	rep := a.verify(t)
	wantVerdict(t, rep, 0, VerdictOK)
	s := wantVerdict(t, rep, 1, VerdictUnreachable)
	if !strings.Contains(s.Error, "403") {
		t.Fatalf("error %q", s.Error)
	}
	if msg := rep.Err().Error(); !strings.Contains(msg, "is unreachable: 403 Forbidden") {
		t.Fatalf("error %q", msg)
	}
}

func TestVerifyCancelled(t *testing.T) {
	a := newTestArchive(t, 1, 2)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := Verify(ctx, a.stores, nil, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}
