package basebackup_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/wayback-pitr/wayback/basebackup"
	"github.com/wayback-pitr/wayback/store"
	"github.com/wayback-pitr/wayback/testenv"
	"github.com/wayback-pitr/wayback/wal"
)

// TestTakeAndLoadChunked backs up a table in many chunks (and one in a
// single object) and loads the backup in parallel: the restored database
// must equal the source table by table, with its indexes and foreign key,
// and the chunked table's row digest must match the loaded rows.
func TestTakeAndLoadChunked(t *testing.T) {
	ctx := t.Context()
	c := testenv.NewCluster(t, testenv.Options{})
	for _, db := range []string{"src", "dst", "dst_whole"} {
		if err := c.CreateDatabase(ctx, db); err != nil {
			t.Fatal(err)
		}
	}
	src := c.DSN("src")
	if err := testenv.Exec(ctx, src, `
		CREATE TABLE big (id int PRIMARY KEY, dropme int, v text, g int GENERATED ALWAYS AS (id * 2) STORED);
		INSERT INTO big (id, v) SELECT i, 'row ' || i || E'\t\\ \n' || repeat('x', i % 50) FROM generate_series(1, 20000) i;
		ALTER TABLE big DROP COLUMN dropme;
		CREATE INDEX big_v ON big (v);
		CREATE TABLE "Ref; odd" (id int PRIMARY KEY, big_id int REFERENCES big, note text UNIQUE);
		INSERT INTO "Ref; odd" SELECT i, i * 3, 'n' || i FROM generate_series(1, 500) i;`); err != nil {
		t.Fatal(err)
	}
	want, err := testenv.Checksums(ctx, src)
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name, db string
		chunk    int64
	}{{"chunked", "dst", 64 << 10}, {"whole", "dst_whole", -1}} {
		t.Run(tc.name, func(t *testing.T) {
			stores := []store.Store{store.NewFile(filepath.Join(t.TempDir(), "a")), store.NewFile(filepath.Join(t.TempDir(), "b"))}
			fan := store.NewFanout(stores, 2, nil)
			m, err := basebackup.Take(ctx, fan, basebackup.Options{DSN: src, Parallel: 3, ChunkBytes: tc.chunk})
			fan.Wait()
			if err != nil {
				t.Fatal(err)
			}
			var big basebackup.Table
			for _, tab := range m.Tables {
				if tab.Name == "big" {
					big = tab
				}
			}
			if big.Rows != 20000 {
				t.Fatalf("big: %d rows in the manifest, want 20000", big.Rows)
			}
			if tc.chunk > 0 && len(big.Files) < 5 || tc.chunk < 0 && len(big.Files) != 1 {
				t.Fatalf("big is stored in %d objects with chunk size %d", len(big.Files), tc.chunk)
			}
			dst := c.DSN(tc.db)
			if err := basebackup.Load(ctx, m, stores, dst, basebackup.LoadOptions{Parallel: 3}); err != nil {
				t.Fatal(err)
			}
			got, err := testenv.Checksums(ctx, dst)
			if err != nil {
				t.Fatal(err)
			}
			if d := testenv.DiffChecksums(want, got); d != "" {
				t.Fatalf("restored database differs from the source:\n%s", d)
			}
			conn, err := wal.ConnectText(ctx, dst)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(context.Background())
			rows, sum, err := basebackup.SumTable(ctx, conn, big)
			if err != nil {
				t.Fatal(err)
			}
			if rows != big.Rows || sum != big.RowSum {
				t.Fatalf("loaded big has %d rows, digest %s; the manifest says %d, %s", rows, sum, big.Rows, big.RowSum)
			}
			var indexes, fks int
			if err := conn.QueryRow(ctx, `SELECT (SELECT count(*) FROM pg_indexes WHERE schemaname = 'public'),
				(SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND convalidated)`).Scan(&indexes, &fks); err != nil {
				t.Fatal(err)
			}
			// big_pkey, big_v, the pkey and the unique note of "Ref; odd"
			if indexes != 4 || fks != 1 {
				t.Fatalf("restored database has %d indexes and %d foreign keys, want 4 and 1", indexes, fks)
			}
		})
	}
}
