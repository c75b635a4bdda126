package basebackup

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/zeebo/xxh3"

	"github.com/wayback-pitr/wayback/pgcopy"
)

// RowSum is an order-independent digest of the rows of one table: each
// row is hashed on its own and the two 64-bit halves of the hashes are
// summed over all rows modulo 2^64. Being a sum, it is the same whatever
// order the rows come in, so a backup's data file and the table loaded
// from it (read back with COPY in a different physical order) agree.
//
// A row is its bytes in the table's COPY format: a text line without its
// newline, or a binary tuple from its field count through its last
// field. Manifest version 1 hashes rows with SHA-256 (the first 16 bytes,
// as two big-endian numbers); version 2 with XXH3-128, which costs a
// fraction of the time per row (the digest is for finding wrong rows,
// not for resisting an adversary, whom the objects' SHA-256 and
// encryption answer).
//
// RowSum is an io.Writer fed with COPY output; rows may be split across
// writes. The zero value digests text rows the current way.
type RowSum struct {
	legacy  bool // SHA-256 (manifest version 1)
	a, b    uint64
	rows    int64
	partial []byte              // text: a row not yet ended
	tuples  *pgcopy.TupleWriter // binary: splits the stream into tuples
	err     error               // binary: the first malformed-stream error
}

// NewRowSum returns the digest that manifest version version defines for
// rows in COPY format format ("text" or "binary").
func NewRowSum(version int, format string) *RowSum {
	r := &RowSum{legacy: version < 2}
	if format == FormatBinary {
		r.tuples = pgcopy.NewTupleWriter(r.add)
	}
	return r
}

// Write feeds COPY output.
func (r *RowSum) Write(p []byte) (int, error) {
	if r.tuples != nil {
		if _, err := r.tuples.Write(p); err != nil && r.err == nil {
			r.err = err
		}
		return len(p), nil
	}
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			r.partial = append(r.partial, p...)
			break
		}
		line := p[:i]
		if len(r.partial) > 0 {
			r.partial = append(r.partial, line...)
			line = r.partial
		}
		r.add(line)
		r.partial = r.partial[:0]
		p = p[i+1:]
	}
	return n, nil
}

func (r *RowSum) add(row []byte) {
	if r.legacy {
		h := sha256.Sum256(row)
		r.a += binary.BigEndian.Uint64(h[0:8])
		r.b += binary.BigEndian.Uint64(h[8:16])
	} else {
		h := xxh3.Hash128(row)
		r.a += h.Hi
		r.b += h.Lo
	}
	r.rows++
}

// Merge adds the rows o has seen, so that one RowSum covers a table copied
// in several parts.
func (r *RowSum) Merge(o *RowSum) {
	o.flush()
	r.a += o.a
	r.b += o.b
	r.rows += o.rows
	if r.err == nil {
		r.err = o.err
	}
}

// flush counts a trailing text row without its newline, and ends a binary
// stream (which must have ended with its trailer).
func (r *RowSum) flush() {
	if len(r.partial) > 0 {
		r.add(r.partial)
		r.partial = r.partial[:0]
	}
	if r.tuples != nil {
		if err := r.tuples.Close(); err != nil && r.err == nil {
			r.err = err
		}
		r.tuples = nil
	}
}

// atRowEnd reports whether what was written so far ends with a whole row.
func (r *RowSum) atRowEnd() bool {
	if r.tuples != nil {
		return r.tuples.AtTupleEnd()
	}
	return len(r.partial) == 0
}

// Rows is the number of complete rows seen.
func (r *RowSum) Rows() int64 { return r.rows }

// Err is what was wrong with a binary stream: such a stream's digest does
// not describe its rows.
func (r *RowSum) Err() error {
	r.flush()
	return r.err
}

// String is the digest as 32 hex digits. A trailing row without its
// newline (COPY always ends rows with one) is counted.
func (r *RowSum) String() string {
	r.flush()
	return fmt.Sprintf("%016x%016x", r.a, r.b)
}

// SumTable reads table t of a loaded database with COPY, in the backup's
// column order and COPY format, and returns its row count and the RowSum
// digest that manifest version version defines. conn must pin the text
// settings the backup was taken with (wal.ConnectText), or values such as
// dates and floats print differently.
func SumTable(ctx context.Context, conn *pgx.Conn, version int, t Table) (rows int64, sum string, err error) {
	cols := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		cols[i] = pgx.Identifier{c}.Sanitize()
	}
	r := NewRowSum(version, t.CopyFormat())
	q := "COPY " + pgx.Identifier{t.Schema, t.Name}.Sanitize()
	if len(cols) > 0 { // a table without columns has rows too, but no list
		q += " (" + strings.Join(cols, ", ") + ")"
	}
	q += " TO STDOUT" + copyOptions(t.CopyFormat(), false)
	if _, err := conn.PgConn().CopyTo(ctx, r, q); err != nil {
		return 0, "", fmt.Errorf("read table %s.%s: %w", t.Schema, t.Name, err)
	}
	sum = r.String()
	if err := r.Err(); err != nil {
		return 0, "", fmt.Errorf("read table %s.%s: %w", t.Schema, t.Name, err)
	}
	return r.Rows(), sum, nil
}

// copyOptions is the option list of a COPY in format, with FREEZE if
// freeze: empty for text without FREEZE, which every PostgreSQL version
// reads.
func copyOptions(format string, freeze bool) string {
	var opts []string
	if format == FormatBinary {
		opts = append(opts, "FORMAT binary")
	}
	if freeze {
		opts = append(opts, "FREEZE")
	}
	if len(opts) == 0 {
		return ""
	}
	return " (" + strings.Join(opts, ", ") + ")"
}
