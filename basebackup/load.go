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
// built once over the loaded data. Each object is read from the first store
// holding a valid copy.
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

	if err := execSQLObject(ctx, conn, stores, m.PreData, log); err != nil {
		return fmt.Errorf("create schema (pre-data) of backup %s: %w", m.ID, err)
	}

	var mu sync.Mutex
	done := 0
	err = forEach(ctx, opts.Parallel, len(m.Tables),
		func(ctx context.Context, _ int) (*pgx.Conn, func(), error) {
			c, err := wal.ConnectText(ctx, dsn)
			if err != nil {
				return nil, nil, fmt.Errorf("connect to target: %w", err)
			}
			return c, func() { c.Close(context.Background()) }, nil
		},
		func(ctx context.Context, c *pgx.Conn, i int) error {
			t := m.Tables[i]
			for _, f := range t.Files {
				if err := copyIn(ctx, c, stores, t, f, log); err != nil {
					return err
				}
			}
			mu.Lock()
			defer mu.Unlock()
			done++
			if opts.Progress != nil {
				opts.Progress(done, len(m.Tables), t.Schema+"."+t.Name)
			}
			return nil
		})
	if err != nil {
		return err
	}

	for _, s := range m.Sequences {
		if _, err := conn.Exec(ctx, "SELECT pg_catalog.setval($1::regclass, $2, $3)", pgx.Identifier{s.Schema, s.Name}.Sanitize(), s.LastValue, s.IsCalled); err != nil {
			return fmt.Errorf("set sequence %s.%s: %w", s.Schema, s.Name, err)
		}
	}
	if err := execSQLObject(ctx, conn, stores, m.PostData, log); err != nil {
		return fmt.Errorf("create indexes and constraints (post-data) of backup %s: %w", m.ID, err)
	}
	return nil
}

// sourceError marks a failure of the store side (missing object, read
// error, checksum mismatch): the next store may have a good copy.
type sourceError struct{ error }

func (e sourceError) Unwrap() error { return e.error }

// copyIn loads one data file, trying each store in turn. The COPY runs in
// a transaction that commits only after the object's checksum is verified,
// so a corrupt copy leaves no rows behind.
func copyIn(ctx context.Context, conn *pgx.Conn, stores []store.Store, t Table, f FileRef, log *zap.Logger) error {
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
	var errs []error
	for _, s := range stores {
		err := func() error {
			rc, err := s.Get(ctx, f.Key)
			if err != nil {
				return sourceError{err}
			}
			defer rc.Close()
			hr := newHashReader(rc, f, s.URL())
			tx, err := conn.Begin(ctx)
			if err != nil {
				return err
			}
			defer tx.Rollback(context.Background())
			_, copyErr := conn.PgConn().CopyFrom(ctx, lz4.NewReader(hr), "COPY "+copyTarget+" FROM STDIN")
			if err := hr.verify(); err != nil {
				return sourceError{err}
			}
			if copyErr != nil {
				return copyErr
			}
			return tx.Commit(ctx)
		}()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var se sourceError
		if !errors.As(err, &se) {
			return fmt.Errorf("load table %s from %s: %w", table, s.URL(), err)
		}
		log.Warn("backup object unusable in this store, trying the next", zap.String("key", f.Key), zap.String("store", s.URL()), zap.Error(err))
		errs = append(errs, err)
	}
	return fmt.Errorf("load table %s: no store has a valid copy of %s: %w", table, f.Key, errors.Join(errs...))
}

// execSQLObject runs a schema section through the simple protocol in one
// implicit transaction.
func execSQLObject(ctx context.Context, conn *pgx.Conn, stores []store.Store, f FileRef, log *zap.Logger) error {
	b, err := ReadObject(ctx, stores, f, log)
	if err != nil {
		return err
	}
	sql, err := stripMetaCommands(string(b))
	if err != nil {
		return err
	}
	_, err = conn.Exec(ctx, sql)
	return err
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
