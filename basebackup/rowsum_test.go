package basebackup

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/zeebo/xxh3"
)

func TestRowSumOrderIndependentAndSplit(t *testing.T) {
	feed := func(chunks ...string) string {
		var r RowSum
		for _, c := range chunks {
			r.Write([]byte(c))
		}
		return r.String()
	}
	a := feed("1\tx\n2\ty\n3\t\\N\n")
	if b := feed("3\t\\N\n", "1\tx\n2\ty\n"); a != b {
		t.Fatalf("order changed the sum: %s vs %s", a, b)
	}
	if b := feed("1\t", "x\n2", "\ty\n3\t\\", "N\n"); a != b {
		t.Fatalf("split writes changed the sum: %s vs %s", a, b)
	}
	if b := feed("1\tx\n2\ty\n3\tz\n"); a == b {
		t.Fatal("different contents gave the same sum")
	}
	if b := feed("1\tx\n1\tx\n2\ty\n3\t\\N\n"); a == b {
		t.Fatal("a duplicated row did not change the sum")
	}
	var r RowSum
	r.Write([]byte("a\nb\n"))
	if r.Rows() != 2 {
		t.Fatalf("rows = %d, want 2", r.Rows())
	}
}

func TestRowSumMerge(t *testing.T) {
	var whole, a, b, merged RowSum
	whole.Write([]byte("1\tx\n2\ty\n3\t\\N\n"))
	a.Write([]byte("2\ty\n"))
	b.Write([]byte("3\t\\N\n1\tx")) // the last row without its newline
	merged.Merge(&a)
	merged.Merge(&b)
	if merged.String() != whole.String() || merged.Rows() != 3 {
		t.Fatalf("merged %s (%d rows), want %s (3 rows)", merged.String(), merged.Rows(), whole.String())
	}
}

// TestRowSumVersions pins each manifest version's digest: version 1 sums
// SHA-256 of text rows (backups already taken carry such digests), and
// version 2 XXH3-128.
func TestRowSumVersions(t *testing.T) {
	rows := []string{"1\tx", "2\t\\N"}
	var a1, b1, a2, b2 uint64
	for _, r := range rows {
		h := sha256.Sum256([]byte(r))
		a1 += binary.BigEndian.Uint64(h[0:8])
		b1 += binary.BigEndian.Uint64(h[8:16])
		x := xxh3.Hash128([]byte(r))
		a2 += x.Hi
		b2 += x.Lo
	}
	for _, tc := range []struct {
		version int
		want    string
	}{{1, fmt.Sprintf("%016x%016x", a1, b1)}, {2, fmt.Sprintf("%016x%016x", a2, b2)}} {
		r := NewRowSum(tc.version, FormatText)
		r.Write([]byte("1\tx\n2\t\\N\n"))
		if got := r.String(); got != tc.want {
			t.Errorf("version %d: digest %s, want %s", tc.version, got, tc.want)
		}
	}
}

// TestRowSumBinary digests a COPY BINARY stream tuple by tuple, whatever
// pieces it arrives in, and notices a stream cut short.
func TestRowSumBinary(t *testing.T) {
	header := append([]byte("PGCOPY\n\xff\r\n\x00"), 0, 0, 0, 0, 0, 0, 0, 0)
	tuple := func(v string) []byte {
		b := []byte{0, 1, 0, 0, 0, byte(len(v))}
		return append(b, v...)
	}
	stream := append(append(append(append([]byte{}, header...), tuple("a")...), tuple("bc")...), 0xff, 0xff)
	whole := NewRowSum(2, FormatBinary)
	whole.Write(stream)
	want := NewRowSum(2, FormatText) // the same rows, hashed as they are
	want.add(tuple("a"))
	want.add(tuple("bc"))
	if whole.String() != want.String() || whole.Rows() != 2 || whole.Err() != nil {
		t.Fatalf("digest %s of %d rows (err %v), want %s of 2", whole.String(), whole.Rows(), whole.Err(), want.String())
	}
	split := NewRowSum(2, FormatBinary)
	for _, c := range stream {
		split.Write([]byte{c})
	}
	if split.String() != whole.String() {
		t.Fatalf("byte-by-byte writes gave %s, whole %s", split.String(), whole.String())
	}
	cut := NewRowSum(2, FormatBinary)
	cut.Write(stream[:len(stream)-3])
	if cut.Err() == nil {
		t.Fatal("a stream cut inside a tuple gave no error")
	}
}

// TestParseManifestVersions reads version 1 and 2 manifests and refuses
// newer ones, and binary tables a version 1 manifest cannot have.
func TestParseManifestVersions(t *testing.T) {
	base := `"id": "x", "consistent_lsn": "0/10", "copy_format": "text"`
	for _, tc := range []struct {
		json string
		ok   bool
	}{
		{`{"version": 1, ` + base + `, "tables": [{"schema": "public", "name": "t", "columns": ["a"]}]}`, true},
		{`{"version": 2, ` + base + `, "tables": [{"schema": "public", "name": "t", "columns": ["a"], "format": "binary", "column_types": [23]}]}`, true},
		{`{"version": 1, ` + base + `, "tables": [{"schema": "public", "name": "t", "columns": ["a"], "format": "binary", "column_types": [23]}]}`, false},
		{`{"version": 2, ` + base + `, "tables": [{"schema": "public", "name": "t", "columns": ["a"], "format": "binary"}]}`, false},
		{`{"version": 2, ` + base + `, "tables": [{"schema": "public", "name": "t", "columns": ["a"], "format": "csv"}]}`, false},
		{`{"version": 3, ` + base + `, "tables": []}`, false},
	} {
		_, err := ParseManifest([]byte(tc.json))
		if (err == nil) != tc.ok {
			t.Errorf("ParseManifest(%s): err = %v, want ok=%v", tc.json, err, tc.ok)
		}
	}
}
