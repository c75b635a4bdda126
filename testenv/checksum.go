package testenv

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"
)

// TableSum summarises one table's contents independently of row order and
// physical layout, so a restored table can be compared with its source even
// though VACUUM, replay order or a dump/restore changed where rows live.
type TableSum struct {
	// Rows is the number of rows.
	Rows int64
	// Sum is a 32-digit hex digest of the row count and two 64-bit sums of
	// the rows' md5 hashes (first and second half, added as exact numerics).
	// Being a sum, it treats the table as a multiset: duplicate rows count
	// as often as they occur.
	Sum string
}

// ExcludedSchema is the schema Checksums ignores, because Wayback keeps its
// own bookkeeping tables there and they legitimately differ between a source
// and its restore.
const ExcludedSchema = "wayback"

// listTablesSQL lists ordinary tables (relkind 'r'); partitioned parents
// are 'p' and thus skipped while their leaf partitions are listed.
const listTablesSQL = `
SELECT n.nspname, c.relname
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', '` + ExcludedSchema + `')
  AND n.nspname NOT LIKE 'pg\_toast%'
  AND n.nspname NOT LIKE 'pg\_temp\_%'
ORDER BY 1, 2`

// Settings that change the text form of values, pinned so that checksums
// taken through different sessions or clusters agree.
var pinnedSettings = []string{
	"SET LOCAL TimeZone = 'UTC'",
	"SET LOCAL DateStyle = 'ISO, MDY'",
	"SET LOCAL IntervalStyle = 'postgres'",
	"SET LOCAL extra_float_digits = 1",
	"SET LOCAL bytea_output = 'hex'",
	"SET LOCAL lc_monetary = 'C'",
}

// Checksums returns a TableSum for every ordinary table in the database,
// keyed "schema.table" (names unquoted). System schemas, TOAST, temporary
// tables and the "wayback" schema are skipped; partitioned tables appear as
// their leaf partitions. All tables are read in one REPEATABLE READ,
// READ ONLY transaction, so the result describes a single instant even
// while other sessions keep writing.
func Checksums(ctx context.Context, dsn string) (map[string]TableSum, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("testenv: checksums: connecting to %s: %w", redact(dsn), err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, fmt.Errorf("testenv: checksums: beginning transaction: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	return ChecksumsTx(ctx, tx)
}

// ChecksumsTx is Checksums inside a transaction the caller controls, for
// checksumming a specific snapshot (for example one exported by a
// replication slot and imported with SET TRANSACTION SNAPSHOT). The
// transaction should be REPEATABLE READ or SERIALIZABLE, or the tables may
// be read at different instants. Setting changes needed for stable text
// output are made in a savepoint that is rolled back, so the caller's
// session is left as it was; the transaction is neither committed nor
// rolled back.
func ChecksumsTx(ctx context.Context, tx pgx.Tx) (map[string]TableSum, error) {
	sp, err := tx.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("testenv: checksums: creating savepoint: %w", err)
	}
	defer sp.Rollback(context.WithoutCancel(ctx))
	for _, s := range pinnedSettings {
		if _, err := sp.Exec(ctx, s); err != nil {
			return nil, fmt.Errorf("testenv: checksums: %s: %w", s, err)
		}
	}

	rows, err := sp.Query(ctx, listTablesSQL)
	if err != nil {
		return nil, fmt.Errorf("testenv: checksums: listing tables: %w", err)
	}
	tables, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) ([2]string, error) {
		var t [2]string
		err := r.Scan(&t[0], &t[1])
		return t, err
	})
	if err != nil {
		return nil, fmt.Errorf("testenv: checksums: listing tables: %w", err)
	}

	sums := make(map[string]TableSum, len(tables))
	for _, t := range tables {
		// ONLY: with plain inheritance, a parent's scan would include its
		// children's rows, which are checksummed on their own. ROW(t.*)
		// rather than t: a column named t would shadow the whole-row
		// reference.
		q := `SELECT count(*), md5(count(*)::text
		        || ':' || coalesce(sum(('x' || substr(h, 1, 16))::bit(64)::bigint::numeric), 0)::text
		        || ':' || coalesce(sum(('x' || substr(h, 17, 16))::bit(64)::bigint::numeric), 0)::text)
		      FROM (SELECT md5(ROW(t.*)::text) AS h FROM ONLY ` + pgx.Identifier{t[0], t[1]}.Sanitize() + ` t) s`
		var ts TableSum
		if err := sp.QueryRow(ctx, q).Scan(&ts.Rows, &ts.Sum); err != nil {
			return nil, fmt.Errorf("testenv: checksums: table %s.%s: %w", t[0], t[1], err)
		}
		sums[t[0]+"."+t[1]] = ts
	}
	return sums, nil
}

// DiffChecksums compares two Checksums results and returns "" when they
// are equal, otherwise one line per difference (missing tables, extra
// tables, differing row counts or sums), sorted by table, for use directly
// in a test failure message.
func DiffChecksums(want, got map[string]TableSum) string {
	names := make([]string, 0, len(want)+len(got))
	for k := range want {
		names = append(names, k)
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	var b strings.Builder
	for _, name := range names {
		w, inWant := want[name]
		g, inGot := got[name]
		switch {
		case !inGot:
			fmt.Fprintf(&b, "missing table %s (want %d rows, sum %s)\n", name, w.Rows, w.Sum)
		case !inWant:
			fmt.Fprintf(&b, "extra table %s (got %d rows, sum %s)\n", name, g.Rows, g.Sum)
		case w.Rows != g.Rows:
			fmt.Fprintf(&b, "table %s: want %d rows, got %d (sum want %s, got %s)\n", name, w.Rows, g.Rows, w.Sum, g.Sum)
		case w.Sum != g.Sum:
			fmt.Fprintf(&b, "table %s: same row count %d but contents differ (sum want %s, got %s)\n", name, w.Rows, w.Sum, g.Sum)
		}
	}
	return strings.TrimSuffix(b.String(), "\n")
}
