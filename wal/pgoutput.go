package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// pgoutput protocol version 1 message types (PostgreSQL docs, "Logical
// Replication Message Formats"). Segments store these messages verbatim.
const (
	MsgBegin    = 'B'
	MsgCommit   = 'C'
	MsgOrigin   = 'O'
	MsgRelation = 'R'
	MsgType     = 'Y'
	MsgInsert   = 'I'
	MsgUpdate   = 'U'
	MsgDelete   = 'D'
	MsgTruncate = 'T'
	MsgMessage  = 'M'
)

// Value kinds inside a tuple.
const (
	KindNull      = 'n' // SQL NULL
	KindUnchanged = 'u' // unchanged TOASTed value: not sent, must not be overwritten
	KindText      = 't' // text-format value
	KindBinary    = 'b' // binary-format value (not requested by wayback)
)

// Truncate option bits.
const (
	TruncateCascade         = 1
	TruncateRestartIdentity = 2
)

var errShort = errors.New("pgoutput message truncated")

// pgEpoch is PostgreSQL's timestamp origin.
var pgEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

func pgTime(micros int64) time.Time {
	return pgEpoch.Add(time.Duration(micros) * time.Microsecond)
}

// reader is a bounds-checked cursor over one message. Errors are sticky so
// that parsers can read a whole message and check once.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail() {
	if r.err == nil {
		r.err = errShort
	}
}

func (r *reader) u8() byte {
	if len(r.b) < 1 {
		r.fail()
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *reader) u16() uint16 {
	if len(r.b) < 2 {
		r.fail()
		return 0
	}
	v := binary.BigEndian.Uint16(r.b)
	r.b = r.b[2:]
	return v
}

func (r *reader) u32() uint32 {
	if len(r.b) < 4 {
		r.fail()
		return 0
	}
	v := binary.BigEndian.Uint32(r.b)
	r.b = r.b[4:]
	return v
}

func (r *reader) u64() uint64 {
	if len(r.b) < 8 {
		r.fail()
		return 0
	}
	v := binary.BigEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

func (r *reader) bytes(n int) []byte {
	if n < 0 || len(r.b) < n {
		r.fail()
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) cstring() string {
	for i, c := range r.b {
		if c == 0 {
			s := string(r.b[:i])
			r.b = r.b[i+1:]
			return s
		}
	}
	r.fail()
	return ""
}

// Relation describes a published table as the source announced it.
type Relation struct {
	ID              uint32 // the source's OID; stable until the table is dropped
	Namespace       string
	Name            string
	ReplicaIdentity byte // 'd' default, 'n' nothing, 'f' full, 'i' index
	Columns         []Column
}

// Column is one replicated column. Generated columns are never sent.
type Column struct {
	Name    string
	TypeOID uint32
	TypeMod int32
	Key     bool // part of the replica identity
}

// QualifiedName is "schema.table" without quoting, for display and JSON.
func (r *Relation) QualifiedName() string { return r.Namespace + "." + r.Name }

// Value is one column value of a row image.
type Value struct {
	Kind byte   // KindNull, KindUnchanged, KindText or KindBinary
	Data []byte // text representation when Kind is KindText
}

// Tuple is a row image in column order of its Relation.
type Tuple []Value

func parseRelation(msg []byte) (*Relation, error) {
	r := reader{b: msg[1:]}
	rel := &Relation{ID: r.u32(), Namespace: r.cstring(), Name: r.cstring(), ReplicaIdentity: r.u8()}
	n := int(r.u16())
	if r.err == nil {
		rel.Columns = make([]Column, n)
	}
	for i := 0; i < n && r.err == nil; i++ {
		flags := r.u8()
		rel.Columns[i] = Column{Name: r.cstring(), TypeOID: r.u32(), TypeMod: int32(r.u32()), Key: flags&1 == 1}
	}
	if r.err != nil {
		return nil, fmt.Errorf("decode relation message: %w", r.err)
	}
	return rel, nil
}

// parseTuple reads a TupleData; values alias msg, so callers that keep
// tuples beyond the message's lifetime must own msg.
func (r *reader) tuple() Tuple {
	n := int(r.u16())
	if r.err != nil {
		return nil
	}
	t := make(Tuple, n)
	for i := 0; i < n && r.err == nil; i++ {
		k := r.u8()
		t[i].Kind = k
		switch k {
		case KindText, KindBinary:
			t[i].Data = r.bytes(int(r.u32()))
		case KindNull, KindUnchanged:
		default:
			r.err = fmt.Errorf("unknown tuple value kind %q", k)
		}
	}
	return t
}
