package basebackup_test

import (
	"context"
	"fmt"
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
			loadAndCompare(t, m, stores, dst, 3, want)
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
	loadAndCompare(t, m, stores, c.DSN("dst"), 1, want) // one good copy of each object

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
	bin, text := readRows(t, src, "kinds", "auto", "binary"), readRows(t, src, "kinds", "text", "text")
	if len(bin) != 302 || len(text) != 302 {
		t.Fatalf("read %d binary and %d text rows, want 302 each", len(bin), len(text))
	}
	for r := range text {
		if !bin[r] {
			t.Fatalf("text row %q has no equal among the binary rows", r)
		}
	}
}

// readRows takes a backup of src with copy_format format, checks that
// table is stored in wantFormat, and returns its rows as ReadRows gives
// them, each joined into one string.
func readRows(t *testing.T, src, table, format, wantFormat string) map[string]bool {
	t.Helper()
	ctx := t.Context()
	stores := []store.Store{store.NewFile(filepath.Join(t.TempDir(), "a"))}
	fan := store.NewFanout(stores, 1, nil)
	m, err := basebackup.Take(ctx, fan, basebackup.Options{DSN: src, CopyFormat: format})
	fan.Wait()
	if err != nil {
		t.Fatal(err)
	}
	tab, ok := findTable(m, table)
	if !ok {
		t.Fatalf("the backup has no table %s", table)
	}
	if got := tab.CopyFormat(); got != wantFormat {
		t.Fatalf("copy_format %s stored %s as %s, want %s", format, table, got, wantFormat)
	}
	rows := map[string]bool{}
	err = basebackup.ReadRows(ctx, stores, tab, nil, func(row wal.Tuple) error {
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

func findTable(m *basebackup.Manifest, name string) (basebackup.Table, bool) {
	for _, tab := range m.Tables {
		if tab.Name == name {
			return tab, true
		}
	}
	return basebackup.Table{}, false
}

// TestDomainsBinary backs up domain columns in binary as their base types
// (through a domain over a domain, over an array, and arrays of domains):
// the manifest lists the base types, the backup loads into a new database
// (whose domains have other OIDs) equal to the source, and undo reads the
// same text from it as from a text backup. Domains over an enum, and
// arrays of them, keep their table in text.
func TestDomainsBinary(t *testing.T) {
	ctx := t.Context()
	c := testenv.NewCluster(t, testenv.Options{})
	for _, db := range []string{"src", "dst"} {
		if err := c.CreateDatabase(ctx, db); err != nil {
			t.Fatal(err)
		}
	}
	src, dst := c.DSN("src"), c.DSN("dst")
	if err := testenv.Exec(ctx, src, `
		CREATE DOMAIN short_text AS text CHECK (length(VALUE) <= 20);
		CREATE DOMAIN price AS numeric(10,2) CHECK (VALUE >= 0);
		CREATE DOMAIN posint AS int4 CHECK (VALUE > 0);
		CREATE DOMAIN small_posint AS posint CHECK (VALUE < 1000000);
		CREATE DOMAIN vec AS int8[] CHECK (cardinality(VALUE) <= 3);
		CREATE DOMAIN code AS char(3);
		CREATE DOMAIN tag_list AS short_text[] CHECK (cardinality(VALUE) > 0);
		CREATE TABLE dom (id small_posint PRIMARY KEY, name short_text NOT NULL, p price, v vec, c code,
			at timestamptz, tags short_text[], tl tag_list, ps price[], ids small_posint[]);
		INSERT INTO dom SELECT i, E'n\t' || i, i * 1.005, ARRAY[i, NULL, -i]::int8[], chr(65 + i % 26),
			'2026-01-01 00:00:00+00'::timestamptz + i * interval '1 hour',
			ARRAY['t' || i, NULL, 'a b', '"q"', ''], ARRAY[ARRAY['x', 'y,' || i], ARRAY[NULL, '{']],
			ARRAY[i * 0.5, NULL], ARRAY[i, i + 1]
		FROM generate_series(1, 500) i;
		INSERT INTO dom (id, name, tags, ps) VALUES (999999, '', '{}', '[0:1]={1.25,2}');
		CREATE TYPE mood AS ENUM ('sad', 'ok');
		CREATE DOMAIN mood_d AS mood;
		CREATE TABLE dom_enum (id int PRIMARY KEY, m mood_d);
		INSERT INTO dom_enum SELECT i, (ARRAY['sad','ok'])[1 + i % 2]::mood_d FROM generate_series(1, 50) i;
		CREATE TABLE dom_enum_array (id int PRIMARY KEY, ms mood_d[]);
		INSERT INTO dom_enum_array SELECT i, ARRAY['sad', 'ok']::mood_d[] FROM generate_series(1, 50) i;`); err != nil {
		t.Fatal(err)
	}
	// A binary array of a domain names the source database's domain OID;
	// the restored database's domain has another (checked after the load).
	rows, err := testenv.QueryRows(ctx, src, `SELECT (SELECT ((get_byte(b, 8)::int8 << 24) | (get_byte(b, 9) << 16) | (get_byte(b, 10) << 8) | get_byte(b, 11))
			FROM (SELECT array_send(tags) AS b FROM dom WHERE id = 1) s), 'short_text'::regtype::oid`)
	if err != nil {
		t.Fatal(err)
	}
	if rows[0][0] != rows[0][1] {
		t.Fatalf("a short_text[] value's binary form names element type %s, not short_text's OID %s", rows[0][0], rows[0][1])
	}

	want, err := testenv.Checksums(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	stores := []store.Store{store.NewFile(filepath.Join(t.TempDir(), "a"))}
	fan := store.NewFanout(stores, 1, nil)
	m, err := basebackup.Take(ctx, fan, basebackup.Options{DSN: src, Parallel: 2})
	fan.Wait()
	if err != nil {
		t.Fatal(err)
	}
	for name, format := range map[string]string{"dom": "binary", "dom_enum": "text", "dom_enum_array": "text"} {
		tab, ok := findTable(m, name)
		if !ok {
			t.Fatalf("the backup has no table %s", name)
		}
		if tab.CopyFormat() != format {
			t.Errorf("table %s is stored as %s, want %s", name, tab.CopyFormat(), format)
		}
	}
	dom, _ := findTable(m, "dom")
	// int4 (through two domains), text, numeric, int8[], bpchar,
	// timestamptz, text[] (twice), numeric[], int4[]
	if got, want := fmt.Sprint(dom.ColumnTypes), "[23 25 1700 1016 1042 1184 1009 1009 1231 1007]"; got != want {
		t.Errorf("dom's column types are %s, want the base types %s", got, want)
	}
	loadAndCompare(t, m, stores, dst, 2, want)
	oids, err := testenv.QueryRows(ctx, dst, `SELECT 'short_text'::regtype::oid`)
	if err != nil {
		t.Fatal(err)
	}
	if oids[0][0] == rows[0][1] {
		t.Fatalf("short_text has OID %s in both databases: the load did not show that the array's element OID is ignored", oids[0][0])
	}
	// The loaded arrays are of the restored domain.
	if rows, err = testenv.QueryRows(ctx, dst, `SELECT count(*) FROM dom WHERE array_send(tags) <> array_send(tags::text[]::short_text[])`); err != nil || rows[0][0] != "0" {
		t.Fatalf("loaded short_text[] values whose binary form differs from a fresh cast: %v %v", rows, err)
	}

	bin, text := readRows(t, src, "dom", "auto", "binary"), readRows(t, src, "dom", "text", "text")
	if len(bin) != 501 || len(text) != 501 {
		t.Fatalf("read %d binary and %d text rows, want 501 each", len(bin), len(text))
	}
	for r := range text {
		if !bin[r] {
			t.Fatalf("text row %q has no equal among the binary rows", r)
		}
	}
}

// TestReadRowsUnsupportedType: a manifest naming a binary column type this
// version cannot print (as one from a newer wayback would) fails at once
// with that reason, instead of blaming every store's copy.
func TestReadRowsUnsupportedType(t *testing.T) {
	ctx := t.Context()
	c := testenv.NewCluster(t, testenv.Options{})
	src := c.DSN("postgres")
	if err := testenv.Exec(ctx, src, `CREATE TABLE k (id int PRIMARY KEY, v text); INSERT INTO k VALUES (1, 'a'), (2, 'b')`); err != nil {
		t.Fatal(err)
	}
	stores := []store.Store{store.NewFile(filepath.Join(t.TempDir(), "a")), store.NewFile(filepath.Join(t.TempDir(), "b"))}
	fan := store.NewFanout(stores, 2, nil)
	m, err := basebackup.Take(ctx, fan, basebackup.Options{DSN: src})
	fan.Wait()
	if err != nil {
		t.Fatal(err)
	}
	tab := m.Tables[0]
	if tab.CopyFormat() != basebackup.FormatBinary {
		t.Fatalf("k stored as %s, want binary", tab.CopyFormat())
	}
	read := func(tab basebackup.Table) (int, error) {
		n := 0
		err := basebackup.ReadRows(ctx, stores, tab, nil, func(wal.Tuple) error { n++; return nil })
		return n, err
	}
	if n, err := read(tab); err != nil || n != 2 {
		t.Fatalf("read %d rows, %v; want 2", n, err)
	}
	tab.ColumnTypes = append([]uint32(nil), tab.ColumnTypes...)
	tab.ColumnTypes[1] = 16385 // a type OID outside the built-in range
	_, err = read(tab)
	if err == nil || !strings.Contains(err.Error(), "column v is stored in binary as type OID 16385") || strings.Contains(err.Error(), "no store has a valid copy") {
		t.Fatalf("got %v, want the unreadable type named and no store blamed", err)
	}
}

// loadAndCompare loads backup m into the empty database dst with workers
// connections and checks every table's content against want.
func loadAndCompare(t *testing.T, m *basebackup.Manifest, stores []store.Store, dst string, workers int, want map[string]testenv.TableSum) {
	t.Helper()
	if err := basebackup.Load(t.Context(), m, stores, dst, basebackup.LoadOptions{Parallel: workers}); err != nil {
		t.Fatal(err)
	}
	got, err := testenv.Checksums(t.Context(), dst)
	if err != nil {
		t.Fatal(err)
	}
	if d := testenv.DiffChecksums(want, got); d != "" {
		t.Fatalf("restored database differs from the source:\n%s", d)
	}
}
