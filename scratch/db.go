package scratch

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"
)

// DBOptions select a scratch database.
type DBOptions struct {
	// DSN names a database on a server the user provides. Its database must
	// not exist (it is created and dropped afterwards) or be empty (it is
	// dropped and created again, empty, afterwards). Empty: start a private
	// local cluster.
	DSN string
	// BinDir holds initdb, pg_ctl and postgres for the local cluster (see
	// Options.BinDir).
	BinDir string
	// TempDir is where the local cluster's directory is created.
	TempDir string
	// Log receives progress; nil discards it.
	Log *zap.Logger
}

// DB is a scratch database. Restore into DSN; Close throws it away.
type DB struct {
	// DSN is the database's connection string. The database does not
	// exist yet when Open returns, or exists and is empty.
	DSN string
	// Local is the private cluster, nil when the user gave a DSN.
	Local *Cluster

	existed bool   // the user's database existed (and was empty) at Open
	owner   string // its owner, to create it again on Close
	log     *zap.Logger
}

// LocalDatabase is the database name used in a private cluster.
const LocalDatabase = "wayback_scratch"

// OpenDB prepares a scratch database. With a DSN it checks that the
// database is absent or empty, so a drill never writes into a database
// that holds anything; without one it starts a private cluster.
func OpenDB(ctx context.Context, opts DBOptions) (*DB, error) {
	log := opts.Log
	if log == nil {
		log = zap.NewNop()
	}
	if opts.DSN == "" {
		c, err := StartCluster(ctx, Options{BinDir: opts.BinDir, TempDir: opts.TempDir, Log: log,
			Settings: map[string]string{"wal_level": "minimal", "max_wal_senders": "0"}})
		if err != nil {
			return nil, fmt.Errorf("start a local scratch cluster (or give --scratch-dsn): %w", err)
		}
		return &DB{DSN: c.DSN(LocalDatabase), Local: c, log: log}, nil
	}
	cfg, err := pgx.ParseConfig(opts.DSN)
	if err != nil {
		return nil, fmt.Errorf("scratch DSN: %w", err)
	}
	if cfg.Database == "" || cfg.Database == "postgres" || cfg.Database == "template0" || cfg.Database == "template1" {
		return nil, fmt.Errorf("scratch DSN names database %q: name a database of its own (it is created if missing and emptied afterwards)", cfg.Database)
	}
	d := &DB{DSN: opts.DSN, log: log}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "3D000" {
		return d, nil // restore creates it; Close drops it
	}
	if err != nil {
		return nil, fmt.Errorf("connect to scratch database %q at %s:%d: %w", cfg.Database, cfg.Host, cfg.Port, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var n int
	var example string
	err = conn.QueryRow(ctx, `SELECT count(*), coalesce(min(n.nspname || '.' || c.relname), ''),
		(SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database())
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_toast%'`).
		Scan(&n, &example, &d.owner)
	if err != nil {
		return nil, fmt.Errorf("inspect scratch database %q: %w", cfg.Database, err)
	}
	if n > 0 {
		return nil, fmt.Errorf("scratch database %q is not empty (%d relations, e.g. %s): name a new or empty database, it is dropped or emptied afterwards", cfg.Database, n, example)
	}
	d.existed = true
	return d, nil
}

// Where describes the scratch database for reports, without credentials.
func (d *DB) Where() string {
	cfg, err := pgx.ParseConfig(d.DSN)
	if err != nil {
		return "(unparsable DSN)"
	}
	if d.Local != nil {
		return fmt.Sprintf("local cluster %s (port %d)", d.Local.Dir, d.Local.Port)
	}
	return fmt.Sprintf("database %q on %s:%d", cfg.Database, cfg.Host, cfg.Port)
}

// Close throws the scratch database away: a private cluster is stopped and
// its directory removed; a user's database is dropped, and created again
// empty (with its owner) if it existed before.
func (d *DB) Close(ctx context.Context) error {
	if d.Local != nil {
		return d.Local.Close()
	}
	cfg, err := pgx.ParseConfig(d.DSN)
	if err != nil {
		return err
	}
	admin := cfg.Copy()
	admin.Database = "postgres"
	conn, err := pgx.ConnectConfig(ctx, admin)
	if err != nil {
		return fmt.Errorf("drop scratch database %q: connect to maintenance database: %w", cfg.Database, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	name := pgx.Identifier{cfg.Database}.Sanitize()
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop scratch database %q (drop it by hand): %w", cfg.Database, err)
	}
	if d.existed {
		q := "CREATE DATABASE " + name + " TEMPLATE template0"
		if d.owner != "" {
			q += " OWNER " + pgx.Identifier{d.owner}.Sanitize()
		}
		if _, err := conn.Exec(ctx, q); err != nil {
			return fmt.Errorf("create scratch database %q again after the drill (it was dropped): %w", cfg.Database, err)
		}
	}
	return nil
}
