package basebackup

import (
	"bytes"
	"context"
	"strings"

	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"github.com/jackc/pgx/v5"
)

// RowSum is an order-independent digest of the rows of one table in COPY
// text format: each row's line (without its newline) is hashed with
// SHA-256, the first 16 bytes are read as two big-endian uint64 numbers,
// and each is summed over all rows modulo 2^64. Being a sum, it is the same
// whatever order the rows come in, so a backup's data file and the table
// loaded from it (read back with COPY in a different physical order) agree.
// It is written as an io.Writer fed with the COPY output; rows may be split
// across writes.
type RowSum struct {
	a, b    uint64
	rows    int64
	partial []byte
}

// Write feeds COPY text output.
func (r *RowSum) Write(p []byte) (int, error) {
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

func (r *RowSum) add(line []byte) {
	h := sha256.Sum256(line)
	r.a += binary.BigEndian.Uint64(h[0:8])
	r.b += binary.BigEndian.Uint64(h[8:16])
	r.rows++
}

// Merge adds the rows o has seen, so that one RowSum covers a table copied
// in several parts.
func (r *RowSum) Merge(o *RowSum) {
	o.flush()
	r.a += o.a
	r.b += o.b
	r.rows += o.rows
}

// flush counts a trailing row without its newline.
func (r *RowSum) flush() {
	if len(r.partial) > 0 {
		r.add(r.partial)
		r.partial = r.partial[:0]
	}
}

// Rows is the number of complete rows seen.
func (r *RowSum) Rows() int64 { return r.rows }

// String is the digest as 32 hex digits. A trailing row without its
// newline (COPY always ends rows with one) is counted.
func (r *RowSum) String() string {
	r.flush()
	return fmt.Sprintf("%016x%016x", r.a, r.b)
}

// SumTable reads table t of a loaded database with COPY, in the backup's
// column order, and returns its row count and RowSum digest. conn must pin
// the text settings the backup was taken with (wal.ConnectText), or values
// such as dates and floats print differently.
func SumTable(ctx context.Context, conn *pgx.Conn, t Table) (rows int64, sum string, err error) {
	cols := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		cols[i] = pgx.Identifier{c}.Sanitize()
	}
	var r RowSum
	q := "COPY " + pgx.Identifier{t.Schema, t.Name}.Sanitize()
	if len(cols) > 0 { // a table without columns has rows too, but no list
		q += " (" + strings.Join(cols, ", ") + ")"
	}
	q += " TO STDOUT"
	if _, err := conn.PgConn().CopyTo(ctx, &r, q); err != nil {
		return 0, "", fmt.Errorf("read table %s.%s: %w", t.Schema, t.Name, err)
	}
	sum = r.String()
	return r.Rows(), sum, nil
}
