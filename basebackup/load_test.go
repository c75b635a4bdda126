package basebackup_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
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
	for _, db := range []string{"src", "dst", "dst_whole", "dst_text", "dst_pieces", "dst_pieces_text"} {
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
		INSERT INTO "Ref; odd" SELECT i, i * 3, 'n' || i FROM generate_series(1, 500) i;
		CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
		CREATE TABLE feelings (id int PRIMARY KEY, m mood, at timestamptz);
		INSERT INTO feelings SELECT i, (ARRAY['sad','ok','happy'])[1 + i % 3]::mood, '2026-01-01'::timestamptz + i * interval '1 hour' FROM generate_series(1, 300) i;`); err != nil {
		t.Fatal(err)
	}
	want, err := testenv.Checksums(ctx, src)
	if err != nil {
		t.Fatal(err)
	}

	// Pieces: a COPY cut into several files at row boundaries (here every
	// 32 KiB of raw rows), each a whole COPY stream; with three workers and
	// big dwarfing the rest, each file is loaded on its own.
	for _, tc := range []struct {
		name, db     string
		chunk, piece int64
		format       string // copy_format; "" is auto
	}{{"chunked", "dst", 64 << 10, -1, ""}, {"whole", "dst_whole", -1, -1, ""}, {"text", "dst_text", 64 << 10, -1, "text"},
		{"pieces", "dst_pieces", -1, 4 << 10, ""}, {"pieces_text", "dst_pieces_text", -1, 4 << 10, "text"}} {
		t.Run(tc.name, func(t *testing.T) {
			stores := []store.Store{store.NewFile(filepath.Join(t.TempDir(), "a")), store.NewFile(filepath.Join(t.TempDir(), "b"))}
			fan := store.NewFanout(stores, 2, nil)
			m, err := basebackup.Take(ctx, fan, basebackup.Options{DSN: src, Parallel: 3, ChunkBytes: tc.chunk, PieceBytes: tc.piece, CopyFormat: tc.format})
			fan.Wait()
			if err != nil {
				t.Fatal(err)
			}
			if m.Version != basebackup.ManifestVersion {
				t.Fatalf("manifest version %d, want %d", m.Version, basebackup.ManifestVersion)
			}
			var big basebackup.Table
			// Built-in types only: binary unless text is asked for; an enum
			// column keeps a table in text.
			wantFormat := map[string]string{"big": "binary", "Ref; odd": "binary", "feelings": "text"}
			for _, tab := range m.Tables {
				if tab.Name == "big" {
					big = tab
				}
				want := wantFormat[tab.Name]
				if tc.format == "text" {
					want = "text"
				}
				if tab.CopyFormat() != want {
					t.Errorf("table %s is stored as %s, want %s", tab.Name, tab.CopyFormat(), want)
				}
				if want == "binary" && len(tab.ColumnTypes) != len(tab.Columns) {
					t.Errorf("binary table %s lists %d column types for %d columns", tab.Name, len(tab.ColumnTypes), len(tab.Columns))
				}
			}
			if big.Rows != 20000 {
				t.Fatalf("big: %d rows in the manifest, want 20000", big.Rows)
			}
			if (tc.chunk > 0 || tc.piece > 0) && len(big.Files) < 5 || tc.chunk < 0 && tc.piece < 0 && len(big.Files) != 1 {
				t.Fatalf("big is stored in %d objects with chunk size %d, piece size %d", len(big.Files), tc.chunk, tc.piece)
			}
			keys := map[string]bool{}
			for _, f := range big.Files {
				if keys[f.Key] {
					t.Fatalf("big lists object %s twice", f.Key)
				}
				keys[f.Key] = true
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
			rows, sum, err := basebackup.SumTable(ctx, conn, m.Version, big)
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
			// big_pkey, big_v, the pkey and the unique note of "Ref; odd",
			// feelings_pkey
			if indexes != 5 || fks != 1 {
				t.Fatalf("restored database has %d indexes and %d foreign keys, want 5 and 1", indexes, fks)
			}
		})
	}
}

// TestLoadFallsBackPerObject loads a table stored in several objects in
// one transaction (one worker: the whole table with COPY FREEZE). A
// corrupt chunk in the first store is read from the second; corrupt in
// both, the load fails naming the object and leaves no rows behind.
func TestLoadFallsBackPerObject(t *testing.T) {
	ctx := t.Context()
	c := testenv.NewCluster(t, testenv.Options{})
	for _, db := range []string{"src", "dst", "dst_bad"} {
		if err := c.CreateDatabase(ctx, db); err != nil {
			t.Fatal(err)
		}
	}
	src := c.DSN("src")
	if err := testenv.Exec(ctx, src, `CREATE TABLE big (id int PRIMARY KEY, v text);
		INSERT INTO big SELECT i, md5(i::text) FROM generate_series(1, 20000) i;`); err != nil {
		t.Fatal(err)
	}
	want, err := testenv.Checksums(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	dirs := []string{filepath.Join(t.TempDir(), "a"), filepath.Join(t.TempDir(), "b")}
	stores := []store.Store{store.NewFile(dirs[0]), store.NewFile(dirs[1])}
	fan := store.NewFanout(stores, 2, nil)
	m, err := basebackup.Take(ctx, fan, basebackup.Options{DSN: src, Parallel: 2, ChunkBytes: 64 << 10})
	fan.Wait()
	if err != nil {
		t.Fatal(err)
	}
	big := m.Tables[0]
	if len(big.Files) < 3 {
		t.Fatalf("big is stored in %d objects, want several", len(big.Files))
	}
	bad := big.Files[len(big.Files)/2].Key
	corrupt := func(dir string) {
		t.Helper()
		p := filepath.Join(dir, filepath.FromSlash(bad))
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)/2] ^= 0xff
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// Binary files into an older major version: refused before anything
	// is written.
	newer := *m
	newer.ServerVersion = "99.1"
	err = basebackup.Load(ctx, &newer, stores, c.DSN("dst_bad"), basebackup.LoadOptions{Parallel: 1})
	if err == nil || !strings.Contains(err.Error(), "PostgreSQL 99 or later") {
		t.Fatalf("load of a backup from a newer major version: err = %v", err)
	}
	rows, err := testenv.QueryRows(ctx, c.DSN("dst_bad"), "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
	if err != nil {
		t.Fatal(err)
	}
	if rows[0][0] != "0" {
		t.Fatalf("the refused load created %s tables", rows[0][0])
	}

	corrupt(dirs[0])
	if err := basebackup.Load(ctx, m, stores, c.DSN("dst"), basebackup.LoadOptions{Parallel: 1}); err != nil {
		t.Fatalf("load with one good copy of each object: %v", err)
	}
	got, err := testenv.Checksums(ctx, c.DSN("dst"))
	if err != nil {
		t.Fatal(err)
	}
	if d := testenv.DiffChecksums(want, got); d != "" {
		t.Fatalf("restored database differs from the source:\n%s", d)
	}

	corrupt(dirs[1])
	err = basebackup.Load(ctx, m, stores, c.DSN("dst_bad"), basebackup.LoadOptions{Parallel: 1})
	if err == nil || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), "no store has a valid copy") {
		t.Fatalf("load with no good copy of %s: err = %v", bad, err)
	}
	rows, err = testenv.QueryRows(ctx, c.DSN("dst_bad"), "SELECT count(*) FROM big")
	if err != nil {
		t.Fatal(err)
	}
	if rows[0][0] != "0" {
		t.Fatalf("a failed load left %s rows in big", rows[0][0])
	}
}

// TestReadRowsBinaryEqualsText reads the same table from a binary and a
// text backup: undo sees the rows of both as the same text values, the
// ones the change stream carries.
func TestReadRowsBinaryEqualsText(t *testing.T) {
	ctx := t.Context()
	c := testenv.NewCluster(t, testenv.Options{})
	if err := c.CreateDatabase(ctx, "src"); err != nil {
		t.Fatal(err)
	}
	src := c.DSN("src")
	if err := testenv.Exec(ctx, src, `CREATE TABLE kinds (id int PRIMARY KEY, b bool, i8 bigint, n numeric, f float8,
			t text, by bytea, ts timestamptz, d date, j jsonb, u uuid, ia int[], ta text[]);
		INSERT INTO kinds SELECT i, i % 3 = 0, i * -98765432101, (i * 1.25)::numeric / 7, i / 3.0,
			E'tab\there\nline \\ ' || i, decode(md5(i::text), 'hex'), '2026-01-01 00:00:00+00'::timestamptz + i * interval '1 day 1.5 seconds',
			'2000-02-28'::date + i, jsonb_build_object('k', i, 'a', jsonb_build_array(i, 'x')), md5(i::text)::uuid,
			ARRAY[i, NULL, -i], ARRAY['a b', NULL, '"q"', 'c,d']
		FROM generate_series(1, 300) i;
		INSERT INTO kinds (id) VALUES (0);
		INSERT INTO kinds (id, n, f, ts, d) VALUES (-1, 'NaN', '-Infinity', 'infinity', '4713-01-01 BC');`); err != nil {
		t.Fatal(err)
	}
	read := func(format string) map[string]bool {
		t.Helper()
		stores := []store.Store{store.NewFile(filepath.Join(t.TempDir(), "a"))}
		fan := store.NewFanout(stores, 1, nil)
		m, err := basebackup.Take(ctx, fan, basebackup.Options{DSN: src, CopyFormat: format})
		fan.Wait()
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]string{"auto": "binary", "text": "text"}[format]
		if got := m.Tables[0].CopyFormat(); got != want {
			t.Fatalf("copy_format %s stored kinds as %s, want %s", format, got, want)
		}
		rows := map[string]bool{}
		err = basebackup.ReadRows(ctx, stores, m.Tables[0], nil, func(row wal.Tuple) error {
			var b strings.Builder
			for _, v := range row {
				if v.Kind == wal.KindNull {
					b.WriteString("<null>|")
					continue
				}
				b.Write(v.Data)
				b.WriteString("|")
			}
			rows[b.String()] = true
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return rows
	}
	bin, text := read("auto"), read("text")
	if len(bin) != 302 || len(text) != 302 {
		t.Fatalf("read %d binary and %d text rows, want 302 each", len(bin), len(text))
	}
	for r := range text {
		if !bin[r] {
			t.Fatalf("text row %q has no equal among the binary rows", r)
		}
	}
}
