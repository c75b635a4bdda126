package wal

import (
	"encoding/binary"
	"errors"
	"testing"
	"time"
)

// Hand-built pgoutput v1 messages, as the server sends them.

func relMsg(id uint32, ns, name string, cols ...string) []byte {
	b := []byte{MsgRelation}
	b = binary.BigEndian.AppendUint32(b, id)
	b = append(append(b, ns...), 0)
	b = append(append(b, name...), 0)
	b = append(b, 'd')
	b = binary.BigEndian.AppendUint16(b, uint16(len(cols)))
	for i, c := range cols {
		flags := byte(0)
		if i == 0 {
			flags = 1
		}
		b = append(b, flags)
		b = append(append(b, c...), 0)
		b = binary.BigEndian.AppendUint32(b, 25) // text
		b = binary.BigEndian.AppendUint32(b, 0xFFFFFFFF)
	}
	return b
}

func tuple(vals ...*string) []byte {
	b := binary.BigEndian.AppendUint16(nil, uint16(len(vals)))
	for _, v := range vals {
		if v == nil {
			b = append(b, KindNull)
			continue
		}
		b = append(b, KindText)
		b = binary.BigEndian.AppendUint32(b, uint32(len(*v)))
		b = append(b, *v...)
	}
	return b
}

func s(v string) *string { return &v }

func pgMicros(t time.Time) uint64 { return uint64(t.Sub(pgEpoch) / time.Microsecond) }

func beginMsg(final LSN, ts time.Time, xid uint32) []byte {
	b := []byte{MsgBegin}
	b = binary.BigEndian.AppendUint64(b, uint64(final))
	b = binary.BigEndian.AppendUint64(b, pgMicros(ts))
	return binary.BigEndian.AppendUint32(b, xid)
}

func commitMsg(commit, end LSN, ts time.Time) []byte {
	b := []byte{MsgCommit, 0}
	b = binary.BigEndian.AppendUint64(b, uint64(commit))
	b = binary.BigEndian.AppendUint64(b, uint64(end))
	return binary.BigEndian.AppendUint64(b, pgMicros(ts))
}

func insertMsg(rel uint32, vals ...*string) []byte {
	b := binary.BigEndian.AppendUint32([]byte{MsgInsert}, rel)
	return append(append(b, 'N'), tuple(vals...)...)
}

func add(t *testing.T, b *Builder, msgs ...[]byte) {
	t.Helper()
	for _, m := range msgs {
		if _, err := b.Add(m); err != nil {
			t.Fatal(err)
		}
	}
}

func decodeAll(t *testing.T, segs ...[]byte) []Txn {
	t.Helper()
	d := NewDecoder()
	var out []Txn
	for _, data := range segs {
		_, body, err := DecodeSegment(data)
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Decode(body, func(x *Txn) error { out = append(out, *x); return nil }); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func TestSegmentRoundTrip(t *testing.T) {
	ts := time.Date(2026, 11, 23, 10, 0, 0, 123456000, time.UTC)
	b := NewBuilder(100)
	add(t, b, relMsg(7, "public", "t", "id", "v"),
		beginMsg(200, ts, 42), insertMsg(7, s("1"), s("héllo")), insertMsg(7, s("2"), nil), commitMsg(200, 250, ts))
	data, info, err := b.Cut(true)
	if err != nil {
		t.Fatal(err)
	}
	if info.From != 100 || info.To != 250 || info.Txns != 1 || !info.LastCommit.Equal(ts) {
		t.Fatalf("info = %+v", info)
	}
	// A second segment reuses relation 7 without a new Relation message
	// from the server: the builder must repeat it so the segment decodes
	// alone.
	add(t, b, beginMsg(300, ts, 43), insertMsg(7, s("3"), s("x")), commitMsg(300, 320, ts))
	data2, info2, err := b.Cut(false)
	if err != nil {
		t.Fatal(err)
	}
	if info2.From != 250 || info2.To != 320 {
		t.Fatalf("second segment covers %s-%s, want 0/FA-0/140", info2.From, info2.To)
	}
	txns := decodeAll(t, data2) // alone, with a fresh decoder
	if len(txns) != 1 || txns[0].Changes[0].Rel.Name != "t" || string(txns[0].Changes[0].New[0].Data) != "3" {
		t.Fatalf("second segment decoded alone: %+v", txns)
	}
	txns = decodeAll(t, data, data2)
	if len(txns) != 2 || txns[0].XID != 42 || txns[0].CommitLSN != 200 || txns[0].EndLSN != 250 {
		t.Fatalf("txns = %+v", txns)
	}
	c := txns[0].Changes[1]
	if c.Op != OpInsert || string(c.New[0].Data) != "2" || c.New[1].Kind != KindNull {
		t.Fatalf("second insert decoded as %+v", c)
	}
	if got := string(txns[0].Changes[0].New[1].Data); got != "héllo" {
		t.Fatalf("value = %q", got)
	}
}

func TestSegmentDetectsEveryFlippedByte(t *testing.T) {
	ts := time.Now()
	b := NewBuilder(0)
	add(t, b, relMsg(1, "s", "t", "a"), beginMsg(10, ts, 1), insertMsg(1, s("v")), commitMsg(10, 20, ts))
	data, _, err := b.Cut(true)
	if err != nil {
		t.Fatal(err)
	}
	for i := range data {
		bad := append([]byte(nil), data...)
		bad[i] ^= 0x01
		if _, _, err := DecodeSegment(bad); err == nil {
			t.Fatalf("flipping byte %d of %d went unnoticed", i, len(data))
		}
	}
	if _, _, err := DecodeSegment(data[:len(data)-1]); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("truncated segment: %v", err)
	}
}

func TestCutCarriesOpenTransaction(t *testing.T) {
	ts := time.Now()
	b := NewBuilder(0)
	add(t, b, relMsg(1, "s", "t", "a"), beginMsg(10, ts, 1), insertMsg(1, s("committed")), commitMsg(10, 20, ts),
		beginMsg(50, ts, 2), insertMsg(1, s("open")))
	first, info, err := b.Cut(true)
	if err != nil {
		t.Fatal(err)
	}
	if info.To != 20 || info.Txns != 1 {
		t.Fatalf("first segment %+v", info)
	}
	add(t, b, insertMsg(1, s("open-2")), commitMsg(50, 60, ts))
	second, info2, err := b.Cut(true)
	if err != nil {
		t.Fatal(err)
	}
	if info2.From != 20 || info2.To != 60 || info2.Txns != 1 {
		t.Fatalf("second segment %+v", info2)
	}
	txns := decodeAll(t, second)
	if len(txns) != 1 || len(txns[0].Changes) != 2 || string(txns[0].Changes[1].New[0].Data) != "open-2" {
		t.Fatalf("carried transaction decoded as %+v", txns)
	}
	if len(decodeAll(t, first)) != 1 {
		t.Fatal("first segment lost its transaction")
	}
}

func TestSegmentKey(t *testing.T) {
	k := SegmentKey(0x16B3748, 0x1_0000_0000)
	if k != "segments/00000000016B3748-0000000100000000.seg" {
		t.Fatalf("key %s", k)
	}
	from, to, err := ParseSegmentKey(k)
	if err != nil || from != 0x16B3748 || to != 0x1_0000_0000 {
		t.Fatalf("parse %s: %s %s %v", k, from, to, err)
	}
	for _, bad := range []string{"segments/x.seg", "segments/00000000016B3748.seg", "backups/a/manifest.json"} {
		if _, _, err := ParseSegmentKey(bad); err == nil {
			t.Fatalf("%s parsed", bad)
		}
	}
}

func TestBuilderRejectsChangeWithoutRelation(t *testing.T) {
	b := NewBuilder(0)
	add(t, b, beginMsg(10, time.Now(), 1))
	if _, err := b.Add(insertMsg(99, s("x"))); err == nil {
		t.Fatal("insert for an unknown relation was accepted")
	}
}
