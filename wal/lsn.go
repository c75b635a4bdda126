// Package wal turns PostgreSQL's logical change stream into wayback's
// archive: it decodes pgoutput messages, groups them into transactions and
// packs those into segments (docs/FORMAT.md), and reads segments back.
package wal

import (
	"fmt"

	"github.com/jackc/pglogrepl"
)

// LSN is a PostgreSQL WAL position. It is pglogrepl's type so positions move
// between the replication protocol and the archive without conversion.
type LSN = pglogrepl.LSN

// ParseLSN parses the "X/Y" form PostgreSQL prints, or the 16-digit hex form
// used in object names.
func ParseLSN(s string) (LSN, error) {
	if len(s) == 16 {
		var v uint64
		if _, err := fmt.Sscanf(s, "%016X", &v); err == nil {
			return LSN(v), nil
		}
	}
	l, err := pglogrepl.ParseLSN(s)
	if err != nil {
		return 0, fmt.Errorf("invalid LSN %q (expected the form 0/16B3748)", s)
	}
	return l, nil
}

// HexLSN is the fixed-width form used in object keys: lexical order equals
// LSN order.
func HexLSN(l LSN) string { return fmt.Sprintf("%016X", uint64(l)) }
