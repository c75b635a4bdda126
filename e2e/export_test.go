package e2e

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/wayback-pitr/wayback/testenv"
)

// takeoutManifest is the part of a takeout's manifest.json users rely on.
type takeoutManifest struct {
	Format  string `json:"format"`
	Version int    `json:"version"`
	Source  struct {
		Database string `json:"database"`
		Backup   string `json:"base_backup"`
	} `json:"source"`
	Target struct {
		LSN  string     `json:"lsn"`
		Time *time.Time `json:"time"`
	} `json:"target"`
	Schema struct {
		File   string `json:"file"`
		SHA256 string `json:"sha256"`
	} `json:"schema"`
	Tables []struct {
		Schema string `json:"schema"`
		Name   string `json:"name"`
		File   string `json:"file"`
		Rows   int64  `json:"rows"`
		Bytes  int64  `json:"bytes"`
		SHA256 string `json:"sha256"`
	} `json:"tables"`
}

// TestExport is acceptance 5: export an instant between two batches of
// writes, load schema.sql and the CSVs into an empty database, and compare
// every table with the source's content at that instant. A target before
// the oldest backup fails with one line and leaves no file behind. The
// archive is encrypted: export reads it through the key.
func TestExport(t *testing.T) {
	e := newEnv(t)
	keyFile, _ := writeKeyFile(t, t.TempDir(), "wayback.key")
	f, err := os.OpenFile(e.config, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("encryption:\n  key_file: " + strconv.Quote(keyFile) + "\n")
	f.Close()
	e.exec(`CREATE TABLE items (id bigserial PRIMARY KEY, name text, price numeric(12,2), tags text[], doc jsonb,
		blob bytea, at timestamptz, total numeric GENERATED ALWAYS AS (price * 2) STORED)`)
	e.exec(`CREATE SCHEMA "odd.schema"`)
	e.exec(`CREATE TABLE "odd.schema"."we,ird ""t""" (k int, v text)`) // keyless, odd names
	e.exec(`CREATE TABLE events (id int, day date, what text) PARTITION BY RANGE (day)`)
	e.exec(`CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')`)
	e.exec(`CREATE TABLE events_other PARTITION OF events DEFAULT`)
	e.exec(`ALTER TABLE "odd.schema"."we,ird ""t""" REPLICA IDENTITY FULL`)
	e.exec(`INSERT INTO items (name, price, tags, doc, blob, at)
		SELECT CASE g % 4 WHEN 0 THEN NULL WHEN 1 THEN '' WHEN 2 THEN e'comma, "quote"\nnewline' ELSE 'plain ' || g END,
		       g * 1.25, ARRAY['a', NULL, 'c,d'], jsonb_build_object('g', g, 's', 'x"y'), decode(md5(g::text), 'hex'),
		       timestamptz '2026-03-01 12:00:00+01' + g * interval '1 minute'
		FROM generate_series(1, 400) g`)
	e.exec(`INSERT INTO "odd.schema"."we,ird ""t""" SELECT g % 10, NULL FROM generate_series(1, 30) g`)
	e.exec(`INSERT INTO events SELECT g, date '2025-12-20' + g, 'e' || g FROM generate_series(1, 40) g`)
	e.mustRun("setup", "--replica-identity-full")
	a := e.startAgent()
	e.waitBackup(1)
	e.exec(`UPDATE items SET price = price + 1, name = coalesce(name, '') || '!' WHERE id % 5 = 0`)
	e.exec(`DELETE FROM events WHERE id % 3 = 0`)
	e.exec(`INSERT INTO "odd.schema"."we,ird ""t""" VALUES (1, '')`)
	e.exec(`CREATE TABLE late (id int PRIMARY KEY, note text)`)
	e.exec(`INSERT INTO late SELECT g, 'n' || g FROM generate_series(1, 50) g`)
	cp := e.checkpoint("middle")
	e.exec(`DELETE FROM items WHERE id < 100`)
	e.exec(`INSERT INTO late VALUES (1000, 'after')`)
	e.waitArchived()
	a.stop(t)

	dir := t.TempDir()
	out := filepath.Join(dir, "takeout.zip")
	r := e.run("export", "--to-time", cp.at.Format(time.RFC3339Nano), "--out", out)
	if r.code != 0 {
		t.Fatalf("export:\n%s", r)
	}
	t.Logf("export:\n%s", r.stdout)

	zr, err := zip.OpenReader(out)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	files := map[string][]byte{}
	for _, f := range zr.File {
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatalf("read %s from the zip: %v", f.Name, err)
		}
		files[f.Name] = b
	}
	var m takeoutManifest
	if err := json.Unmarshal(files["manifest.json"], &m); err != nil {
		t.Fatalf("manifest.json: %v\n%s", err, files["manifest.json"])
	}
	if m.Format != "wayback-takeout" || m.Version != 1 || m.Source.Database != "app" || m.Source.Backup == "" || m.Target.LSN == "" ||
		m.Target.Time == nil || m.Target.Time.After(cp.at) || m.Schema.File != "schema.sql" {
		t.Fatalf("manifest: %s", files["manifest.json"])
	}
	sha := func(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }
	if sha(files["schema.sql"]) != m.Schema.SHA256 {
		t.Fatal("schema.sql does not match its manifest sum")
	}
	if len(m.Tables) != len(cp.sums) {
		t.Fatalf("%d tables exported, the source had %d at the instant: %s", len(m.Tables), len(cp.sums), files["manifest.json"])
	}
	for _, tb := range m.Tables {
		b, ok := files[tb.File]
		if !ok || sha(b) != tb.SHA256 || int64(len(b)) != tb.Bytes {
			t.Fatalf("table %s.%s: file %s missing or not matching its sum", tb.Schema, tb.Name, tb.File)
		}
		if want := cp.sums[tb.Schema+"."+tb.Name]; want.Rows != tb.Rows {
			t.Fatalf("table %s.%s: manifest says %d rows, the source had %d", tb.Schema, tb.Name, tb.Rows, want.Rows)
		}
	}

	// Load the takeout into an empty database with plain tools.
	ctx := t.Context()
	if err := e.pg.CreateDatabase(ctx, "loaded"); err != nil {
		t.Fatal(err)
	}
	schema := filepath.Join(dir, "schema.sql")
	if err := os.WriteFile(schema, files["schema.sql"], 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := e.pg.Command(ctx, "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", "loaded", "-f", schema).CombinedOutput(); err != nil {
		t.Fatalf("psql -f schema.sql: %v\n%s", err, b)
	}
	conn, err := pgx.Connect(ctx, e.pg.DSN("loaded"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for _, tb := range m.Tables {
		q := "COPY " + pgx.Identifier{tb.Schema, tb.Name}.Sanitize() + " FROM STDIN WITH (FORMAT csv, HEADER MATCH)"
		if _, err := conn.PgConn().CopyFrom(ctx, bytes.NewReader(files[tb.File]), q); err != nil {
			t.Fatalf("load %s: %v", tb.File, err)
		}
	}
	got, err := testenv.Checksums(ctx, e.pg.DSN("loaded"))
	if err != nil {
		t.Fatal(err)
	}
	if d := testenv.DiffChecksums(cp.sums, got); d != "" {
		t.Fatalf("takeout loaded into an empty database differs from the source at %s:\n%s", cp.at.Format(time.RFC3339Nano), d)
	}

	// A target before the oldest backup: one line, nothing written.
	out2 := filepath.Join(dir, "early.zip")
	r = e.run("export", "--to-time", "2001-01-01T00:00:00Z", "--out", out2)
	lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
	if r.code == 0 || !strings.HasPrefix(lines[len(lines)-1], "wayback: export: target time 2001-01-01T00:00:00Z is before the oldest base backup") {
		t.Fatalf("export before the oldest backup:\n%s", r)
	}
	left, _ := filepath.Glob(filepath.Join(dir, "*"))
	for _, p := range left {
		if strings.Contains(filepath.Base(p), "early") {
			t.Fatalf("a failed export left %s behind", p)
		}
	}
	r = e.run("export", "--latest")
	if r.code == 0 || !strings.Contains(r.stderr, "wayback: --out is required") {
		t.Fatalf("export without --out:\n%s", r)
	}
}
