package basebackup

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/wayback-pitr/wayback/pgcopy"
	"github.com/wayback-pitr/wayback/store"
	"github.com/wayback-pitr/wayback/wal"
)

// Options configures Take.
type Options struct {
	DSN      string
	BinDir   string // where pg_dump lives; "" searches the usual places
	Parallel int    // tables (or chunks of tables) copied at once
	// ChunkBytes is the table size (on disk, in the source) above which a
	// table that dwarfs the rest is copied in chunks of about that size,
	// each to its own object, so that one big table is copied, and later
	// loaded, by several connections at once. 0 means DefaultChunkBytes;
	// negative turns chunking off.
	ChunkBytes int64
	// PieceBytes is how many compressed bytes (or eight times as many raw
	// ones) a data file holds before the rest of its COPY goes on in a new
	// one, at a row boundary, so that each is stored while the next is
	// written and the spool holds two at most. 0 means DefaultPieceBytes;
	// negative never cuts.
	PieceBytes int64
	TempDir    string // spool directory; "" uses os.TempDir()
	// CopyFormat is "auto" (or ""): binary COPY for every table whose
	// columns all have built-in types wayback can also print as text, text
	// for the rest; or "text" for text everywhere (a backup that
	// PostgreSQL versions with another binary format of a type could
	// load). Binary costs the server about a quarter less, both ways.
	CopyFormat string
	Log        *zap.Logger
	// Progress, if set, is called after each table is stored.
	Progress func(done, total int, table string)
	// AfterSnapshot, if set, runs once the snapshot is exported and before
	// any data is read. Tests use it to write concurrently with the copy.
	AfterSnapshot func(ctx context.Context, consistent wal.LSN)
}

// DefaultChunkBytes is Options.ChunkBytes when unset. A chunk is read with
// COPY (SELECT ... WHERE ctid ...), which costs the server more per row
// than COPY of the whole table (up to twice as much for pgbench_accounts
// on PostgreSQL 15), so only big tables are cut, and only those that
// would hold the other connections up for long (dwarfs).
const DefaultChunkBytes = 512 << 20

// Take makes a base backup of the database at opts.DSN into the fan-out's
// stores and returns its manifest.
func Take(ctx context.Context, fan *store.Fanout, opts Options) (*Manifest, error) {
	log := opts.Log
	if log == nil {
		log = zap.NewNop()
	}
	if opts.Parallel < 1 {
		opts.Parallel = 1
	}
	switch opts.CopyFormat {
	case "", "auto", FormatText:
	default:
		return nil, fmt.Errorf("basebackup copy_format %q is not one of auto, text", opts.CopyFormat)
	}
	pgDump, err := FindTool(opts.BinDir, "pg_dump")
	if err != nil {
		return nil, err
	}
	started := time.Now().UTC()

	// The wayback schema is part of the dump: the DDL-capture event trigger
	// is dumped with the database, and its function must come along. It is
	// inert during replay (session_replication_role = replica) and active
	// again if the restored database becomes a primary.
	//
	// The replication connection must stay open and idle while anything
	// reads under its snapshot; it is closed (dropping the temporary slot)
	// only when all copies are done.
	repl, err := wal.ConnectReplication(ctx, opts.DSN)
	if err != nil {
		return nil, err
	}
	defer repl.Close(context.Background())
	slotName := "wayback_bb_" + randomHex(6)
	slot, err := pglogrepl.CreateReplicationSlot(ctx, repl, slotName, "pgoutput",
		pglogrepl.CreateReplicationSlotOptions{Temporary: true, SnapshotAction: "EXPORT_SNAPSHOT", Mode: pglogrepl.LogicalReplication})
	if err != nil {
		return nil, fmt.Errorf("create temporary slot for the base backup: %w", err)
	}
	consistent, err := wal.ParseLSN(slot.ConsistentPoint)
	if err != nil {
		return nil, err
	}

	conn, err := beginSnapshot(ctx, opts.DSN, slot.SnapshotName)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())

	m := &Manifest{Version: ManifestVersion, ConsistentLSN: consistent.String(), StartedAt: started, CopyFormat: FormatText}
	err = conn.QueryRow(ctx, `SELECT clock_timestamp(), current_setting('server_version'), current_database(),
		(SELECT system_identifier::text FROM pg_control_system())`).Scan(&m.ConsistentTime, &m.ServerVersion, &m.Database, &m.SystemID)
	if err != nil {
		return nil, fmt.Errorf("read server facts: %w", err)
	}
	m.ConsistentTime = m.ConsistentTime.UTC()
	m.ID = m.ConsistentTime.Format("20060102T150405Z") + "-" + wal.HexLSN(consistent)
	prefix := Prefix + m.ID + "/"
	log = log.With(zap.String("backup", m.ID), zap.String("consistent_lsn", m.ConsistentLSN))
	log.Info("base backup started")
	if opts.AfterSnapshot != nil {
		opts.AfterSnapshot(ctx, consistent)
	}

	tables, err := listTables(ctx, conn, opts.CopyFormat != FormatText)
	if err != nil {
		return nil, err
	}
	if m.Sequences, err = listSequences(ctx, conn); err != nil {
		return nil, err
	}

	spool, err := os.MkdirTemp(opts.TempDir, "wayback-backup-")
	if err != nil {
		return nil, fmt.Errorf("create spool directory: %w", err)
	}
	defer os.RemoveAll(spool)

	refresh, err := refreshMatViews(ctx, conn)
	if err != nil {
		return nil, err
	}
	// The schema is dumped while the rows are copied: each pg_dump spends
	// most of its time reading the catalogs, which the copies do not wait
	// for. Both read under the same snapshot.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	schemaErrs := make(chan error, 2)
	for _, sec := range []struct {
		section string
		ref     *FileRef
	}{{"pre-data", &m.PreData}, {"post-data", &m.PostData}} {
		go func() {
			began := time.Now()
			err := func() error {
				var out, stderr bytes.Buffer
				cmd := exec.CommandContext(ctx, pgDump, "--schema-only", "--section="+sec.section, "--snapshot="+slot.SnapshotName,
					"--no-publications", "--no-subscriptions", "--dbname="+opts.DSN)
				cmd.Stdout, cmd.Stderr = &out, &stderr
				if err := cmd.Run(); err != nil {
					return fmt.Errorf("pg_dump --section=%s: %v: %s", sec.section, err, strings.TrimSpace(stderr.String()))
				}
				if sec.section == "post-data" {
					out.WriteString(refresh)
				}
				ref, err := storeStream(ctx, fan, spool, prefix+sec.section+".sql.lz4", func(w io.Writer) error {
					_, err := w.Write(out.Bytes())
					return err
				})
				*sec.ref = ref
				return err
			}()
			if err != nil {
				cancel()
			}
			log.Debug("schema section dumped", zap.String("section", sec.section), zap.Duration("took", time.Since(began)), zap.Error(err))
			schemaErrs <- err
		}()
	}
	waitSchema := func() error {
		var errs []error
		for range 2 {
			if err := <-schemaErrs; err != nil {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	}

	parts, err := planParts(ctx, conn, tables, opts.ChunkBytes, opts.Parallel)
	if err != nil {
		return nil, err
	}
	pieceBytes := opts.PieceBytes
	if pieceBytes == 0 {
		pieceBytes = DefaultPieceBytes
	}
	type result struct {
		refs []FileRef // its pieces
		rows int64
		sum  *RowSum
	}
	results := make([][]result, len(tables))
	left := make([]int, len(tables))
	for _, p := range parts {
		left[p.table]++
	}
	for i := range tables {
		results[i] = make([]result, left[i])
	}
	m.Tables = make([]Table, len(tables))
	var mu sync.Mutex
	done := 0
	err = forEach(ctx, opts.Parallel, len(parts),
		func(ctx context.Context, w int) (*pgx.Conn, func(), error) {
			if w == 0 {
				return conn, func() {}, nil // already under the snapshot
			}
			c, err := beginSnapshot(ctx, opts.DSN, slot.SnapshotName)
			if err != nil {
				return nil, nil, err
			}
			return c, func() { c.Close(context.Background()) }, nil
		},
		func(ctx context.Context, wconn *pgx.Conn, item int) error {
			p := parts[item]
			i := p.table
			t := tables[i]
			key := fmt.Sprintf("%sdata/%05d.copy.lz4", prefix, i)
			query := "COPY " + t.quoted() + " TO STDOUT" + copyOptions(t.format, false)
			if p.of > 1 {
				key = fmt.Sprintf("%sdata/%05d.%04d.copy.lz4", prefix, i, p.chunk)
				query = p.copyQuery(t)
			}
			r := result{sum: NewRowSum(ManifestVersion, t.format)}
			tb := time.Now()
			ps, err := newPieces(ctx, fan, spool, key)
			if err != nil {
				return fmt.Errorf("back up table %s: %w", t.qualified(), err)
			}
			cut := &rowCutter{out: ps, sum: r.sum, binary: t.format == FormatBinary, limit: pieceBytes}
			tag, err := wconn.PgConn().CopyTo(ctx, cut, query)
			r.rows = tag.RowsAffected()
			if err == nil {
				err = cut.Flush()
			}
			if err == nil {
				err = r.sum.Err()
			}
			if err == nil {
				r.refs, err = ps.Close()
			} else {
				ps.Abort()
			}
			if err != nil {
				return fmt.Errorf("back up table %s: %w", t.qualified(), err)
			}
			log.Debug("table copied", zap.String("table", t.qualified()), zap.Int("chunk", p.chunk), zap.Int("of", p.of), zap.Duration("took", time.Since(tb)))
			mu.Lock()
			defer mu.Unlock()
			results[i][p.chunk] = r
			if left[i]--; left[i] > 0 {
				return nil
			}
			tab := Table{Schema: t.schema, Name: t.name, Columns: t.columns, Format: t.format}
			if t.format == FormatBinary {
				tab.ColumnTypes = t.types
			}
			sum := NewRowSum(ManifestVersion, FormatText) // only merged into
			for _, r := range results[i] {
				tab.Rows += r.rows
				tab.Files = append(tab.Files, r.refs...)
				sum.Merge(r.sum)
			}
			tab.RowSum = sum.String()
			m.Tables[i] = tab
			done++
			if opts.Progress != nil {
				opts.Progress(done, len(tables), t.qualified())
			}
			return nil
		})
	if serr := waitSchema(); serr != nil {
		return nil, serr // the cause; err is then only the cancellation it caused
	}
	if err != nil {
		return nil, err
	}

	m.FinishedAt = time.Now().UTC()
	mb, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := fan.Put(ctx, m.Key(), mb); err != nil {
		return nil, fmt.Errorf("store manifest of backup %s: %w", m.ID, err)
	}
	log.Info("base backup finished", zap.Int("tables", len(m.Tables)), zap.Int64("rows", m.Rows()),
		zap.Int64("bytes", m.Size()), zap.Duration("took", m.FinishedAt.Sub(started)))
	return m, nil
}

// refreshMatViews returns REFRESH MATERIALIZED VIEW statements for every
// materialized view that is populated in the snapshot, views that others
// read from first. A schema-only pg_dump creates every materialized view
// WITH NO DATA, and their contents are in no stream; refreshing them at the
// end of the load gives them the contents as of the backup's snapshot.
// Later REFRESHes on the source are DDL and replay at their place.
func refreshMatViews(ctx context.Context, conn *pgx.Conn) (string, error) {
	rows, err := conn.Query(ctx, `WITH RECURSIVE mv AS (
			SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE c.relkind = 'm' AND c.relispopulated AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'wayback')),
		deps AS (
			SELECT DISTINCT r.ev_class AS mv, d.refobjid AS dep FROM pg_rewrite r
			JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid AND d.refclassid = 'pg_class'::regclass
			WHERE r.ev_class IN (SELECT oid FROM mv) AND d.refobjid IN (SELECT oid FROM mv) AND d.refobjid <> r.ev_class),
		lvl(oid, depth) AS (
			SELECT oid, 0 FROM mv
			UNION ALL SELECT deps.mv, lvl.depth + 1 FROM lvl JOIN deps ON deps.dep = lvl.oid WHERE lvl.depth < 100)
		SELECT format('REFRESH MATERIALIZED VIEW %I.%I;', n.nspname, c.relname)
		FROM lvl JOIN pg_class c ON c.oid = lvl.oid JOIN pg_namespace n ON n.oid = c.relnamespace
		GROUP BY n.nspname, c.relname ORDER BY max(lvl.depth), 1`)
	if err != nil {
		return "", fmt.Errorf("list materialized views: %w", err)
	}
	stmts, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return "", fmt.Errorf("list materialized views: %w", err)
	}
	if len(stmts) == 0 {
		return "", nil
	}
	return "\n-- wayback: contents of populated materialized views as of the snapshot\n" + strings.Join(stmts, "\n") + "\n", nil
}

// beginSnapshot opens a connection reading under an exported snapshot.
func beginSnapshot(ctx context.Context, dsn, snapshot string) (*pgx.Conn, error) {
	conn, err := wal.ConnectText(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("connect for base backup: %w", err)
	}
	if _, err := conn.Exec(ctx, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"); err != nil {
		conn.Close(ctx)
		return nil, fmt.Errorf("begin snapshot transaction: %w", err)
	}
	if _, err := conn.Exec(ctx, "SET TRANSACTION SNAPSHOT '"+snapshot+"'"); err != nil {
		conn.Close(ctx)
		return nil, fmt.Errorf("import snapshot %s: %w", snapshot, err)
	}
	return conn, nil
}

type tableName struct {
	schema, name string
	bytes        int64    // heap size on disk
	columns      []string // the columns COPY writes, in its order
	types        []uint32 // their type OIDs
	format       string   // COPY format of the backup's data files
}

func (t tableName) quoted() string    { return pgx.Identifier{t.schema, t.name}.Sanitize() }
func (t tableName) qualified() string { return t.schema + "." + t.name }

// listTables returns the tables whose rows a backup holds: every permanent
// ordinary table (partitions included, partitioned parents hold no rows)
// outside the system schemas and wayback's own, largest first so that the
// parallel copy ends evenly, each with the columns COPY writes (generated
// and dropped ones left out). With binary, a table whose columns all have
// types pgcopy prints exactly is copied in binary; a domain column counts
// as its base type and an array of a domain as an array of its base type,
// which is what their binary values are (types records those OIDs).
func listTables(ctx context.Context, conn *pgx.Conn, binary bool) ([]tableName, error) {
	domains, err := listDomains(ctx, conn)
	if err != nil {
		return nil, err
	}
	rows, err := conn.Query(ctx, `SELECT n.nspname, c.relname, pg_relation_size(c.oid),
		coalesce(array_agg(a.attname ORDER BY a.attnum) FILTER (WHERE a.attnum IS NOT NULL), '{}'),
		coalesce(array_agg(a.atttypid::int8 ORDER BY a.attnum) FILTER (WHERE a.attnum IS NOT NULL), '{}')
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
		WHERE c.relkind = 'r' AND c.relpersistence = 'p'
		  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'wayback')
		  AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp%'
		  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
		GROUP BY n.nspname, c.relname, c.oid
		ORDER BY pg_relation_size(c.oid) DESC, 1, 2`)
	if err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	defer rows.Close()
	var out []tableName
	for rows.Next() {
		var t tableName
		var types []int64
		if err := rows.Scan(&t.schema, &t.name, &t.bytes, &t.columns, &types); err != nil {
			return nil, fmt.Errorf("list tables: %w", err)
		}
		t.format = FormatText
		if binary && len(types) > 0 {
			t.format = FormatBinary
		}
		for _, oid := range types {
			typ := domains.binaryType(uint32(oid))
			t.types = append(t.types, typ)
			if !pgcopy.Supported(typ) {
				t.format = FormatText
			}
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// domainTypes says, for the types involving domains, which type a
// column's binary COPY values are.
type domainTypes struct {
	base   map[uint32]uint32 // domain -> the type it is ultimately over, never a domain
	arrays map[uint32]uint32 // array of a domain -> array of that base type
}

// binaryType is the type whose binary form a column of type oid has: a
// domain's is its base type's (a domain sends and receives with its base
// type's functions; domain_recv adds only the constraint checks). An
// array of a domain is an array of the base type, except that array_send
// names the domain as the element type. That OID is the source
// database's own, but array_recv ignores an element type outside the
// built-in range, reading the elements as the restored column's (checked
// by TestDomainsBinary), and pgcopy.AppendText accepts it likewise.
func (d domainTypes) binaryType(oid uint32) uint32 {
	if b, ok := d.base[oid]; ok {
		oid = b
	}
	// A domain over an array of a domain ends here too.
	if a, ok := d.arrays[oid]; ok {
		oid = a
	}
	return oid
}

// listDomains reads every domain's base type (pg_type.typbasetype,
// followed through domains over domains) and maps the domains' array
// types to their base types' array types.
func listDomains(ctx context.Context, conn *pgx.Conn) (domainTypes, error) {
	rows, err := conn.Query(ctx, `SELECT d.oid::int8, d.typarray::int8, d.typbasetype::int8, b.typarray::int8
		FROM pg_type d JOIN pg_type b ON b.oid = d.typbasetype WHERE d.typtype = 'd'`)
	if err != nil {
		return domainTypes{}, fmt.Errorf("list domains: %w", err)
	}
	type domain struct{ array, next, nextArray uint32 }
	domains := map[uint32]domain{}
	var oid, array, next, nextArray int64
	_, err = pgx.ForEachRow(rows, []any{&oid, &array, &next, &nextArray}, func() error {
		domains[uint32(oid)] = domain{uint32(array), uint32(next), uint32(nextArray)}
		return nil
	})
	if err != nil {
		return domainTypes{}, fmt.Errorf("list domains: %w", err)
	}
	d := domainTypes{base: make(map[uint32]uint32, len(domains)), arrays: map[uint32]uint32{}}
	for oid, dom := range domains {
		last := dom
		// PostgreSQL forbids cycles; the bound keeps a corrupt catalog
		// from hanging the backup.
		for i := 0; i <= len(domains); i++ {
			n, ok := domains[last.next]
			if !ok {
				break
			}
			last = n
		}
		if _, ok := domains[last.next]; ok {
			return domainTypes{}, fmt.Errorf("list domains: domain %d has a cycle of base types in pg_type", oid)
		}
		d.base[oid] = last.next
		// The base type may have no array type (it is an array itself):
		// then the domain's array type stays unresolved, so unsupported.
		if dom.array != 0 && last.nextArray != 0 {
			d.arrays[dom.array] = last.nextArray
		}
	}
	return d, nil
}

func listSequences(ctx context.Context, conn *pgx.Conn) ([]Sequence, error) {
	rows, err := conn.Query(ctx, `SELECT schemaname, sequencename, coalesce(last_value, start_value), last_value IS NOT NULL
		FROM pg_sequences WHERE schemaname NOT IN ('wayback') ORDER BY 1, 2`)
	if err != nil {
		return nil, fmt.Errorf("list sequences: %w", err)
	}
	defer rows.Close()
	var out []Sequence
	for rows.Next() {
		var s Sequence
		if err := rows.Scan(&s.Schema, &s.Name, &s.LastValue, &s.IsCalled); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// storeStream writes what produce emits, lz4-compressed, to a spool file,
// then stores it under key in every store, and returns its reference.
// Spooling lets each store be retried without re-reading the database.
func storeStream(ctx context.Context, fan *store.Fanout, spool, key string, produce func(io.Writer) error) (FileRef, error) {
	ps, err := newPieces(ctx, fan, spool, key)
	if err != nil {
		return FileRef{}, err
	}
	if err := produce(ps); err != nil {
		ps.Abort()
		return FileRef{}, fmt.Errorf("write %s: %w", key, err)
	}
	refs, err := ps.Close()
	if err != nil {
		return FileRef{}, err
	}
	return refs[0], nil
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

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// FindTool locates a PostgreSQL client program: in binDir if given, else
// $WAYBACK_PG_BIN, /usr/lib/postgresql/15/bin, then PATH.
func FindTool(binDir, name string) (string, error) {
	var dirs []string
	if binDir != "" {
		dirs = []string{binDir}
	} else {
		if d := os.Getenv("WAYBACK_PG_BIN"); d != "" {
			dirs = append(dirs, d)
		}
		dirs = append(dirs, "/usr/lib/postgresql/15/bin")
	}
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	if binDir == "" {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found (looked in %s and PATH): install the PostgreSQL client of the server's major version or set postgres.bin_dir", name, strings.Join(dirs, ", "))
}

// part is one object of a table's rows: the whole table, or the rows in
// one range of its heap blocks.
type part struct {
	table     int   // index into the table list
	chunk, of int   // chunk number and count (of == 1: the whole table)
	from, to  int64 // heap blocks [from, to); to == 0: to the end
	size      int64 // estimated bytes on disk, for scheduling
}

// copyQuery is the COPY of the part's block range. A TID range scan (PG
// 14 and later) reads just those blocks. The last chunk is open-ended:
// rows the snapshot sees are in blocks that existed when it was taken,
// but nothing is lost if the table grew since its size was read.
func (p part) copyQuery(t tableName) string {
	q := make([]string, len(t.columns))
	for i, c := range t.columns {
		q[i] = pgx.Identifier{c}.Sanitize()
	}
	where := fmt.Sprintf("ctid >= '(%d,0)'::tid", p.from)
	if p.to > 0 {
		where += fmt.Sprintf(" AND ctid < '(%d,0)'::tid", p.to)
	}
	return "COPY (SELECT " + strings.Join(q, ", ") + " FROM ONLY " + t.quoted() + " WHERE " + where + ") TO STDOUT" + copyOptions(t.format, false)
}

// planParts cuts the tables larger than chunkBytes that dwarf the rest
// (see dwarfs) into block ranges of about that size, and returns all
// parts, the largest first. Chunking needs TID range scans (PostgreSQL
// 14) and at least one column.
func planParts(ctx context.Context, conn *pgx.Conn, tables []tableName, chunkBytes int64, workers int) ([]part, error) {
	if chunkBytes == 0 {
		chunkBytes = DefaultChunkBytes
	}
	var version, blockSize int64
	if err := conn.QueryRow(ctx, `SELECT current_setting('server_version_num')::int, current_setting('block_size')::int`).Scan(&version, &blockSize); err != nil {
		return nil, fmt.Errorf("read server version: %w", err)
	}
	var total int64
	for _, t := range tables {
		total += t.bytes
	}
	var parts []part
	for i, t := range tables {
		n := int64(1)
		if chunkBytes > 0 && version >= 140000 && t.bytes > chunkBytes && len(t.columns) > 0 && dwarfs(t.bytes, total-t.bytes, workers) {
			n = (t.bytes + chunkBytes - 1) / chunkBytes
		}
		if n == 1 {
			parts = append(parts, part{table: i, of: 1, size: t.bytes})
			continue
		}
		blocks := t.bytes / blockSize
		for c := int64(0); c < n; c++ {
			p := part{table: i, chunk: int(c), of: int(n), from: blocks * c / n, size: t.bytes / n}
			if c < n-1 {
				p.to = blocks * (c + 1) / n
			}
			parts = append(parts, p)
		}
	}
	sort.SliceStable(parts, func(a, b int) bool { return parts[a].size > parts[b].size })
	return parts, nil
}
