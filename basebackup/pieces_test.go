package basebackup

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pierrec/lz4/v4"

	"github.com/wayback-pitr/wayback/pgcopy"
	"github.com/wayback-pitr/wayback/store"
	"github.com/wayback-pitr/wayback/testenv"
	"github.com/wayback-pitr/wayback/wal"
)

func TestPieceKey(t *testing.T) {
	for _, tc := range []struct {
		key  string
		n    int
		want string
	}{
		{"backups/X/data/00001.copy.lz4", 0, "backups/X/data/00001.copy.lz4"},
		{"backups/X/data/00001.copy.lz4", 1, "backups/X/data/00001.p0001.copy.lz4"},
		{"backups/X/data/00001.0002.copy.lz4", 12, "backups/X/data/00001.0002.p0012.copy.lz4"},
		{"backups/X/pre-data.sql.lz4", 1, "backups/X/pre-data.sql.lz4.p0001"},
	} {
		if got := pieceKey(tc.key, tc.n); got != tc.want {
			t.Errorf("pieceKey(%q, %d) = %q, want %q", tc.key, tc.n, got, tc.want)
		}
	}
	if len(binaryHeader) != 19 {
		t.Fatalf("binary header is %d bytes, want 19", len(binaryHeader))
	}
}

// TestRowCutterCutsAtRows feeds real COPY streams, text and binary, to the
// cutter a row at a time (as pgx does) and in writes of random sizes (so
// rows straddle writes), and checks that every piece is a whole COPY
// stream of its own, that the pieces
// hold the stream's rows in order and nothing else, and that the digest
// is the whole stream's.
func TestRowCutterCutsAtRows(t *testing.T) {
	ctx := t.Context()
	c := testenv.NewCluster(t, testenv.Options{})
	dsn := c.DSN("postgres")
	if err := testenv.Exec(ctx, dsn, `CREATE TABLE r (id int, t text, b bytea, n numeric);
		INSERT INTO r SELECT i, CASE WHEN i % 7 = 0 THEN NULL ELSE E'line\nbreak\t' || repeat('x', i % 300) END,
			decode(md5(i::text), 'hex'), i / 3.0 FROM generate_series(1, 3000) i`); err != nil {
		t.Fatal(err)
	}
	conn, err := wal.ConnectText(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())

	for _, format := range []string{FormatText, FormatBinary} {
		var whole bytes.Buffer
		if _, err := conn.PgConn().CopyTo(ctx, &whole, "COPY r TO STDOUT"+copyOptions(format, false)); err != nil {
			t.Fatal(err)
		}
		wantRows := splitRows(t, format, whole.Bytes())
		wantSum := NewRowSum(ManifestVersion, format)
		wantSum.Write(whole.Bytes())

		// As pgx writes (one row per CopyData message, a binary stream's
		// header before its first row and its trailer on its own), and in
		// writes of random sizes, where rows straddle writes: then the
		// cutter may cut less often, but never inside a row.
		byRow := [][]byte{}
		for i, r := range wantRows {
			if i == 0 && format == FormatBinary {
				r = append(bytes.Clone(binaryHeader), r...)
			}
			byRow = append(byRow, r)
		}
		if format == FormatBinary {
			byRow = append(byRow, binaryTrailer)
		}
		if !bytes.Equal(bytes.Join(byRow, nil), whole.Bytes()) {
			t.Fatalf("the %s stream is not its header, rows and trailer", format)
		}
		var random [][]byte
		rng := rand.New(rand.NewPCG(1, 2))
		for b := whole.Bytes(); len(b) > 0; {
			n := min(len(b), 1+rng.IntN(400))
			random, b = append(random, b[:n]), b[n:]
		}
		for _, writes := range []struct {
			name      string
			w         [][]byte
			minPieces int
		}{{"rows", byRow, 10}, {"random", random, 2}} {
			t.Run(format+"/"+writes.name, func(t *testing.T) {
				st := store.NewFile(filepath.Join(t.TempDir(), "s"))
				fan := store.NewFanout([]store.Store{st}, 1, nil)
				ps, err := newPieces(ctx, fan, t.TempDir(), "data/00000.copy.lz4")
				if err != nil {
					t.Fatal(err)
				}
				sum := NewRowSum(ManifestVersion, format)
				cut := &rowCutter{out: ps, sum: sum, binary: format == FormatBinary, limit: 2 << 10}
				for _, w := range writes.w {
					if _, err := cut.Write(w); err != nil {
						t.Fatal(err)
					}
				}
				if err := cut.Flush(); err != nil {
					t.Fatal(err)
				}
				refs, err := ps.Close()
				fan.Wait()
				if err != nil {
					t.Fatal(err)
				}
				if err := sum.Err(); err != nil {
					t.Fatal(err)
				}
				if sum.String() != wantSum.String() || sum.Rows() != wantSum.Rows() {
					t.Fatalf("digest over the pieces %s (%d rows), over the stream %s (%d rows)", sum, sum.Rows(), wantSum, wantSum.Rows())
				}
				if len(refs) < writes.minPieces {
					t.Fatalf("%d pieces, want at least %d", len(refs), writes.minPieces)
				}
				var got [][]byte
				for _, ref := range refs {
					raw := readObject(t, st, ref)
					if format == FormatText && !bytes.HasSuffix(raw, []byte("\n")) {
						t.Fatalf("piece %s does not end with a whole row", ref.Key)
					}
					got = append(got, splitRows(t, format, raw)...) // fails unless the piece is a whole stream
				}
				if len(got) != len(wantRows) {
					t.Fatalf("pieces hold %d rows, the stream %d", len(got), len(wantRows))
				}
				for i := range got {
					if !bytes.Equal(got[i], wantRows[i]) {
						t.Fatalf("row %d differs:\n%q\n%q", i, got[i], wantRows[i])
					}
				}
			})
		}
	}
}

// splitRows returns the rows of a whole COPY stream; a binary stream must
// have its header and trailer.
func splitRows(t *testing.T, format string, b []byte) [][]byte {
	t.Helper()
	var rows [][]byte
	if format == FormatText {
		for _, l := range strings.SplitAfter(string(b), "\n") {
			if l != "" {
				rows = append(rows, []byte(l))
			}
		}
		return rows
	}
	r := pgcopy.NewBinaryReader(bytes.NewReader(b))
	for {
		_, err := r.Next()
		if err == io.EOF {
			return rows
		}
		if err != nil {
			t.Fatalf("not a whole COPY BINARY stream: %v", err)
		}
		rows = append(rows, bytes.Clone(r.Raw()))
	}
}

// readObject reads a stored piece, checks its size and checksum against
// its reference, and returns it decompressed.
func readObject(t *testing.T, st store.Store, ref FileRef) []byte {
	t.Helper()
	rc, err := st.Get(t.Context(), ref.Key)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	stored, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(stored)
	if int64(len(stored)) != ref.Size || hex.EncodeToString(sum[:]) != ref.SHA256 {
		t.Fatalf("piece %s: %d bytes, sha256 %x; its reference says %d, %s", ref.Key, len(stored), sum, ref.Size, ref.SHA256)
	}
	raw, err := io.ReadAll(lz4.NewReader(bytes.NewReader(stored)))
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(raw)) != ref.RawSize {
		t.Fatalf("piece %s holds %d raw bytes, its reference says %d", ref.Key, len(raw), ref.RawSize)
	}
	return raw
}
