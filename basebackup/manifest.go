// Package basebackup takes logical base backups aligned to the change
// stream and loads them into a target database.
//
// A backup is taken under the snapshot exported by a temporary logical
// replication slot created at consistent point C: the backup holds exactly
// the transactions whose commit record is before C, and replay applies
// exactly those at or after C (DESIGN invariant 3).
package basebackup

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/wayback-pitr/wayback/wal"
)

// ManifestVersion is the version of the manifest format (docs/FORMAT.md)
// that Take writes. Version 2 added binary COPY data files and changed
// the row digest to XXH3-128; version 1 manifests are read unchanged.
const ManifestVersion = 2

// The COPY formats a table's data files can be in.
const (
	FormatText   = "text"
	FormatBinary = "binary"
)

// Prefix is where backups live in an archive.
const Prefix = "backups/"

// ManifestName is the last object written for a backup; its presence marks
// the backup complete.
const ManifestName = "manifest.json"

// Manifest describes one complete base backup.
type Manifest struct {
	Version        int        `json:"version"`
	ID             string     `json:"id"`
	ConsistentLSN  string     `json:"consistent_lsn"`  // C, in PostgreSQL's X/Y form
	ConsistentTime time.Time  `json:"consistent_time"` // source clock right after C was established
	StartedAt      time.Time  `json:"started_at"`
	FinishedAt     time.Time  `json:"finished_at"`
	ServerVersion  string     `json:"server_version"`
	SystemID       string     `json:"system_identifier"`
	Database       string     `json:"database"`
	CopyFormat     string     `json:"copy_format"` // of tables without a format of their own: "text"
	PreData        FileRef    `json:"pre_data"`
	PostData       FileRef    `json:"post_data"`
	Tables         []Table    `json:"tables"`
	Sequences      []Sequence `json:"sequences"`
}

// FileRef is one object of a backup.
type FileRef struct {
	Key     string `json:"key"`      // relative to the archive root
	Size    int64  `json:"size"`     // stored (compressed) bytes
	RawSize int64  `json:"raw_size"` // uncompressed bytes
	SHA256  string `json:"sha256"`   // of the stored bytes
}

// Table is one table's data in a backup.
type Table struct {
	Schema string `json:"schema"`
	Name   string `json:"name"`
	// Columns are the copied columns in COPY order (generated and dropped
	// columns excluded), so rows can be read by column name.
	Columns []string `json:"columns"`
	Rows    int64    `json:"rows"`
	// Format is the COPY format of the data files, "text" or "binary"
	// ("" means the manifest's CopyFormat). Binary is used for tables
	// whose every column has a built-in type that pgcopy can print as
	// text, so that undo can still read the rows (manifest version 2).
	Format string `json:"format,omitempty"`
	// ColumnTypes are the type OIDs of Columns, for reading binary rows.
	ColumnTypes []uint32 `json:"column_types,omitempty"`
	// RowSum is the RowSum of the table's rows as backed up, for restore
	// drills (wayback verify --deep) to check the loaded table against.
	// Backups taken before it existed lack it.
	RowSum string    `json:"row_sum,omitempty"`
	Files  []FileRef `json:"files"`
}

// CopyFormat is the COPY format of the table's data files.
func (t Table) CopyFormat() string {
	if t.Format == "" {
		return FormatText
	}
	return t.Format
}

// Sequence is a sequence's state read during the backup. Sequences are not
// transactional, so the value is at or past the one at C.
type Sequence struct {
	Schema    string `json:"schema"`
	Name      string `json:"name"`
	LastValue int64  `json:"last_value"`
	IsCalled  bool   `json:"is_called"`
}

// LSN returns the parsed consistent point.
func (m *Manifest) LSN() wal.LSN {
	l, _ := wal.ParseLSN(m.ConsistentLSN)
	return l
}

// Rows is the total row count over all tables.
func (m *Manifest) Rows() int64 {
	var n int64
	for _, t := range m.Tables {
		n += t.Rows
	}
	return n
}

// Size is the total stored size of the backup.
func (m *Manifest) Size() int64 {
	n := m.PreData.Size + m.PostData.Size
	for _, t := range m.Tables {
		for _, f := range t.Files {
			n += f.Size
		}
	}
	return n
}

// Key is the manifest's object key.
func (m *Manifest) Key() string { return ManifestKey(m.ID) }

// ManifestKey is the key of backup id's manifest.
func ManifestKey(id string) string { return Prefix + id + "/" + ManifestName }

// IDFromKey returns the backup ID of a manifest key, or "" if key is not one.
func IDFromKey(key string) string {
	rest, ok := strings.CutPrefix(key, Prefix)
	if !ok {
		return ""
	}
	id, name, ok := strings.Cut(rest, "/")
	if !ok || name != ManifestName {
		return ""
	}
	return id
}

// ParseManifest decodes and checks a manifest.
func ParseManifest(b []byte) (*Manifest, error) {
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("decode backup manifest: %w", err)
	}
	if m.Version < 1 || m.Version > ManifestVersion {
		return nil, fmt.Errorf("backup manifest version %d is not supported (this wayback reads 1 to %d): upgrade wayback", m.Version, ManifestVersion)
	}
	for _, t := range m.Tables {
		switch f := t.CopyFormat(); {
		case f == FormatBinary && m.Version >= 2 && len(t.ColumnTypes) == len(t.Columns):
		case f == FormatText && (m.CopyFormat == "" || m.CopyFormat == FormatText):
		default:
			return nil, fmt.Errorf("backup manifest %s: table %s.%s has COPY format %q this wayback cannot load: upgrade wayback", m.ID, t.Schema, t.Name, f)
		}
	}
	if _, err := wal.ParseLSN(m.ConsistentLSN); err != nil {
		return nil, fmt.Errorf("backup manifest %s: %w", m.ID, err)
	}
	return &m, nil
}
