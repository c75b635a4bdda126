package pgcopy_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/wayback-pitr/wayback/pgcopy"
	"github.com/wayback-pitr/wayback/testenv"
)

// header is a COPY BINARY header with no flags and no extension.
const header = "PGCOPY\n\xff\r\n\x00\x00\x00\x00\x00\x00\x00\x00\x00"

// encodeTuple encodes fields as a COPY BINARY tuple; a nil field is NULL.
func encodeTuple(fields ...[]byte) []byte {
	b := binary.BigEndian.AppendUint16(nil, uint16(len(fields)))
	for _, f := range fields {
		if f == nil {
			b = binary.BigEndian.AppendUint32(b, 0xffffffff)
			continue
		}
		b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
		b = append(b, f...)
	}
	return b
}

// trailer ends a COPY BINARY stream.
var trailer = []byte{0xff, 0xff}

// readAll reads a stream with BinaryReader and returns copies of the raw
// tuples and of their fields.
func readAll(stream []byte) (raws [][]byte, rows [][][]byte, err error) {
	r := pgcopy.NewBinaryReader(bytes.NewReader(stream))
	for {
		f, err := r.Next()
		if err == io.EOF {
			return raws, rows, nil
		}
		if err != nil {
			return raws, rows, err
		}
		raws = append(raws, bytes.Clone(r.Raw()))
		row := make([][]byte, len(f))
		for i, v := range f {
			if v != nil {
				row[i] = append([]byte{}, v...)
			}
		}
		rows = append(rows, row)
	}
}

// feed writes stream to a TupleWriter in pieces of the sizes next returns
// and returns copies of the tuples it passed on and the Close error.
func feed(stream []byte, next func() int) ([][]byte, error) {
	var got [][]byte
	w := pgcopy.NewTupleWriter(func(t []byte) { got = append(got, bytes.Clone(t)) })
	for len(stream) > 0 {
		k := min(next(), len(stream))
		if n, err := w.Write(stream[:k]); err != nil {
			return got, err
		} else if n != k {
			return got, fmt.Errorf("Write returned %d for %d bytes", n, k)
		}
		stream = stream[k:]
	}
	return got, w.Close()
}

func equalTuples(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

// TestBinaryPostgres copies a table with NULLs, empty strings and values
// wider than 64 KiB out of PostgreSQL in binary: TupleWriter (fed as pgx
// writes, then in 1-byte, 7-byte and random pieces) and BinaryReader must
// see the same tuples, and their fields must be the values PostgreSQL
// prints for the text and bytea columns.
func TestBinaryPostgres(t *testing.T) {
	ctx := t.Context()
	c := testenv.NewCluster(t, testenv.Options{})
	dsn := c.DSN("")
	if err := testenv.Exec(ctx, dsn, `
		CREATE TABLE t (id int, s text, b bytea, n bigint);
		INSERT INTO t SELECT i,
			CASE i % 5 WHEN 0 THEN NULL WHEN 1 THEN '' WHEN 2 THEN repeat(md5(i::text), 2100 + i) ELSE 'v' || i END,
			CASE i % 3 WHEN 0 THEN NULL WHEN 1 THEN ''::bytea ELSE decode(repeat('00ff', i), 'hex') END,
			CASE WHEN i % 7 = 0 THEN NULL ELSE i::bigint * -1000000007 END
		FROM generate_series(1, 400) i;
		CREATE TABLE empty_cols ();
		INSERT INTO empty_cols DEFAULT VALUES;
		INSERT INTO empty_cols DEFAULT VALUES;`); err != nil {
		t.Fatal(err)
	}
	want, err := testenv.QueryRows(ctx, dsn, `SELECT id, s, encode(b, 'hex'), n FROM t ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)

	var viaWriter [][]byte
	var buf bytes.Buffer
	tw := pgcopy.NewTupleWriter(func(tu []byte) { viaWriter = append(viaWriter, bytes.Clone(tu)) })
	if _, err := conn.PgConn().CopyTo(ctx, io.MultiWriter(tw, &buf), "COPY (SELECT * FROM t ORDER BY id) TO STDOUT (FORMAT binary)"); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	stream := bytes.Clone(buf.Bytes())
	raws, rows, err := readAll(stream)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != len(want) || !equalTuples(raws, viaWriter) {
		t.Fatalf("BinaryReader read %d tuples, TupleWriter got %d, table has %d; same bytes: %v",
			len(raws), len(viaWriter), len(want), equalTuples(raws, viaWriter))
	}
	wide := 0
	for i, row := range rows {
		w := want[i]
		if len(row) != 4 {
			t.Fatalf("row %d has %d fields", i, len(row))
		}
		if got := int32(binary.BigEndian.Uint32(row[0])); fmt.Sprint(got) != w[0] {
			t.Fatalf("row %d: id %d, want %s", i, got, w[0])
		}
		if !sameText(row[1], w[1]) {
			t.Fatalf("row %d: s has %d bytes (nil %v), want %.40q", i, len(row[1]), row[1] == nil, w[1])
		}
		if row[1] != nil && len(row[1]) > 64<<10 {
			wide++
		}
		if !sameText(hexOrNil(row[2]), w[2]) {
			t.Fatalf("row %d: b = %x, want %s", i, row[2], w[2])
		}
		if w[3] == testenv.Null && row[3] != nil || w[3] != testenv.Null && fmt.Sprint(int64(binary.BigEndian.Uint64(row[3]))) != w[3] {
			t.Fatalf("row %d: n = %x, want %s", i, row[3], w[3])
		}
	}
	if wide == 0 {
		t.Fatal("no value wider than 64 KiB: the test data is wrong")
	}

	rng := rand.New(rand.NewPCG(1, 2))
	for name, next := range map[string]func() int{
		"1-byte":       func() int { return 1 },
		"7-byte":       func() int { return 7 },
		"random":       func() int { return 1 + rng.IntN(200000) },
		"small random": func() int { return 1 + rng.IntN(20) },
	} {
		got, err := feed(stream, next)
		if err != nil {
			t.Fatalf("%s writes: %v", name, err)
		}
		if !equalTuples(got, raws) {
			t.Fatalf("%s writes: %d tuples differ from the whole stream's %d", name, len(got), len(raws))
		}
	}

	// A table without columns has tuples of zero fields.
	buf.Reset()
	if _, err := conn.PgConn().CopyTo(ctx, &buf, "COPY empty_cols TO STDOUT (FORMAT binary)"); err != nil {
		t.Fatal(err)
	}
	raws, rows, err = readAll(buf.Bytes())
	if err != nil || len(rows) != 2 || len(rows[0]) != 0 || !bytes.Equal(raws[0], []byte{0, 0}) {
		t.Fatalf("zero-column table: %d rows %q, err %v", len(rows), raws, err)
	}

	// Truncating the real stream anywhere must fail both readers.
	for _, cut := range []int{0, 5, 19, 20, 21, 25, len(stream) / 3, len(stream) / 2, len(stream) - 2, len(stream) - 1} {
		if _, _, err := readAll(stream[:cut]); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("BinaryReader on the stream cut at %d: %v, want io.ErrUnexpectedEOF", cut, err)
		}
		if _, err := feed(stream[:cut], func() int { return 4096 }); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("TupleWriter on the stream cut at %d: %v, want io.ErrUnexpectedEOF", cut, err)
		}
	}
}

func sameText(v []byte, want string) bool {
	if v == nil {
		return want == testenv.Null
	}
	return string(v) == want
}

func hexOrNil(v []byte) []byte {
	if v == nil {
		return nil
	}
	return fmt.Appendf([]byte{}, "%x", v)
}

// TestBinarySynthetic covers what PostgreSQL does not write: header flags
// and extensions, malformed lengths, and every truncation point.
func TestBinarySynthetic(t *testing.T) {
	tuples := [][]byte{
		encodeTuple([]byte("a"), nil, []byte{}),
		encodeTuple(),
		encodeTuple(bytes.Repeat([]byte{7}, 70000), []byte("z")),
	}
	body := bytes.Join(tuples, nil)
	ext := "PGCOPY\n\xff\r\n\x00\x00\x02\x00\x00\x00\x00\x00\x05hello" // non-critical flag bit 17, 5-byte extension
	for _, hdr := range []string{header, ext} {
		stream := append(append([]byte(hdr), body...), trailer...)
		raws, rows, err := readAll(stream)
		if err != nil {
			t.Fatal(err)
		}
		if !equalTuples(raws, tuples) {
			t.Fatalf("header %q: BinaryReader raw tuples differ", hdr)
		}
		if rows[0][1] != nil || rows[0][2] == nil || len(rows[0][2]) != 0 || len(rows[1]) != 0 {
			t.Fatalf("NULL and empty values confused: %q", rows[0])
		}
		for _, size := range []int{1, 2, 3, 7, 19, 1 << 20} {
			got, err := feed(stream, func() int { return size })
			if err != nil || !equalTuples(got, tuples) {
				t.Fatalf("header %q, %d-byte writes: err %v, tuples equal %v", hdr, size, err, equalTuples(got, tuples))
			}
		}
		// Every proper prefix is a truncated stream.
		for cut := 0; cut < len(stream); cut += 1 + cut/50 {
			if _, _, err := readAll(stream[:cut]); !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("BinaryReader, cut at %d: %v", cut, err)
			}
			if _, err := feed(stream[:cut], func() int { return 3 }); !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("TupleWriter, cut at %d: %v", cut, err)
			}
		}
	}

	bad := map[string][]byte{
		"signature":     append([]byte("PGCOPY\n\xff\r\n\x01\x00\x00\x00\x00\x00\x00\x00\x00"), trailer...),
		"text stream":   []byte("1\tfoo\n2\tbar\n\\.\n-----------------"),
		"critical flag": append([]byte("PGCOPY\n\xff\r\n\x00\x00\x00\x00\x01\x00\x00\x00\x00"), trailer...),
		"oids":          append([]byte("PGCOPY\n\xff\r\n\x00\x00\x01\x00\x00\x00\x00\x00\x00"), trailer...),
		"length -2":     append([]byte(header), 0, 1, 0xff, 0xff, 0xff, 0xfe, 0xff, 0xff),
		"count -2":      append([]byte(header), 0xff, 0xfe),
		"after trailer": append(append([]byte(header), trailer...), 0, 0),
		"huge length":   append([]byte(header), 0, 1, 0x7f, 0xff, 0xff, 0xff),
	}
	for name, stream := range bad {
		_, _, rerr := readAll(stream)
		_, werr := feed(stream, func() int { return 1 })
		if werr == nil || errors.Is(werr, io.ErrUnexpectedEOF) {
			t.Errorf("%s: TupleWriter error %v", name, werr)
		}
		// BinaryReader stops at the trailer and does not look further.
		if name == "after trailer" {
			continue
		}
		if rerr == nil || errors.Is(rerr, io.ErrUnexpectedEOF) {
			t.Errorf("%s: BinaryReader error %v", name, rerr)
		}
	}
}

// TestTupleWriterAllocs checks the promise that whole tuples cost no
// allocation.
func TestTupleWriterAllocs(t *testing.T) {
	tu := encodeTuple([]byte("12345678"), nil, []byte("some text value"))
	n := 0
	w := pgcopy.NewTupleWriter(func(t []byte) { n += len(t) })
	if _, err := w.Write([]byte(header)); err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(1000, func() {
		if _, err := w.Write(tu); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 || n == 0 {
		t.Fatalf("%v allocations per whole tuple", allocs)
	}
}

// FuzzTupleWriter checks that how a stream is split into writes never
// changes the tuples or the verdict, and that BinaryReader agrees.
func FuzzTupleWriter(f *testing.F) {
	good := append(append([]byte(header), encodeTuple([]byte("ab"), nil, []byte{})...), encodeTuple()...)
	good = append(good, trailer...)
	f.Add(good, uint64(1))
	f.Add(good[:len(good)-3], uint64(7))
	f.Add([]byte(header+"\x00\x01\xff\xff\xff\xfe"), uint64(3))
	f.Fuzz(func(t *testing.T, stream []byte, seed uint64) {
		whole, werr := feed(stream, func() int { return len(stream) })
		rng := rand.New(rand.NewPCG(seed, seed))
		split, serr := feed(stream, func() int { return 1 + rng.IntN(16) })
		if (werr == nil) != (serr == nil) || !equalTuples(whole, split) {
			t.Fatalf("whole: %d tuples, err %v; split: %d tuples, err %v", len(whole), werr, len(split), serr)
		}
		raws, _, rerr := readAll(stream)
		if werr == nil && (rerr != nil || !equalTuples(raws, whole)) {
			t.Fatalf("TupleWriter accepted the stream, BinaryReader: %v", rerr)
		}
		if werr == nil {
			for _, raw := range raws {
				if _, err := pgcopy.SplitTuple(nil, raw); err != nil {
					t.Fatal(err)
				}
			}
		}
	})
}

// benchStream returns a COPY BINARY stream of n four-field tuples and the
// offsets where each tuple ends, as PostgreSQL sends one CopyData message
// per tuple.
func benchStream(n int) ([]byte, []int) {
	s := []byte(header)
	var ends []int
	for i := range n {
		s = append(s, encodeTuple(binary.BigEndian.AppendUint32(nil, uint32(i)), []byte("a text value of some length"), nil,
			binary.BigEndian.AppendUint64(nil, uint64(i)*7))...)
		ends = append(ends, len(s))
	}
	s = append(s, trailer...)
	return s, append(ends, len(s))
}

// BenchmarkTupleWriter feeds the stream one CopyData message at a time.
func BenchmarkTupleWriter(b *testing.B) {
	s, ends := benchStream(10000)
	b.SetBytes(int64(len(s)))
	b.ReportAllocs()
	for b.Loop() {
		n := 0
		w := pgcopy.NewTupleWriter(func([]byte) { n++ })
		start := 0
		for _, e := range ends {
			if _, err := w.Write(s[start:e]); err != nil {
				b.Fatal(err)
			}
			start = e
		}
		if err := w.Close(); err != nil || n != 10000 {
			b.Fatal(n, err)
		}
	}
}

// BenchmarkBinaryReader reads the same stream with Next.
func BenchmarkBinaryReader(b *testing.B) {
	s, _ := benchStream(10000)
	b.SetBytes(int64(len(s)))
	b.ReportAllocs()
	for b.Loop() {
		r := pgcopy.NewBinaryReader(bytes.NewReader(s))
		n := 0
		for {
			_, err := r.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			n++
		}
		if n != 10000 {
			b.Fatal(n)
		}
	}
}
