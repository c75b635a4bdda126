package basebackup

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"os"
	"strings"

	"github.com/pierrec/lz4/v4"

	"github.com/wayback-pitr/wayback/store"
)

// DefaultPieceBytes is Options.PieceBytes when unset.
const DefaultPieceBytes = 32 << 20

// pieces stores one stream of a backup as one or more objects. The stream
// is lz4-compressed into a spool file; when the writer cuts it (Cut, at a
// row boundary: see rowCutter), that piece is stored in every store in the
// background while the next one is written. So a big table needs spool
// space for two pieces rather than for all of it, and only the last piece
// is stored after its COPY ends: a 157 MB data file took 0.24 s to copy
// into two file stores and fsync after the COPY, the whole tail of the
// backup. At most one piece is being stored at a time, which holds the
// COPY back when the stores are slower than the database.
type pieces struct {
	ctx   context.Context
	fan   *store.Fanout
	spool string
	key   string // the first piece's key; the others get .pNNNN before the suffix
	refs  []FileRef
	cur   *piece
	// storing is the result of the piece being stored, if one is (its
	// reference is already the last of refs).
	storing chan error
}

// piece is one object being written: its spool file, and the counts and
// checksum of what went in and what came out of lz4.
type piece struct {
	f           *os.File
	sum         hash.Hash
	stored, raw *countWriter
	zw          *lz4.Writer
	key         string
}

func newPieces(ctx context.Context, fan *store.Fanout, spool, key string) (*pieces, error) {
	p := &pieces{ctx: ctx, fan: fan, spool: spool, key: key}
	return p, p.open()
}

// pieceKey names piece n of the stream whose first piece is key:
// data/00001.copy.lz4, data/00001.p0001.copy.lz4, ... (keys are opaque
// to readers, which take them from the manifest).
func pieceKey(key string, n int) string {
	if n == 0 {
		return key
	}
	if base, ok := strings.CutSuffix(key, ".copy.lz4"); ok {
		return fmt.Sprintf("%s.p%04d.copy.lz4", base, n)
	}
	return fmt.Sprintf("%s.p%04d", key, n)
}

func (p *pieces) open() error {
	key := pieceKey(p.key, len(p.refs))
	f, err := os.CreateTemp(p.spool, "part-*")
	if err != nil {
		return fmt.Errorf("spool %s: %w", key, err)
	}
	c := &piece{f: f, sum: sha256.New(), key: key}
	c.stored = &countWriter{w: io.MultiWriter(f, c.sum)}
	c.zw = lz4.NewWriter(c.stored)
	// No content checksum: the object's SHA-256 covers the same bytes, and
	// xxh32 over every row costs the backup time for nothing.
	if err := c.zw.Apply(lz4.ChecksumOption(false)); err != nil {
		f.Close()
		os.Remove(f.Name())
		return fmt.Errorf("configure lz4 for %s: %w", key, err)
	}
	c.raw = &countWriter{w: c.zw}
	p.cur = c
	return nil
}

// Write adds to the current piece.
func (p *pieces) Write(b []byte) (int, error) { return p.cur.raw.Write(b) }

// Full reports whether the current piece holds limit compressed bytes (lz4
// emits them a block of 4 MiB at a time), or eight times as many raw
// ones: a piece of very compressible rows stays a unit a load can take in
// parallel with others.
func (p *pieces) Full(limit int64) bool {
	return p.cur.stored.n >= limit || p.cur.raw.n >= 8*limit
}

// finish closes the current piece's spool file and returns its reference.
func (p *pieces) finish() (FileRef, string, error) {
	c := p.cur
	p.cur = nil
	err := c.zw.Close()
	if cerr := c.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(c.f.Name())
		return FileRef{}, "", fmt.Errorf("write %s: %w", c.key, err)
	}
	return FileRef{Key: c.key, Size: c.stored.n, RawSize: c.raw.n, SHA256: hex.EncodeToString(c.sum.Sum(nil))}, c.f.Name(), nil
}

// wait waits for the piece being stored, if any.
func (p *pieces) wait() error {
	if p.storing == nil {
		return nil
	}
	err := <-p.storing
	p.storing = nil
	return err
}

// Cut ends the current piece, starts storing it, and begins the next.
func (p *pieces) Cut() error {
	ref, path, err := p.finish()
	if err != nil {
		return err
	}
	if err := p.wait(); err != nil {
		os.Remove(path)
		return err
	}
	p.refs = append(p.refs, ref)
	p.storing = make(chan error, 1)
	go func(done chan<- error) {
		defer os.Remove(path)
		done <- p.fan.PutFile(p.ctx, ref.Key, path)
	}(p.storing)
	return p.open()
}

// Close ends the last piece, stores it, and returns every piece's
// reference in order.
func (p *pieces) Close() ([]FileRef, error) {
	ref, path, err := p.finish()
	if err == nil {
		defer os.Remove(path)
	}
	if werr := p.wait(); err == nil {
		err = werr
	}
	if err != nil {
		return nil, err
	}
	if err := p.fan.PutFile(p.ctx, ref.Key, path); err != nil {
		return nil, err
	}
	return append(p.refs, ref), nil
}

// Abort drops the current piece and waits for the one being stored.
func (p *pieces) Abort() {
	if p.cur != nil {
		p.cur.f.Close()
		os.Remove(p.cur.f.Name())
		p.cur = nil
	}
	_ = p.wait()
}

// rowCutter feeds a COPY stream to pieces and its RowSum, and cuts the
// pieces at row boundaries once the current one is full (pieces.Full):
// text rows end at a newline, binary ones where the RowSum's tuple
// splitter says a tuple ended. Each binary piece is a whole COPY BINARY
// stream, so the cut also writes a trailer, and the next piece begins with
// a header; a cut waits for the next write so that a stream's last piece
// is never one holding just the trailer.
//
// pgx writes each CopyData message, one row, on its own; rowCutter
// gathers them into a buffer and passes it on whole, which spares lz4
// and the digest a call per row (0.2 s of a 1 GB backup's CPU). Flush
// passes on the rest.
type rowCutter struct {
	out     *pieces
	sum     *RowSum
	binary  bool
	limit   int64 // <= 0: never cut
	cutNext bool
	buf     []byte
}

// cutterBuffer is how much rowCutter gathers before passing it on, or the
// piece limit if that is smaller.
const cutterBuffer = 256 << 10

func (c *rowCutter) Write(b []byte) (int, error) {
	if c.buf == nil {
		size := int64(cutterBuffer)
		if c.limit > 0 {
			size = min(size, c.limit)
		}
		c.buf = make([]byte, 0, size)
	}
	if len(c.buf)+len(b) > cap(c.buf) && len(c.buf) > 0 {
		if err := c.Flush(); err != nil {
			return 0, err
		}
	}
	if len(b) >= cap(c.buf) {
		return len(b), c.pass(b)
	}
	c.buf = append(c.buf, b...)
	return len(b), nil
}

// Flush passes on what Write gathered.
func (c *rowCutter) Flush() error {
	if len(c.buf) == 0 {
		return nil
	}
	err := c.pass(c.buf)
	c.buf = c.buf[:0]
	return err
}

// pass writes b to the pieces and the digest, cutting before it if the
// last pass left a full piece at a row boundary.
func (c *rowCutter) pass(b []byte) error {
	if c.cutNext && !(c.binary && len(b) >= 2 && b[0] == 0xff && b[1] == 0xff) {
		// b starts a row (the last pass ended one); 0xffff there is the
		// stream's own trailer, which stays in the current piece.
		c.cutNext = false
		if err := c.cut(); err != nil {
			return err
		}
	}
	if _, err := c.out.Write(b); err != nil {
		return err
	}
	_, _ = c.sum.Write(b) // a malformed stream shows in sum.Err
	if c.limit > 0 && c.out.Full(c.limit) && c.sum.atRowEnd() {
		c.cutNext = true
	}
	return nil
}

// binaryHeader is the COPY BINARY header PostgreSQL writes: signature, no
// flags, no header extension. binaryTrailer is the field count -1.
var (
	binaryHeader  = []byte("PGCOPY\n\xff\r\n\x00\x00\x00\x00\x00\x00\x00\x00\x00")
	binaryTrailer = []byte{0xff, 0xff}
)

func (c *rowCutter) cut() error {
	if c.binary {
		if _, err := c.out.Write(binaryTrailer); err != nil {
			return err
		}
	}
	if err := c.out.Cut(); err != nil {
		return err
	}
	if c.binary {
		if _, err := c.out.Write(binaryHeader); err != nil {
			return err
		}
	}
	return nil
}
