package wal

import (
	"bufio"
	"context"
	"fmt"
	"io"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"
)

// Every value wayback moves travels as text: pgoutput prints it in the
// walsender, the base backup COPYs it out, and replay and load parse it on
// the target. Printing and parsing depend on session settings that a DBA
// may set per database or role (ALTER DATABASE ... SET DateStyle = 'SQL,
// DMY' makes 03/04/2026 the 3rd of April; extra_float_digits = 0 prints
// 0.30000000000000004 as 0.3; lc_monetary changes money's scale). So both
// ends pin the same settings, chosen so that text round-trips exactly.
var textSettings = [...][2]string{
	{"DateStyle", "ISO, MDY"},
	{"IntervalStyle", "postgres"},
	{"TimeZone", "UTC"},
	{"extra_float_digits", "3"},
	{"bytea_output", "hex"},
	{"lc_monetary", "C"},
	{"standard_conforming_strings", "on"},
	// Replay runs DDL captured under standard_conforming_strings = off,
	// where 'it\'s' is how a quote is written; a target whose database or
	// role sets backslash_quote = off would refuse what the source took.
	// Every wayback connection speaks UTF-8, where \' is safe.
	{"backslash_quote", "on"},
}

// PinTextSettings adds the settings under which wayback prints and parses
// values to a connection's startup parameters (pgconn's RuntimeParams), so
// that they apply before any statement and override database and role
// defaults. Every connection that reads or writes row values as text must
// use it: the replication stream, the base backup's copy, and the load and
// replay on the target.
func PinTextSettings(params map[string]string) {
	for _, s := range textSettings {
		params[s[0]] = s[1]
	}
}

// TextSetting returns the pinned value of one of those settings.
func TextSetting(name string) (string, bool) {
	for _, s := range textSettings {
		if s[0] == name {
			return s[1], true
		}
	}
	return "", false
}

// TextSettingsSQL returns SET LOCAL statements for the same settings, for
// SQL scripts that wayback writes for others to run (undo).
func TextSettingsSQL() string {
	var out string
	for _, s := range textSettings {
		out += "SET LOCAL " + s[0] + " = '" + s[1] + "';\n"
	}
	return out
}

// ConnectText opens an ordinary connection with the text settings pinned.
func ConnectText(ctx context.Context, dsn string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("parse postgres DSN: %w", err)
	}
	PinTextSettings(cfg.RuntimeParams)
	// pgx reads the socket 8 KiB at a time; a COPY of a big table (base
	// backup, restore drill) then spends as much time in read system calls
	// as in everything else it does. A larger buffer in front of the
	// protocol reader takes whatever the kernel holds in one call.
	cfg.BuildFrontend = func(r io.Reader, w io.Writer) *pgproto3.Frontend {
		return pgproto3.NewFrontend(bufio.NewReaderSize(r, 256<<10), w)
	}
	return pgx.ConnectConfig(ctx, cfg)
}
