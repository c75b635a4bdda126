package wal

import (
	"encoding/binary"
	"fmt"
	"strings"
	"testing"
	"time"
)

func logicalMsg(transactional bool, pos LSN, prefix, content string) []byte {
	b := []byte{MsgMessage, 0}
	if transactional {
		b[1] = 1
	}
	b = binary.BigEndian.AppendUint64(b, uint64(pos))
	b = append(append(b, prefix...), 0)
	b = binary.BigEndian.AppendUint32(b, uint32(len(content)))
	return append(b, content...)
}

// positioned is a pgoutput message with the WALStart it arrived with.
type positioned struct {
	msg []byte
	at  LSN
}

// order renders a decoded transaction's changes as "M:content" or
// "I:table:first value".
func order(txn Txn) string {
	var out []string
	for _, c := range txn.Changes {
		switch c.Op {
		case OpMessage:
			out = append(out, "M:"+string(c.Content))
		case OpInsert:
			out = append(out, fmt.Sprintf("I:%s:%s", c.Rel.Name, c.New[0].Data))
		default:
			out = append(out, c.Op.String())
		}
	}
	return strings.Join(out, " ")
}

// TestBuilderMovesTiedMessage: PostgreSQL 15 positions a transactional
// logical message where the next WAL record starts, so a change of another
// subtransaction from that record ties with it and may arrive first. The
// builder puts the message back in front of such changes (with the
// Relation message sent for them), and leaves everything else alone.
func TestBuilderMovesTiedMessage(t *testing.T) {
	ts := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	const x = 0x1BFC680
	cases := []struct {
		name string
		msgs []positioned
		cut  int // cut the segment after this many messages (0: never)
		want string
	}{
		{
			name: "change of the next record sent first, with its Relation",
			msgs: []positioned{{relMsg(1, "public", "old", "id"), 0}, {insertMsg(1, s("0")), x - 0x100},
				{relMsg(2, "public", "sp_t", "id"), 0}, {insertMsg(2, s("1")), x}, {logicalMsg(true, x, "wayback.ddl", "create"), x},
				{insertMsg(2, s("2")), x + 0x80}},
			want: "I:old:0 M:create I:sp_t:1 I:sp_t:2",
		},
		{
			name: "several changes of one record (multi-insert)",
			msgs: []positioned{{relMsg(2, "public", "sp_t", "id"), 0}, {insertMsg(2, s("1")), x}, {insertMsg(2, s("2")), x},
				{logicalMsg(true, x, "wayback.ddl", "create"), x}},
			want: "M:create I:sp_t:1 I:sp_t:2",
		},
		{
			name: "only the changes at the message's position move",
			msgs: []positioned{{relMsg(2, "public", "sp_t", "id"), 0}, {insertMsg(2, s("1")), x - 0x40}, {insertMsg(2, s("2")), x},
				{logicalMsg(true, x, "wayback.ddl", "create"), x}},
			want: "I:sp_t:1 M:create I:sp_t:2",
		},
		{
			name: "no tie: order kept",
			msgs: []positioned{{relMsg(2, "public", "sp_t", "id"), 0}, {insertMsg(2, s("1")), x + 0x18},
				{logicalMsg(true, x, "wayback.ddl", "create"), x}},
			want: "I:sp_t:1 M:create",
		},
		{
			name: "positions unknown: order kept",
			msgs: []positioned{{relMsg(2, "public", "sp_t", "id"), 0}, {insertMsg(2, s("1")), 0},
				{logicalMsg(true, x, "wayback.ddl", "create"), 0}},
			want: "I:sp_t:1 M:create",
		},
		{
			name: "segment cut between the change and the message",
			msgs: []positioned{{relMsg(2, "public", "sp_t", "id"), 0}, {insertMsg(2, s("1")), x},
				{logicalMsg(true, x, "wayback.ddl", "create"), x}},
			cut:  2,
			want: "M:create I:sp_t:1",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := NewBuilder(0)
			// A committed transaction first, so that the open one starts
			// at a non-zero offset.
			add(t, b, relMsg(9, "public", "z", "id"), beginMsg(0x100, ts, 1), insertMsg(9, s("z")), commitMsg(0x100, 0x180, ts))
			add(t, b, beginMsg(x+0x1000, ts, 827))
			var segs [][]byte
			for i, m := range tc.msgs {
				if _, err := b.AddAt(m.msg, m.at); err != nil {
					t.Fatal(err)
				}
				if i+1 == tc.cut {
					data, _, err := b.Cut(false)
					if err != nil {
						t.Fatal(err)
					}
					segs = append(segs, data)
				}
			}
			add(t, b, commitMsg(x+0x1000, x+0x1080, ts))
			data, _, err := b.Cut(true)
			if err != nil {
				t.Fatal(err)
			}
			txns := decodeAll(t, append(segs, data)...)
			if len(txns) != 2 {
				t.Fatalf("decoded %d transactions, want 2", len(txns))
			}
			if got := order(txns[1]); got != tc.want {
				t.Fatalf("archived order %q, want %q", got, tc.want)
			}
		})
	}
}
