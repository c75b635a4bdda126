// Package pgcopy reads PostgreSQL COPY formats: the COPY BINARY stream
// (BinaryReader, TupleWriter) and the conversion of built-in types' binary
// values to the text their output functions print (AppendText), so that a
// base backup can be taken with the cheaper send functions and still be
// digested and loaded as text.
package pgcopy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// signature starts every COPY BINARY stream; it is followed by a 32-bit
// flags field and a 32-bit header extension length.
const signature = "PGCOPY\n\xff\r\n\x00"

// headerLen is the fixed part of the header: signature, flags, extension length.
const headerLen = len(signature) + 8

// maxField bounds one field's length: PostgreSQL cannot hold a value of 1 GB
// or more, so a larger length means a corrupt stream, and refusing it keeps a
// bogus length from making us wait for (or allocate) gigabytes.
const maxField = 1 << 30

// parseHeader checks the fixed header and returns the length of the header
// extension that follows it.
func parseHeader(h []byte) (int, error) {
	if string(h[:len(signature)]) != signature {
		return 0, errors.New("COPY BINARY: bad signature")
	}
	flags := binary.BigEndian.Uint32(h[len(signature):])
	// Bits 0-15 are reserved for format-critical flags and bit 16 means each
	// tuple carries an OID, which PostgreSQL 12+ never writes; either way we
	// would misread the tuples, so refuse like PostgreSQL's COPY FROM does.
	if flags&0x1ffff != 0 {
		return 0, fmt.Errorf("COPY BINARY: unsupported header flags %#x", flags)
	}
	ext := binary.BigEndian.Uint32(h[len(signature)+4:])
	if ext > maxField {
		return 0, fmt.Errorf("COPY BINARY: header extension length %d", ext)
	}
	return int(ext), nil
}

// scanTuple walks the tuple starting at b[0] from a resumable position: pos
// is where the next length word starts and left the number of fields still
// to walk (-1 before the field count is read). When b does not yet hold the
// next piece it returns done false and need, the length b must reach for
// the walk to progress. trailer reports the end-of-data marker (count -1).
func scanTuple(b []byte, pos, left int) (npos, nleft, need int, done, trailer bool, err error) {
	if left < 0 {
		if len(b) < pos+2 {
			return pos, left, pos + 2, false, false, nil
		}
		n := int(int16(binary.BigEndian.Uint16(b[pos:])))
		if n == -1 {
			return pos + 2, 0, 0, true, true, nil
		}
		if n < 0 {
			return 0, 0, 0, false, false, fmt.Errorf("COPY BINARY: negative field count %d", n)
		}
		pos, left = pos+2, n
	}
	for left > 0 {
		if len(b) < pos+4 {
			return pos, left, pos + 4, false, false, nil
		}
		l := int(int32(binary.BigEndian.Uint32(b[pos:])))
		if l == -1 {
			pos, left = pos+4, left-1
			continue
		}
		if l < 0 || l > maxField {
			return 0, 0, 0, false, false, fmt.Errorf("COPY BINARY: invalid field length %d", l)
		}
		if len(b) < pos+4+l {
			return pos, left, pos + 4 + l, false, false, nil
		}
		pos, left = pos+4+l, left-1
	}
	return pos, 0, 0, true, false, nil
}

// BinaryReader reads a COPY BINARY stream: signature header (with flags and
// header extension, skipped), tuples, trailer (-1).
type BinaryReader struct {
	r        io.Reader
	buf      []byte // buf[off:end] is read but not yet returned
	off, end int
	started  bool
	done     bool
	err      error
	raw      []byte
	fields   [][]byte
}

// NewBinaryReader returns a reader of the COPY BINARY stream r.
func NewBinaryReader(r io.Reader) *BinaryReader {
	return &BinaryReader{r: r, buf: make([]byte, 64<<10)}
}

// fill makes buf[off:end] at least n bytes long, moving the unread bytes to
// the front and growing the buffer only as data actually arrives.
func (r *BinaryReader) fill(n int) error {
	if r.end-r.off >= n {
		return nil
	}
	if r.off > 0 {
		r.end = copy(r.buf, r.buf[r.off:r.end])
		r.off = 0
	}
	for r.end < n {
		if r.end == len(r.buf) {
			nb := make([]byte, min(2*len(r.buf), max(n, len(r.buf)+64<<10)))
			copy(nb, r.buf[:r.end])
			r.buf = nb
		}
		m, err := r.r.Read(r.buf[r.end:])
		r.end += m
		if r.end >= n {
			return nil
		}
		if err == io.EOF {
			return io.ErrUnexpectedEOF
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// Next returns the next tuple's fields, a nil slice for SQL NULL (an empty
// non-nil slice for a zero-length value). The slices are valid until the
// next call. It returns io.EOF after the trailer; a truncated stream gives
// an error wrapping io.ErrUnexpectedEOF.
func (r *BinaryReader) Next() ([][]byte, error) {
	if r.err != nil {
		return nil, r.err
	}
	f, err := r.next()
	if err != nil {
		r.err = err
		r.raw = nil
	}
	return f, err
}

func (r *BinaryReader) next() ([][]byte, error) {
	if !r.started {
		if err := r.fill(headerLen); err != nil {
			return nil, fmt.Errorf("COPY BINARY: read header: %w", err)
		}
		ext, err := parseHeader(r.buf[r.off:])
		if err != nil {
			return nil, err
		}
		// Skip the extension in buffer-sized steps: it may be longer than
		// the buffer and its content is meaningless to us.
		r.off += headerLen
		for ext > 0 {
			if err := r.fill(1); err != nil {
				return nil, fmt.Errorf("COPY BINARY: read header extension: %w", err)
			}
			k := min(ext, r.end-r.off)
			r.off += k
			ext -= k
		}
		r.started = true
	}
	if r.done {
		return nil, io.EOF
	}
	// Walk the tuple first, only making sure the bytes are there: fill may
	// move the buffer, so the field slices are cut afterwards.
	pos, left := 0, -1
	for {
		npos, nleft, need, done, trailer, err := scanTuple(r.buf[r.off:r.end], pos, left)
		if err != nil {
			return nil, err
		}
		if trailer {
			r.off += npos
			r.done = true
			return nil, io.EOF
		}
		if done {
			pos = npos
			break
		}
		pos, left = npos, nleft
		if err := r.fill(need); err != nil {
			return nil, fmt.Errorf("COPY BINARY: read tuple: %w", err)
		}
	}
	r.raw = r.buf[r.off : r.off+pos]
	r.off += pos
	r.fields = splitTuple(r.fields[:0], r.raw)
	return r.fields, nil
}

// splitTuple appends the fields of a complete, already validated tuple to dst.
func splitTuple(dst [][]byte, t []byte) [][]byte {
	n := int(binary.BigEndian.Uint16(t))
	pos := 2
	for range n {
		l := int(int32(binary.BigEndian.Uint32(t[pos:])))
		pos += 4
		if l < 0 {
			dst = append(dst, nil)
			continue
		}
		dst = append(dst, t[pos:pos+l:pos+l])
		pos += l
	}
	return dst
}

// Raw returns the bytes of the tuple Next last returned, exactly as in the
// stream (from its 16-bit field count through its last field), for digests.
// It is valid until the next call of Next.
func (r *BinaryReader) Raw() []byte { return r.raw }

// SplitTuple returns the fields of a tuple as TupleWriter or Raw give it,
// appended to dst[:0]: nil for SQL NULL, slices of t otherwise.
func SplitTuple(dst [][]byte, t []byte) ([][]byte, error) {
	pos, _, _, done, trailer, err := scanTuple(t, 0, -1)
	if err != nil {
		return nil, err
	}
	if !done || trailer || pos != len(t) {
		return nil, errors.New("COPY BINARY: not one whole tuple")
	}
	return splitTuple(dst[:0], t), nil
}

// TupleWriter is an io.Writer fed a COPY BINARY stream in arbitrary pieces
// (as pgx's CopyTo writes CopyData messages: the header may come in the same
// write as the first tuple, a tuple may be split across writes); it calls fn
// with each tuple's raw bytes (the span Raw gives). A tuple that lies whole
// inside one write is passed as a slice of that write, without copying; only
// a tuple split across writes is gathered in a buffer. fn must not keep the
// slice after it returns.
type TupleWriter struct {
	fn      func(tuple []byte)
	hdr     []byte // header bytes gathered so far, until the fixed part is whole
	skip    int    // header extension bytes still to skip
	started bool
	trailer bool
	err     error
	// pending holds a tuple split across writes; pos and left are its walk
	// state (see scanTuple) and need the length it must reach to go on.
	pending   []byte
	pos, left int
	need      int
}

// NewTupleWriter returns a TupleWriter that calls fn for each tuple.
func NewTupleWriter(fn func(tuple []byte)) *TupleWriter {
	return &TupleWriter{fn: fn}
}

// Write consumes the next piece of the stream. It fails on a bad header, a
// malformed tuple or data after the trailer; after an error every call fails.
func (w *TupleWriter) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if err := w.write(p); err != nil {
		w.err = err
		return 0, err
	}
	return len(p), nil
}

func (w *TupleWriter) write(p []byte) error {
	if !w.started {
		k := min(headerLen-len(w.hdr), len(p))
		w.hdr = append(w.hdr, p[:k]...)
		p = p[k:]
		if len(w.hdr) < headerLen {
			return nil
		}
		ext, err := parseHeader(w.hdr)
		if err != nil {
			return err
		}
		w.skip, w.started = ext, true
	}
	if w.skip > 0 {
		k := min(w.skip, len(p))
		w.skip -= k
		p = p[k:]
	}
	// Finish a tuple begun in an earlier write, taking no more of p than it
	// needs so that what follows can be passed on in place.
	for len(w.pending) > 0 && len(p) > 0 {
		k := min(w.need-len(w.pending), len(p))
		w.pending = append(w.pending, p[:k]...)
		p = p[k:]
		if len(w.pending) < w.need {
			break
		}
		pos, left, need, done, trailer, err := scanTuple(w.pending, w.pos, w.left)
		if err != nil {
			return err
		}
		if !done {
			w.pos, w.left, w.need = pos, left, need
			continue
		}
		if trailer {
			w.trailer = true
		} else {
			w.fn(w.pending)
		}
		w.pending = w.pending[:0]
	}
	for len(p) > 0 {
		if w.trailer {
			return errors.New("COPY BINARY: data after the trailer")
		}
		pos, left, need, done, trailer, err := scanTuple(p, 0, -1)
		if err != nil {
			return err
		}
		if !done {
			w.pending = append(w.pending[:0], p...)
			w.pos, w.left, w.need = pos, left, need
			return nil
		}
		if trailer {
			w.trailer = true
		} else {
			w.fn(p[:pos])
		}
		p = p[pos:]
	}
	return nil
}

// AtTupleEnd reports whether everything written so far ends at a tuple
// boundary: the header and every tuple are whole. A stream may be cut
// there into two COPY BINARY streams.
func (w *TupleWriter) AtTupleEnd() bool {
	return w.err == nil && w.started && w.skip == 0 && len(w.pending) == 0
}

// Close reports an error if the stream ended mid-tuple or before the
// trailer (wrapping io.ErrUnexpectedEOF), or if Write failed.
func (w *TupleWriter) Close() error {
	switch {
	case w.err != nil:
		return w.err
	case len(w.pending) > 0:
		return fmt.Errorf("COPY BINARY: stream ends inside a tuple: %w", io.ErrUnexpectedEOF)
	case !w.trailer:
		return fmt.Errorf("COPY BINARY: stream ends before the trailer: %w", io.ErrUnexpectedEOF)
	}
	return nil
}
