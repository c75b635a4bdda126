// Package takeout exports the database as it was at an instant into a zip
// file anyone can read without wayback: one CSV file per table (with a
// header row), schema.sql (pg_dump --schema-only of the restored
// database) and manifest.json (what was exported, from where, at which
// instant, with per-table row counts and SHA-256 sums). It is
// `wayback export`.
//
// The instant is restored into a scratch database first (package
// scratch); each table is then streamed from COPY ... TO STDOUT straight
// into the zip writer, so memory use does not grow with table size. The
// zip is written to a temporary file beside the output and renamed into
// place only when complete: a failed export leaves no partial file.
package takeout

import (
	"archive/zip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/wayback-pitr/wayback/basebackup"
	"github.com/wayback-pitr/wayback/pitr"
	"github.com/wayback-pitr/wayback/replay"
	"github.com/wayback-pitr/wayback/scratch"
	"github.com/wayback-pitr/wayback/store"
	"github.com/wayback-pitr/wayback/wal"
)

// Format and Version identify the takeout's manifest.json; the layout is
// documented in docs/drills.md.
const (
	Format  = "wayback-takeout"
	Version = 1
)

// Options configure an export.
type Options struct {
	Stores []store.Store
	Target pitr.Target
	// Out is the zip file to write; it is replaced only on success.
	Out     string
	Scratch scratch.DBOptions
	// BinDir holds pg_dump ("" searches the usual places).
	BinDir   string
	Parallel int
	TempDir  string
	Log      *zap.Logger
	// Progress receives human-readable progress lines (nil: none).
	Progress func(format string, args ...any)
}

// Manifest is manifest.json in the zip.
type Manifest struct {
	Format  string       `json:"format"`
	Version int          `json:"version"`
	Created time.Time    `json:"created"`
	Source  Source       `json:"source"`
	Target  Target       `json:"target"`
	Schema  File         `json:"schema"`
	Tables  []TableEntry `json:"tables"`
	Rows    int64        `json:"rows"`
	Bytes   int64        `json:"bytes"` // uncompressed CSV bytes
}

// Source is where the data came from.
type Source struct {
	Database      string   `json:"database"`
	SystemID      string   `json:"system_identifier"`
	ServerVersion string   `json:"server_version"`
	Stores        []string `json:"stores"` // credentials removed
	Backup        string   `json:"base_backup"`
}

// Target is the instant exported.
type Target struct {
	// Requested is the target as asked for ("time 2026-…", "latest", …).
	Requested string `json:"requested"`
	// LSN and Time are of the last transaction applied: the export holds
	// every transaction up to and including it and none after.
	LSN  string     `json:"lsn"`
	Time *time.Time `json:"time,omitempty"`
	XID  uint32     `json:"xid,omitempty"`
}

// File is one file of the zip.
type File struct {
	File   string `json:"file"`
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"`
}

// TableEntry is one table's CSV file.
type TableEntry struct {
	Schema string `json:"schema"`
	Name   string `json:"name"`
	File
	Rows int64 `json:"rows"`
}

// Export restores opts.Target into a scratch database and writes the zip.
func Export(ctx context.Context, opts Options) (_ *Manifest, err error) {
	log := opts.Log
	if log == nil {
		log = zap.NewNop()
	}
	progress := opts.Progress
	if progress == nil {
		progress = func(string, ...any) {}
	}
	if opts.Out == "" {
		return nil, fmt.Errorf("no output file: give --out takeout.zip")
	}
	pgDump, err := basebackup.FindTool(opts.BinDir, "pg_dump")
	if err != nil {
		return nil, err
	}
	// The temporary file sits beside the output so the final rename stays
	// on one file system; checking the directory first fails before the
	// (long) restore.
	dir := filepath.Dir(opts.Out)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(opts.Out)+".*.tmp")
	if err != nil {
		return nil, fmt.Errorf("create the output next to %s: %w", opts.Out, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()

	// Plan first: a target the archive cannot reach fails before a
	// scratch cluster is started.
	cat, err := pitr.Load(ctx, opts.Stores, log)
	if err != nil {
		return nil, err
	}
	resolved, err := cat.Resolve(ctx, opts.Target)
	if err != nil {
		return nil, err
	}
	if _, err := cat.Plan(resolved); err != nil {
		return nil, err
	}

	db, err := scratch.OpenDB(ctx, opts.Scratch)
	if err != nil {
		return nil, err
	}
	defer func() {
		if cerr := db.Close(context.WithoutCancel(ctx)); cerr != nil {
			log.Warn("throwing the scratch database away", zap.Error(cerr))
		}
	}()
	progress("export: restoring %s into %s", opts.Target, db.Where())
	res, err := replay.Restore(ctx, replay.RestoreOptions{
		Stores: opts.Stores, TargetDSN: db.DSN, Target: opts.Target,
		Parallel: opts.Parallel, TempDir: opts.TempDir, Log: log, Progress: progress,
	})
	if err != nil {
		return nil, err
	}
	m := &Manifest{Format: Format, Version: Version, Created: time.Now().UTC(), Tables: []TableEntry{}}
	b := res.Backup
	m.Source = Source{Database: b.Database, SystemID: b.SystemID, ServerVersion: b.ServerVersion, Backup: b.ID}
	for _, s := range opts.Stores {
		m.Source.Stores = append(m.Source.Stores, store.Redact(s.URL()))
	}
	m.Target = Target{Requested: opts.Target.String(), LSN: b.ConsistentLSN}
	if s := res.Replay; s != nil && s.Applied > 0 {
		at := s.LastCommit.UTC()
		m.Target.LSN, m.Target.Time, m.Target.XID = s.LastLSN.String(), &at, s.LastXID
	} else {
		// Nothing replayed: the instant is the backup's consistent point.
		at := b.ConsistentTime.UTC()
		m.Target.Time = &at
	}

	conn, err := wal.ConnectText(ctx, db.DSN)
	if err != nil {
		return nil, fmt.Errorf("connect to the scratch database: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	// wayback's own schema (DDL capture) is not the user's data, and its
	// event trigger would make schema.sql need a superuser to load.
	if _, err := conn.Exec(ctx, "DROP SCHEMA IF EXISTS wayback CASCADE"); err != nil {
		return nil, fmt.Errorf("remove wayback's schema from the scratch database: %w", err)
	}
	tables, err := listTables(ctx, conn)
	if err != nil {
		return nil, err
	}

	zw := zip.NewWriter(tmp)
	put := func(name string, write func(io.Writer) error) (File, error) {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: name, Method: zip.Deflate, Modified: m.Created})
		if err != nil {
			return File{}, fmt.Errorf("add %s to the zip: %w", name, err)
		}
		h := sha256.New()
		cw := &countWriter{w: io.MultiWriter(w, h)}
		if err := write(cw); err != nil {
			return File{}, fmt.Errorf("write %s: %w", name, err)
		}
		return File{File: name, Bytes: cw.n, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
	}

	m.Schema, err = put("schema.sql", func(w io.Writer) error {
		var stderr strings.Builder
		cmd := exec.CommandContext(ctx, pgDump, "--schema-only", "--no-owner", "--no-privileges",
			"--no-publications", "--no-subscriptions", "--dbname="+db.DSN)
		cmd.Stdout, cmd.Stderr = w, &stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("pg_dump: %v: %s", err, strings.TrimSpace(stderr.String()))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for i, t := range tables {
		var rows int64
		f, err := put(csvName(t[0], t[1]), func(w io.Writer) error {
			tag, err := conn.PgConn().CopyTo(ctx, w, "COPY "+pgx.Identifier{t[0], t[1]}.Sanitize()+" TO STDOUT WITH (FORMAT csv, HEADER)")
			rows = tag.RowsAffected()
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("export table %s.%s: %w", t[0], t[1], err)
		}
		m.Tables = append(m.Tables, TableEntry{Schema: t[0], Name: t[1], File: f, Rows: rows})
		m.Rows += rows
		m.Bytes += f.Bytes
		progress("  exported %d/%d tables (%s.%s, %d rows)", i+1, len(tables), t[0], t[1], rows)
	}
	mb, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	if _, err := put("manifest.json", func(w io.Writer) error { _, err := w.Write(append(mb, '\n')); return err }); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("finish the zip: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return nil, fmt.Errorf("write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("write %s: %w", tmp.Name(), err)
	}
	if err := os.Chmod(tmp.Name(), 0o600); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp.Name(), opts.Out); err != nil {
		return nil, fmt.Errorf("move the finished zip to %s: %w", opts.Out, err)
	}
	return m, nil
}

// CSVName is the zip entry of a table: tables/<schema>.<table>.csv, each
// name path-escaped so that dots, slashes and the like stay unambiguous.
func csvName(schema, name string) string {
	esc := func(s string) string { return strings.ReplaceAll(url.PathEscape(s), ".", "%2E") }
	return "tables/" + esc(schema) + "." + esc(name) + ".csv"
}

// listTables lists the tables whose rows are exported: permanent ordinary
// tables (partitions as their leaves), outside the system schemas and
// extensions, by name.
func listTables(ctx context.Context, conn *pgx.Conn) ([][2]string, error) {
	rows, err := conn.Query(ctx, `SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind = 'r' AND c.relpersistence = 'p'
		  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
		  AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp%'
		  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
		ORDER BY 1, 2`)
	if err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) ([2]string, error) {
		var t [2]string
		err := r.Scan(&t[0], &t[1])
		return t, err
	})
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
