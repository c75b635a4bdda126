package wal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strings"
	"time"

	"github.com/pierrec/lz4/v4"
)

// SegmentVersion is the version of the segment encoding (docs/FORMAT.md).
// Bump it whenever the bytes written change.
const SegmentVersion = 1

// ProtoVersion is the pgoutput protocol version whose messages segments
// carry.
const ProtoVersion = 1

const (
	segMagic      = "WBSG"
	segHeaderSize = 4 + 2 + 2 + 1 + 7 + 8*7 + 4 + 4 + 4 // see docs/FORMAT.md
	flagLZ4       = 1 << 0
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrCorrupt marks a segment that failed its checksums or could not be
// decoded; restore falls back to another store's copy.
var ErrCorrupt = errors.New("segment is corrupt")

// SegmentInfo is the header of a segment. A segment covers the half-open
// stream interval [From, To): it holds every transaction whose commit
// record lies in that interval, and nothing else. Covering intervals, not
// transaction lists, is what lets restore prove there is no gap.
type SegmentInfo struct {
	From, To          LSN
	Txns              uint32
	FirstCommit       time.Time // zero when the segment holds no transaction
	LastCommit        time.Time
	ToTime            time.Time // source server time at which the stream had reached To
	RawSize, BodySize uint64
	BodyCRC           uint32
	Compressed        bool
	FirstCommitLSN    LSN
	LastEndLSN        LSN
}

// SegmentPrefix is the key prefix of all segments in an archive.
const SegmentPrefix = "segments/"

// SegmentKey is the object key of the segment covering [from, to). Keys sort
// in stream order, and a re-upload of the same range has the same key, which
// makes writes after a crash idempotent.
func SegmentKey(from, to LSN) string {
	return SegmentPrefix + HexLSN(from) + "-" + HexLSN(to) + ".seg"
}

// ParseSegmentKey returns the range encoded in a segment key.
func ParseSegmentKey(key string) (from, to LSN, err error) {
	name := strings.TrimPrefix(key, SegmentPrefix)
	name, ok := strings.CutSuffix(name, ".seg")
	a, b, ok2 := strings.Cut(name, "-")
	if !ok || !ok2 || len(a) != 16 || len(b) != 16 {
		return 0, 0, fmt.Errorf("not a segment key: %q", key)
	}
	if from, err = ParseLSN(a); err != nil {
		return 0, 0, err
	}
	if to, err = ParseLSN(b); err != nil {
		return 0, 0, err
	}
	return from, to, nil
}

func putTime(t time.Time) uint64 {
	if t.IsZero() {
		return 0
	}
	return uint64(t.UnixMicro())
}

func getTime(v uint64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMicro(int64(v)).UTC()
}

func (h *SegmentInfo) marshal() []byte {
	b := make([]byte, 0, segHeaderSize)
	b = append(b, segMagic...)
	b = binary.BigEndian.AppendUint16(b, SegmentVersion)
	var flags uint16
	if h.Compressed {
		flags |= flagLZ4
	}
	b = binary.BigEndian.AppendUint16(b, flags)
	b = append(b, ProtoVersion, 0, 0, 0, 0, 0, 0, 0)
	for _, v := range []uint64{uint64(h.From), uint64(h.To), putTime(h.FirstCommit), putTime(h.LastCommit), putTime(h.ToTime), h.RawSize, h.BodySize} {
		b = binary.BigEndian.AppendUint64(b, v)
	}
	b = binary.BigEndian.AppendUint32(b, h.Txns)
	b = binary.BigEndian.AppendUint32(b, h.BodyCRC)
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// ReadSegmentInfo decodes and checks a segment header.
func ReadSegmentInfo(b []byte) (SegmentInfo, error) {
	var h SegmentInfo
	if len(b) < segHeaderSize {
		return h, fmt.Errorf("%w: %d bytes is shorter than the header", ErrCorrupt, len(b))
	}
	if string(b[:4]) != segMagic {
		return h, fmt.Errorf("%w: bad magic (not a wayback segment)", ErrCorrupt)
	}
	if got, want := crc32.Checksum(b[:segHeaderSize-4], castagnoli), binary.BigEndian.Uint32(b[segHeaderSize-4:]); got != want {
		return h, fmt.Errorf("%w: header checksum mismatch", ErrCorrupt)
	}
	if v := binary.BigEndian.Uint16(b[4:]); v != SegmentVersion {
		return h, fmt.Errorf("segment format version %d is not supported by this wayback (it reads version %d): upgrade wayback", v, SegmentVersion)
	}
	flags := binary.BigEndian.Uint16(b[6:])
	if b[8] != ProtoVersion {
		return h, fmt.Errorf("segment carries pgoutput protocol %d, expected %d", b[8], ProtoVersion)
	}
	h.Compressed = flags&flagLZ4 != 0
	p := b[16:]
	u := func() uint64 { v := binary.BigEndian.Uint64(p); p = p[8:]; return v }
	h.From, h.To = LSN(u()), LSN(u())
	h.FirstCommit, h.LastCommit, h.ToTime = getTime(u()), getTime(u()), getTime(u())
	h.RawSize, h.BodySize = u(), u()
	h.Txns = binary.BigEndian.Uint32(p)
	h.BodyCRC = binary.BigEndian.Uint32(p[4:])
	return h, nil
}

// Builder accumulates pgoutput messages into the body of the next segment.
// It is not safe for concurrent use; the stream loop owns it.
type Builder struct {
	body    bytes.Buffer
	info    SegmentInfo
	rels    map[uint32][]byte // latest Relation message per relation, across segments
	written map[uint32]bool   // relations whose Relation message is in this body
	// before holds, for relations redefined inside the open transaction,
	// the definition in force when it began: a cut carrying the open
	// transaction over must describe its first changes with that one.
	before   map[uint32][]byte
	inTxn    bool
	txnStart int // body offset of the open transaction's Begin
	// Where, relative to txnStart, the open transaction's trailing run of
	// changes from one WAL record (all at runLSN) begins, with the
	// Relation messages sent for them; runLSN is 0 when there is no run.
	// schemaAt (-1 if none) is where Relation and Type messages not yet
	// followed by their change begin. See AddAt.
	runAt    int
	runLSN   LSN
	schemaAt int
}

// NewBuilder starts the first segment at from, normally the slot's
// confirmed flush position.
func NewBuilder(from LSN) *Builder {
	return &Builder{info: SegmentInfo{From: from, To: from}, rels: map[uint32][]byte{}, written: map[uint32]bool{}, before: map[uint32][]byte{}}
}

// InTxn reports whether a transaction has begun and not yet committed.
func (b *Builder) InTxn() bool { return b.inTxn }

// Len is the raw size of the body so far, complete transactions only.
func (b *Builder) Len() int {
	if b.inTxn {
		return b.txnStart
	}
	return b.body.Len()
}

// Txns is the number of complete transactions in the pending segment.
func (b *Builder) Txns() int { return int(b.info.Txns) }

// From is where the pending segment starts.
func (b *Builder) From() LSN { return b.info.From }

// To is the position up to which the pending segment covers the stream.
func (b *Builder) To() LSN { return b.info.To }

// LastCommit is the commit time of the newest complete transaction pending.
func (b *Builder) LastCommit() time.Time { return b.info.LastCommit }

func (b *Builder) appendMsg(msg []byte) {
	var n [binary.MaxVarintLen64]byte
	b.body.Write(n[:binary.PutUvarint(n[:], uint64(len(msg)))])
	b.body.Write(msg)
}

func (b *Builder) ensureRel(relid uint32) error {
	if b.written[relid] {
		return nil
	}
	rm, ok := b.rels[relid]
	if !ok {
		return fmt.Errorf("change for relation %d arrived before its Relation message", relid)
	}
	b.appendMsg(rm)
	b.written[relid] = true
	return nil
}

// Add appends one pgoutput message whose WAL position is unknown. It
// reports whether msg was a transaction's Commit. msg is copied.
func (b *Builder) Add(msg []byte) (committed bool, err error) { return b.AddAt(msg, 0) }

// AddAt appends one pgoutput message that arrived with WAL position at
// (the XLogData WALStart: a change's record start, a logical message's
// position, 0 for Relation messages). It reports whether msg was a
// transaction's Commit. msg is copied.
//
// PostgreSQL 15 positions a transactional logical message at the end of
// its WAL record, which is where the next record starts. When that record
// is a change of another subtransaction of the same transaction, the two
// tie and the server may send the change first (agent/ddl.go, "The pad").
// Such a change always belongs after the message, so AddAt moves a
// transactional message in front of the changes just before it that
// carry its position, and the Relation messages sent for them. Capture
// triggers installed by current setups never cause the tie; this keeps
// sources set up by older versions exact.
func (b *Builder) AddAt(msg []byte, at LSN) (committed bool, err error) {
	if len(msg) == 0 {
		return false, errors.New("empty pgoutput message")
	}
	r := reader{b: msg[1:]}
	switch msg[0] {
	case MsgBegin:
		if b.inTxn {
			return false, errors.New("Begin inside an open transaction")
		}
		b.inTxn, b.txnStart = true, b.body.Len()
		b.runLSN, b.schemaAt = 0, -1
		clear(b.before)
	case MsgCommit:
		if !b.inTxn {
			return false, errors.New("Commit without Begin")
		}
		r.u8()
		commitLSN, endLSN, ts := LSN(r.u64()), LSN(r.u64()), pgTime(int64(r.u64()))
		if r.err != nil {
			return false, fmt.Errorf("decode commit: %w", r.err)
		}
		b.appendMsg(msg)
		b.inTxn = false
		if b.info.Txns == 0 {
			b.info.FirstCommit = ts
		}
		b.info.Txns++
		b.info.LastCommit = ts
		if commitLSN < b.info.From {
			return false, fmt.Errorf("transaction committed at %s, before the segment start %s", commitLSN, b.info.From)
		}
		if endLSN > b.info.To {
			b.info.To = endLSN
		}
		return true, nil
	case MsgRelation:
		relid := r.u32()
		if r.err != nil {
			return false, fmt.Errorf("decode relation: %w", r.err)
		}
		if old, ok := b.rels[relid]; ok && b.inTxn {
			if _, saved := b.before[relid]; !saved {
				b.before[relid] = old
			}
		}
		b.rels[relid] = bytes.Clone(msg)
		b.written[relid] = true
		b.noteSchema()
	case MsgInsert, MsgUpdate, MsgDelete:
		start := b.body.Len()
		if err := b.ensureRel(r.u32()); err != nil {
			return false, err
		}
		b.noteChange(start, at)
	case MsgTruncate:
		start := b.body.Len()
		n := int(r.u32())
		r.u8()
		for i := 0; i < n && r.err == nil; i++ {
			if err := b.ensureRel(r.u32()); err != nil {
				return false, err
			}
		}
		if r.err != nil {
			return false, fmt.Errorf("decode truncate: %w", r.err)
		}
		b.noteChange(start, at)
	case MsgMessage:
		if msg[1]&1 == 0 {
			if !b.inTxn {
				// A non-transactional logical message outside any
				// transaction has no commit to order it by; wayback's own
				// marks are transactional, so others are not archived.
				return false, nil
			}
			break
		}
		r.u8()
		pos := LSN(r.u64())
		if r.err != nil {
			return false, fmt.Errorf("decode logical message: %w", r.err)
		}
		if b.inTxn && b.runLSN != 0 && pos == b.runLSN {
			b.insertAt(b.txnStart+b.runAt, msg)
			b.runLSN, b.schemaAt = 0, -1
			return false, nil
		}
		b.runLSN, b.schemaAt = 0, -1
	case MsgType:
		b.noteSchema()
	case MsgOrigin:
	default:
		return false, fmt.Errorf("unexpected pgoutput message type %q", msg[0])
	}
	b.appendMsg(msg)
	return false, nil
}

// noteSchema records where Relation and Type messages that precede a
// change begin.
func (b *Builder) noteSchema() {
	if b.inTxn && b.schemaAt < 0 {
		b.schemaAt = b.body.Len() - b.txnStart
	}
}

// noteChange records a change appended at body offset start (before any
// Relation message ensureRel added for it) from the record at WAL position
// at.
func (b *Builder) noteChange(start int, at LSN) {
	if !b.inTxn {
		return
	}
	start -= b.txnStart
	if b.schemaAt >= 0 {
		start = b.schemaAt
	}
	b.schemaAt = -1
	if at != 0 && at == b.runLSN {
		return // another change of the same record
	}
	b.runAt, b.runLSN = start, at
}

// insertAt puts msg into the body at offset off, in front of what follows.
func (b *Builder) insertAt(off int, msg []byte) {
	tail := bytes.Clone(b.body.Bytes()[off:])
	b.body.Truncate(off)
	b.appendMsg(msg)
	b.body.Write(tail)
}

// Extend moves the covered end forward without a transaction, when the
// server reports (keepalive) that it has decoded everything before pos.
// Only valid between transactions.
func (b *Builder) Extend(pos LSN, serverTime time.Time) {
	if !b.inTxn && pos > b.info.To {
		b.info.To = pos
		b.info.ToTime = serverTime
	}
}

// Abandon drops an open transaction; the stream will send it again from
// the slot after a restart.
func (b *Builder) Abandon() {
	if b.inTxn {
		b.body.Truncate(b.txnStart)
		b.inTxn = false
	}
}

// Cut finishes the pending segment with the complete transactions and
// starts the next one where it ends. An open transaction moves to the next
// segment, preceded by the Relation messages it may rely on, so a long
// transaction never holds back the ones committed before it. The returned
// bytes are the whole segment object; info describes it.
func (b *Builder) Cut(compress bool) (data []byte, info SegmentInfo, err error) {
	info = b.info
	if info.ToTime.Before(info.LastCommit) {
		info.ToTime = info.LastCommit
	}
	all := b.body.Bytes()
	raw, open := all, []byte(nil)
	if b.inTxn {
		raw, open = all[:b.txnStart], bytes.Clone(all[b.txnStart:])
	}
	info.RawSize = uint64(len(raw))
	body := raw
	if compress {
		var cbuf bytes.Buffer
		zw := lz4.NewWriter(&cbuf)
		if err := zw.Apply(lz4.BlockSizeOption(lz4.Block1Mb), lz4.ChecksumOption(false)); err != nil {
			return nil, info, fmt.Errorf("configure lz4: %w", err)
		}
		if _, err := zw.Write(raw); err != nil {
			return nil, info, fmt.Errorf("compress segment: %w", err)
		}
		if err := zw.Close(); err != nil {
			return nil, info, fmt.Errorf("compress segment: %w", err)
		}
		body = cbuf.Bytes()
		info.Compressed = true
	}
	info.BodySize = uint64(len(body))
	info.BodyCRC = crc32.Checksum(body, castagnoli)
	hdr := info.marshal()
	data = make([]byte, 0, len(hdr)+len(body))
	data = append(append(data, hdr...), body...)

	b.body.Reset()
	b.info = SegmentInfo{From: info.To, To: info.To, ToTime: info.ToTime}
	if open == nil {
		clear(b.written)
		return data, info, nil
	}
	for relid := range b.written {
		if old, ok := b.before[relid]; ok {
			b.appendMsg(old)
		} else {
			b.appendMsg(b.rels[relid])
		}
	}
	b.txnStart = b.body.Len()
	b.body.Write(open)
	return data, info, nil
}

// DecodeSegment checks a whole segment object and returns its header and
// uncompressed body.
func DecodeSegment(data []byte) (SegmentInfo, []byte, error) {
	h, err := ReadSegmentInfo(data)
	if err != nil {
		return h, nil, err
	}
	body := data[segHeaderSize:]
	if uint64(len(body)) != h.BodySize {
		return h, nil, fmt.Errorf("%w: body is %d bytes, header says %d", ErrCorrupt, len(body), h.BodySize)
	}
	if crc32.Checksum(body, castagnoli) != h.BodyCRC {
		return h, nil, fmt.Errorf("%w: body checksum mismatch", ErrCorrupt)
	}
	if !h.Compressed {
		return h, body, nil
	}
	raw := make([]byte, 0, h.RawSize)
	buf := bytes.NewBuffer(raw)
	if _, err := io.Copy(buf, lz4.NewReader(bytes.NewReader(body))); err != nil {
		return h, nil, fmt.Errorf("%w: decompress: %v", ErrCorrupt, err)
	}
	if uint64(buf.Len()) != h.RawSize {
		return h, nil, fmt.Errorf("%w: body decompresses to %d bytes, header says %d", ErrCorrupt, buf.Len(), h.RawSize)
	}
	return h, buf.Bytes(), nil
}

// Decoder turns a segment body back into transactions. Relations persist
// across bodies, so one Decoder can read a chain of segments.
type Decoder struct {
	rels map[uint32]*Relation
}

// NewDecoder returns a Decoder with no known relations.
func NewDecoder() *Decoder { return &Decoder{rels: map[uint32]*Relation{}} }

// Decode calls fn for each transaction in body, in commit order. The Txn
// and its tuples alias body and are valid only during the call.
func (d *Decoder) Decode(body []byte, fn func(*Txn) error) error {
	var txn *Txn
	for len(body) > 0 {
		n, k := binary.Uvarint(body)
		if k <= 0 || uint64(len(body)-k) < n {
			return fmt.Errorf("%w: bad record length", ErrCorrupt)
		}
		msg := body[k : k+int(n)]
		body = body[k+int(n):]
		if len(msg) == 0 {
			return fmt.Errorf("%w: empty record", ErrCorrupt)
		}
		r := reader{b: msg[1:]}
		switch msg[0] {
		case MsgBegin:
			finalLSN, ts, xid := LSN(r.u64()), pgTime(int64(r.u64())), r.u32()
			txn = &Txn{XID: xid, CommitLSN: finalLSN, CommitTime: ts}
		case MsgCommit:
			if txn == nil {
				return fmt.Errorf("%w: commit without begin", ErrCorrupt)
			}
			r.u8()
			txn.CommitLSN, txn.EndLSN, txn.CommitTime = LSN(r.u64()), LSN(r.u64()), pgTime(int64(r.u64()))
			if r.err != nil {
				break
			}
			if err := fn(txn); err != nil {
				return err
			}
			txn = nil
			continue
		case MsgRelation:
			rel, err := parseRelation(msg)
			if err != nil {
				return fmt.Errorf("%w: %v", ErrCorrupt, err)
			}
			d.rels[rel.ID] = rel
			continue
		case MsgType, MsgOrigin:
			continue
		}
		if txn == nil {
			if msg[0] == MsgBegin {
				return fmt.Errorf("%w: %v", ErrCorrupt, r.err)
			}
			return fmt.Errorf("%w: %q record outside a transaction", ErrCorrupt, msg[0])
		}
		if msg[0] == MsgBegin {
			if r.err != nil {
				return fmt.Errorf("%w: %v", ErrCorrupt, r.err)
			}
			continue
		}
		c, err := d.change(msg[0], &r)
		if err != nil {
			return err
		}
		txn.Changes = append(txn.Changes, c)
	}
	if txn != nil {
		return fmt.Errorf("%w: segment ends inside transaction %d", ErrCorrupt, txn.XID)
	}
	return nil
}

func (d *Decoder) rel(id uint32) (*Relation, error) {
	rel, ok := d.rels[id]
	if !ok {
		return nil, fmt.Errorf("%w: change for unknown relation %d", ErrCorrupt, id)
	}
	return rel, nil
}

func (d *Decoder) change(typ byte, r *reader) (Change, error) {
	c := Change{Op: Op(typ)}
	var err error
	switch typ {
	case MsgInsert:
		c.Rel, err = d.rel(r.u32())
		r.u8() // 'N'
		c.New = r.tuple()
	case MsgUpdate:
		c.Rel, err = d.rel(r.u32())
		switch k := r.u8(); k {
		case 'K', 'O':
			c.OldKind, c.Old = k, r.tuple()
			r.u8() // 'N'
			c.New = r.tuple()
		case 'N':
			c.New = r.tuple()
		default:
			r.err = fmt.Errorf("update tuple marker %q", k)
		}
	case MsgDelete:
		c.Rel, err = d.rel(r.u32())
		c.OldKind = r.u8()
		c.Old = r.tuple()
	case MsgTruncate:
		n := int(r.u32())
		c.TruncateOptions = r.u8()
		for i := 0; i < n && r.err == nil && err == nil; i++ {
			var rel *Relation
			rel, err = d.rel(r.u32())
			c.Truncated = append(c.Truncated, rel)
		}
	case MsgMessage:
		r.u8()
		r.u64()
		c.Prefix = r.cstring()
		c.Content = r.bytes(int(r.u32()))
	default:
		return c, fmt.Errorf("%w: unexpected record type %q", ErrCorrupt, typ)
	}
	if err != nil {
		return c, err
	}
	if r.err != nil {
		return c, fmt.Errorf("%w: %s record: %v", ErrCorrupt, Op(typ), r.err)
	}
	if c.Rel != nil && (len(c.New) > len(c.Rel.Columns) || len(c.Old) > len(c.Rel.Columns)) {
		return c, fmt.Errorf("%w: tuple wider than relation %s", ErrCorrupt, c.Rel.QualifiedName())
	}
	return c, nil
}
