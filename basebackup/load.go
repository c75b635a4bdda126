package basebackup

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pierrec/lz4/v4"
	"go.uber.org/zap"

	"github.com/wayback-pitr/wayback/store"
	"github.com/wayback-pitr/wayback/wal"
)

// ErrCorrupt marks a backup object whose checksum does not match.
var ErrCorrupt = errors.New("backup object is corrupt")

// LoadOptions configures Load.
type LoadOptions struct {
	Parallel int
	Log      *zap.Logger
	// Progress, if set, is called after each table is loaded.
	Progress func(done, total int, table string)
}

// Load restores backup m into the (empty) database at dsn: the schema's
// pre-data section, every table's rows, sequence positions, then the
// post-data section (indexes, constraints, triggers), so that indexes are
// built once over the loaded data. Up to opts.Parallel connections load
// tables and build indexes at once, largest first; a table's indexes are
// built as soon as its rows are in, while other tables still load, as
// pg_restore -j does. Each object is read from the first store holding a
// valid copy.
func Load(ctx context.Context, m *Manifest, stores []store.Store, dsn string, opts LoadOptions) error {
	log := opts.Log
	if log == nil {
		log = zap.NewNop()
	}
	if opts.Parallel < 1 {
		opts.Parallel = 1
	}
	conn, err := wal.ConnectText(ctx, dsn)
	if err != nil {
		return fmt.Errorf("connect to target: %w", err)
	}
	defer conn.Close(context.Background())

	if err := checkBinaryTarget(ctx, conn, m); err != nil {
		return err
	}
	began := time.Now()
	if err := execSQLObject(ctx, conn, stores, m.PreData, log); err != nil {
		return fmt.Errorf("create schema (pre-data) of backup %s: %w", m.ID, err)
	}
	postSQL, err := readSQLObject(ctx, stores, m.PostData, log)
	if err != nil {
		return fmt.Errorf("read indexes and constraints (post-data) of backup %s: %w", m.ID, err)
	}
	log.Info("schema created", zap.Duration("took", time.Since(began)))
	began = time.Now()

	jobs, serial := loadJobs(m, stores, classifyPostData(postSQL), opts.Parallel, log, opts.Progress)
	err = runJobs(ctx, log, opts.Parallel, jobs, func(ctx context.Context) (*pgx.Conn, func(), error) {
		c, err := wal.ConnectText(ctx, dsn)
		if err != nil {
			return nil, nil, fmt.Errorf("connect to target: %w", err)
		}
		return c, func() { c.Close(context.Background()) }, nil
	})
	if err != nil {
		return fmt.Errorf("load backup %s: %w", m.ID, err)
	}
	log.Info("rows loaded and indexed", zap.Int("tables", len(m.Tables)), zap.Int64("rows", m.Rows()),
		zap.Int("jobs", len(jobs)), zap.Duration("took", time.Since(began)))
	began = time.Now()

	for _, s := range m.Sequences {
		if _, err := conn.Exec(ctx, "SELECT pg_catalog.setval($1::regclass, $2, $3)", pgx.Identifier{s.Schema, s.Name}.Sanitize(), s.LastValue, s.IsCalled); err != nil {
			return fmt.Errorf("set sequence %s.%s: %w", s.Schema, s.Name, err)
		}
	}
	// The rest of the post-data section, in its order, in one transaction:
	// foreign keys, partition index attachments, triggers, rules, ...
	if serial != "" {
		if _, err := conn.Exec(ctx, serial); err != nil {
			return fmt.Errorf("create constraints and triggers (post-data) of backup %s: %w", m.ID, err)
		}
	}
	log.Info("constraints and triggers created", zap.Duration("took", time.Since(began)))
	return nil
}

// checkBinaryTarget refuses, before anything is written, to load binary
// data files into an older PostgreSQL major version than the one they were
// written by: PostgreSQL promises binary COPY of built-in types only
// onwards.
func checkBinaryTarget(ctx context.Context, conn *pgx.Conn, m *Manifest) error {
	binary := false
	for _, t := range m.Tables {
		binary = binary || t.CopyFormat() == FormatBinary
	}
	src := majorVersion(m.ServerVersion)
	if !binary || src == 0 {
		return nil
	}
	var num int
	if err := conn.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&num); err != nil {
		return fmt.Errorf("read the target's server version: %w", err)
	}
	if num/10000 < src {
		return fmt.Errorf("backup %s holds binary data files written by PostgreSQL %d and the target runs PostgreSQL %d: restore into PostgreSQL %d or later (backups taken with basebackup.copy_format: text load into older versions)", m.ID, src, num/10000, src)
	}
	return nil
}

// majorVersion reads the major version from server_version ("15.18
// (Debian 15.18-0+deb12u1)", "16beta1"); 0 if it cannot.
func majorVersion(v string) int {
	n := 0
	for _, c := range v {
		if c < '0' || c > '9' {
			break
		}
		n = n*10 + int(c-'0')
	}
	return n
}

// loadJobs plans the parallel part of a load: one job per table (or per
// data file, for a table stored in several that is loaded in parallel),
// and one per index build of the post-data section, each waiting for its
// table's rows. Index builds on tables the backup holds no rows of
// (partitioned parents, materialized views, unlogged tables) wait for all
// rows. It returns the jobs and the rest of the post-data section, to run
// afterwards.
func loadJobs(m *Manifest, stores []store.Store, post []postDataStatement, workers int, log *zap.Logger,
	progress func(done, total int, table string)) ([]*job, string) {
	var jobs []*job
	type tableJobs struct {
		loads []*job
		size  int64
	}
	byTable := map[[2]string]*tableJobs{}
	var allLoads []*job
	var mu sync.Mutex
	done := 0
	var total int64
	for _, t := range m.Tables {
		total += rawSize(t.Files)
	}
	for _, t := range m.Tables {
		tj := &tableJobs{size: rawSize(t.Files)}
		byTable[[2]string{t.Schema, t.Name}] = tj
		groups := [][]FileRef{t.Files}
		// One job per file only if the table dwarfs the rest: see
		// dwarfs for why FREEZE in one transaction wins otherwise.
		if dwarfs(tj.size, total-tj.size, workers) {
			groups = groups[:0]
			for _, f := range t.Files {
				groups = append(groups, []FileRef{f})
			}
		}
		left := len(groups)
		finished := func() {
			mu.Lock()
			defer mu.Unlock()
			if left--; left <= 0 {
				done++
				if progress != nil {
					progress(done, len(m.Tables), t.Schema+"."+t.Name)
				}
			}
		}
		if len(t.Files) == 0 {
			finished()
			continue
		}
		for _, files := range groups {
			freeze := len(groups) == 1
			j := &job{name: "load " + t.Schema + "." + t.Name, cost: rawSize(files),
				run: func(ctx context.Context, c *pgx.Conn) error {
					if err := copyIn(ctx, c, stores, t, files, freeze, log); err != nil {
						return err
					}
					finished()
					return nil
				}}
			tj.loads = append(tj.loads, j)
			allLoads = append(allLoads, j)
			jobs = append(jobs, j)
		}
	}

	var serial strings.Builder
	var settings []string
	for _, st := range post {
		switch st.Kind {
		case postSetting:
			settings = append(settings, st.SQL)
			serial.WriteString(st.SQL)
		case postIndex:
			// The statement runs on a worker's session, after the settings
			// the dump made before it (search_path, default_tablespace, ...).
			stmt := strings.Join(settings, "") + st.SQL
			j := &job{name: "index on " + st.Schema + "." + st.Table,
				run: func(ctx context.Context, c *pgx.Conn) error {
					_, err := c.Exec(ctx, stmt)
					return err
				}}
			deps := allLoads
			if tj, ok := byTable[[2]string{st.Schema, st.Table}]; ok && st.Schema != "" {
				deps, j.cost = tj.loads, tj.size/2
			}
			for _, d := range deps {
				j.after(d)
			}
			jobs = append(jobs, j)
		default:
			serial.WriteString(st.SQL)
		}
	}
	// Without any statement besides the settings, skip the round trip.
	rest := serial.String()
	if len(rest) == len(strings.Join(settings, "")) {
		rest = ""
	}
	return jobs, rest
}

// sourceError marks a failure of the store side (missing object, read
// error, checksum mismatch): the next store may have a good copy.
type sourceError struct{ error }

func (e sourceError) Unwrap() error { return e.error }

// rawSize is the uncompressed size of files, the measure of load work.
func rawSize(files []FileRef) int64 {
	var n int64
	for _, f := range files {
		n += f.RawSize
	}
	return n
}

// copyIn loads a table's data files in one transaction, each from the
// first store with a valid copy; the transaction commits only after every
// object's checksum is verified, so a corrupt copy leaves no rows behind.
// When a copy turns out unusable, the transaction is rolled back and the
// load starts over with the next store for that file.
//
// With freeze, the table is truncated first in the same transaction and
// the rows are loaded with COPY FREEZE: already frozen and all-visible,
// they need no hint-bit writes when the indexes are built or the table is
// first read, and no anti-wraparound vacuum rewriting every page later.
// The target database is new and nobody else reads it, so the MVCC
// caveat of FREEZE does not matter. (With wal_level=minimal, the truncation
// also lets PostgreSQL skip the WAL of the rows.) FREEZE needs the
// truncation in the same subtransaction, which is why a failed copy
// restarts the whole transaction rather than a savepoint.
func copyIn(ctx context.Context, conn *pgx.Conn, stores []store.Store, t Table, files []FileRef, freeze bool, log *zap.Logger) error {
	table := pgx.Identifier{t.Schema, t.Name}.Sanitize()
	// Name the columns the backup wrote, in its order: the target table is
	// pg_dump's re-creation, and a column order that differs (a partition
	// or inheritance child made apart from its parent) must not shift
	// values into the wrong columns.
	copyTarget := table
	if len(t.Columns) > 0 {
		cols := make([]string, len(t.Columns))
		for i, c := range t.Columns {
			cols[i] = pgx.Identifier{c}.Sanitize()
		}
		copyTarget += " (" + strings.Join(cols, ", ") + ")"
	}
	copySQL := "COPY " + copyTarget + " FROM STDIN" + copyOptions(t.CopyFormat(), freeze)
	from := make([]int, len(files)) // the store each file is read from
	errs := make([][]error, len(files))
	for {
		failed, err := func() (int, error) {
			tx, err := conn.Begin(ctx)
			if err != nil {
				return -1, err
			}
			defer tx.Rollback(context.Background())
			if freeze {
				if _, err := tx.Exec(ctx, "TRUNCATE ONLY "+table); err != nil {
					return -1, err
				}
			}
			for i, f := range files {
				s := stores[from[i]]
				err := func() error {
					rc, err := s.Get(ctx, f.Key)
					if err != nil {
						return sourceError{err}
					}
					defer rc.Close()
					hr := newHashReader(rc, f, s.URL())
					_, copyErr := conn.PgConn().CopyFrom(ctx, lz4.NewReader(hr), copySQL)
					if err := hr.verify(); err != nil {
						return sourceError{err}
					}
					return copyErr
				}()
				if err != nil {
					return i, err
				}
			}
			return -1, tx.Commit(ctx)
		}()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if failed < 0 {
			return fmt.Errorf("load table %s: %w", table, err)
		}
		var se sourceError
		if !errors.As(err, &se) {
			return fmt.Errorf("load table %s from %s: %w", table, stores[from[failed]].URL(), err)
		}
		f := files[failed]
		log.Warn("backup object unusable in this store, trying the next", zap.String("key", f.Key), zap.String("store", stores[from[failed]].URL()), zap.Error(err))
		errs[failed] = append(errs[failed], err)
		if from[failed]++; from[failed] == len(stores) {
			return fmt.Errorf("load table %s: no store has a valid copy of %s: %w", table, f.Key, errors.Join(errs[failed]...))
		}
	}
}

// execSQLObject runs a schema section through the simple protocol in one
// implicit transaction.
func execSQLObject(ctx context.Context, conn *pgx.Conn, stores []store.Store, f FileRef, log *zap.Logger) error {
	sql, err := readSQLObject(ctx, stores, f, log)
	if err != nil {
		return err
	}
	_, err = conn.Exec(ctx, sql)
	return err
}

// readSQLObject reads a schema section, without psql's meta-commands.
func readSQLObject(ctx context.Context, stores []store.Store, f FileRef, log *zap.Logger) (string, error) {
	b, err := ReadObject(ctx, stores, f, log)
	if err != nil {
		return "", err
	}
	return stripMetaCommands(string(b))
}

// ReadObject reads a whole (small) backup object, uncompressed and
// verified, from the first store holding a valid copy.
func ReadObject(ctx context.Context, stores []store.Store, f FileRef, log *zap.Logger) ([]byte, error) {
	var errs []error
	for _, s := range stores {
		b, err := func() ([]byte, error) {
			rc, err := s.Get(ctx, f.Key)
			if err != nil {
				return nil, err
			}
			defer rc.Close()
			hr := newHashReader(rc, f, s.URL())
			b, err := io.ReadAll(lz4.NewReader(hr))
			if verr := hr.verify(); verr != nil {
				return nil, verr
			}
			return b, err
		}()
		if err == nil {
			return b, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		log.Warn("backup object unusable in this store, trying the next", zap.String("key", f.Key), zap.String("store", s.URL()), zap.Error(err))
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("no store has a valid copy of %s: %w", f.Key, errors.Join(errs...))
}

// stripMetaCommands removes the \restrict and \unrestrict lines that
// pg_dump (15.14 and later) writes for psql; any other psql meta-command
// is an error because the protocol cannot run it.
func stripMetaCommands(sql string) (string, error) {
	var out strings.Builder
	sc := bufio.NewScanner(strings.NewReader(sql))
	sc.Buffer(make([]byte, 1<<20), 1<<30)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, `\`) {
			if strings.HasPrefix(line, `\restrict `) || strings.HasPrefix(line, `\unrestrict `) {
				continue
			}
			return "", fmt.Errorf("schema dump contains a psql meta-command wayback cannot run: %.40s", line)
		}
		out.WriteString(line)
		out.WriteByte('\n')
	}
	return out.String(), sc.Err()
}

// hashReader hashes what passes through it; verify drains the rest (lz4
// may stop before EOF) and compares with the manifest.
type hashReader struct {
	r     io.Reader
	h     hash.Hash
	n     int64
	f     FileRef
	store string
	err   error // first read error other than EOF
}

func newHashReader(r io.Reader, f FileRef, storeURL string) *hashReader {
	return &hashReader{r: bufio.NewReaderSize(r, 1<<20), h: sha256.New(), f: f, store: storeURL}
}

func (h *hashReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	h.h.Write(p[:n])
	h.n += int64(n)
	if err != nil && err != io.EOF && h.err == nil {
		h.err = err
	}
	return n, err
}

func (h *hashReader) verify() error {
	if h.err == nil {
		_, h.err = io.Copy(io.Discard, h)
	}
	if h.err != nil {
		return fmt.Errorf("read %s from %s: %w", h.f.Key, h.store, h.err)
	}
	if got := hex.EncodeToString(h.h.Sum(nil)); got != h.f.SHA256 || h.n != h.f.Size {
		return fmt.Errorf("%w: %s in %s has %d bytes with SHA-256 %.12s…, manifest says %d bytes, %.12s…", ErrCorrupt, h.f.Key, h.store, h.n, got, h.f.Size, h.f.SHA256)
	}
	return nil
}
