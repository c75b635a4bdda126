package wal

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/wayback-pitr/wayback/testenv"
)

// TestStreamBatchesBacklog drains a backlog of transactions committed
// before anyone read the slot: the stream must switch to batched reads
// while behind, deliver every transaction intact and in order across the
// batching waits, switch back once the server reports it has caught up,
// and then deliver a fresh transaction without batching.
func TestStreamBatchesBacklog(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	ctx := t.Context()
	pg := testenv.NewCluster(t, testenv.Options{})
	dsn := pg.DSN("postgres")
	const backlog = 3000
	for _, q := range []string{
		"CREATE TABLE t (id int PRIMARY KEY, v text)",
		"CREATE PUBLICATION p FOR TABLE t",
		"SELECT pg_create_logical_replication_slot('s', 'pgoutput')",
		`CREATE PROCEDURE fill(a int, b int) LANGUAGE plpgsql AS $$
		BEGIN FOR i IN a..b LOOP INSERT INTO t VALUES (i, repeat(md5(i::text), 4)); COMMIT; END LOOP; END $$`,
		fmt.Sprintf("CALL fill(1, %d)", backlog),
	} {
		if err := testenv.Exec(ctx, dsn, q); err != nil {
			t.Fatal(err)
		}
	}
	// Make every backlog commit older than behindLag when it is sent.
	time.Sleep(2 * behindLag)

	rows, err := testenv.QueryRows(ctx, dsn, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 's'")
	if err != nil {
		t.Fatal(err)
	}
	start, err := ParseLSN(rows[0][0])
	if err != nil {
		t.Fatal(err)
	}
	st, err := StartStream(ctx, dsn, "s", "p", start)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close(context.Background())
	if st.lowat == nil && runtime.GOOS == "linux" {
		t.Fatal("no way to set the socket's low-water mark on Linux")
	}

	b := NewBuilder(start)
	receive := func(until func(Event) bool) {
		t.Helper()
		for {
			ev, err := st.Receive(ctx, time.Now().Add(time.Minute))
			if err != nil {
				t.Fatal(err)
			}
			if ev.Keepalive {
				b.Extend(ev.ServerWALEnd, ev.ServerTime)
			} else if _, err := b.Add(ev.Msg); err != nil {
				t.Fatal(err)
			}
			if until(ev) {
				return
			}
		}
	}
	batched := false
	receive(func(Event) bool {
		batched = batched || st.batching
		return b.Txns() == backlog
	})
	if !batched && st.lowat != nil {
		t.Error("the stream never batched its reads while draining the backlog")
	}
	// Caught up: the server says so with a keepalive, which ends batching.
	receive(func(ev Event) bool { return ev.Keepalive })
	if st.batching {
		t.Error("still batching after the server reported it had caught up")
	}
	// synchronous_commit on: testenv runs with it off, and then the commit
	// reaches the walsender only when the WAL writer flushes it (up to
	// wal_writer_delay, 200ms, later), which would make it arrive "behind".
	if err := testenv.Exec(ctx, dsn, fmt.Sprintf("SET synchronous_commit = on; INSERT INTO t VALUES (%d, repeat(md5('%[1]d'), 4))", backlog+1)); err != nil {
		t.Fatal(err)
	}
	receive(func(Event) bool { return b.Txns() == backlog+1 })
	if st.batching {
		t.Error("batching after a fresh commit")
	}

	data, _, err := b.Cut(true)
	if err != nil {
		t.Fatal(err)
	}
	_, body, err := DecodeSegment(data)
	if err != nil {
		t.Fatal(err)
	}
	next := 1
	err = NewDecoder().Decode(body, func(tx *Txn) error {
		if len(tx.Changes) != 1 || tx.Changes[0].Op != OpInsert {
			return fmt.Errorf("transaction %d: %d changes, want one insert", next, len(tx.Changes))
		}
		id, v := string(tx.Changes[0].New[0].Data), string(tx.Changes[0].New[1].Data)
		if id != fmt.Sprint(next) || len(v) != 128 {
			return fmt.Errorf("transaction %d inserted id %s with a %d-byte value", next, id, len(v))
		}
		next++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if next != backlog+2 {
		t.Fatalf("decoded %d transactions, want %d", next-1, backlog+1)
	}
}
