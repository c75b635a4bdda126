package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"
)

// SetupOptions configures Setup.
type SetupOptions struct {
	DSN         string
	Slot        string
	Publication string
	// FixReplicaIdentity sets REPLICA IDENTITY FULL on published tables that
	// have neither a primary key nor a replica identity index. Without it,
	// Setup refuses to publish such tables, because PostgreSQL then rejects
	// the primary's own UPDATE and DELETE on them.
	FixReplicaIdentity bool
	Log                *zap.Logger
}

// SetupReport says what Setup found and did.
type SetupReport struct {
	DDLCapture         bool     `json:"ddl_capture"`
	CreatedPublication bool     `json:"created_publication"`
	CreatedSlot        bool     `json:"created_slot"`
	SlotLSN            string   `json:"slot_lsn,omitempty"`
	FixedTables        []string `json:"fixed_tables,omitempty"`
}

// ErrNoReplicaIdentity lists tables that would break the primary.
type ErrNoReplicaIdentity struct{ Tables []string }

func (e *ErrNoReplicaIdentity) Error() string {
	return fmt.Sprintf("%d table(s) have no primary key or replica identity (%s): once published, PostgreSQL rejects UPDATE and DELETE on them. Add a primary key, or rerun setup with --replica-identity-full to set REPLICA IDENTITY FULL",
		len(e.Tables), strings.Join(e.Tables, ", "))
}

// Setup creates, idempotently, what the agent needs on the source: the
// wayback schema, a publication for all tables and the logical slot.
func Setup(ctx context.Context, o SetupOptions) (*SetupReport, error) {
	conn, err := pgx.Connect(ctx, o.DSN)
	if err != nil {
		return nil, fmt.Errorf("connect to source: %w", err)
	}
	defer conn.Close(context.Background())
	var walLevel string
	if err := conn.QueryRow(ctx, "SHOW wal_level").Scan(&walLevel); err != nil {
		return nil, fmt.Errorf("read wal_level: %w", err)
	}
	if walLevel != "logical" {
		return nil, fmt.Errorf("wal_level is %q: set wal_level = logical in postgresql.conf and restart PostgreSQL", walLevel)
	}

	rep := &SetupReport{}
	// Tables that would break the primary once published.
	rows, err := conn.Query(ctx, `SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind = 'r' AND c.relpersistence = 'p' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
		  AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp%'
		  AND (c.relreplident = 'n' OR (c.relreplident = 'd' AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)))
		ORDER BY 1`)
	if err != nil {
		return nil, fmt.Errorf("check replica identities: %w", err)
	}
	bad, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("check replica identities: %w", err)
	}
	if len(bad) > 0 && !o.FixReplicaIdentity {
		return nil, &ErrNoReplicaIdentity{Tables: bad}
	}
	for _, t := range bad {
		if _, err := conn.Exec(ctx, "ALTER TABLE "+t+" REPLICA IDENTITY FULL"); err != nil {
			return nil, fmt.Errorf("set REPLICA IDENTITY FULL on %s: %w", t, err)
		}
		rep.FixedTables = append(rep.FixedTables, t)
	}

	var super bool
	if err := conn.QueryRow(ctx, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user").Scan(&super); err != nil {
		return nil, fmt.Errorf("check privileges: %w", err)
	}
	if !super {
		return nil, errors.New("setup needs a superuser: it creates an event trigger that records DDL (without it, a restore across a schema change fails) and a FOR ALL TABLES publication; run setup once as a superuser, the agent itself only needs REPLICATION")
	}
	if _, err := conn.Exec(ctx, captureSQL); err != nil {
		return nil, fmt.Errorf("install DDL capture: %w", err)
	}
	rep.DDLCapture = true
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)", o.Publication).Scan(&exists); err != nil {
		return nil, fmt.Errorf("look up publication: %w", err)
	}
	if !exists {
		if _, err := conn.Exec(ctx, "CREATE PUBLICATION "+pgx.Identifier{o.Publication}.Sanitize()+" FOR ALL TABLES"); err != nil {
			return nil, fmt.Errorf("create publication %s (FOR ALL TABLES needs a superuser): %w", o.Publication, err)
		}
		rep.CreatedPublication = true
	}
	var slotDB *string
	err = conn.QueryRow(ctx, "SELECT database FROM pg_replication_slots WHERE slot_name = $1", o.Slot).Scan(&slotDB)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		var lsn string
		err = conn.QueryRow(ctx, "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')", o.Slot).Scan(&lsn)
		if err != nil {
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && pgErr.Code == "53400" {
				return nil, fmt.Errorf("create slot %s: %w (raise max_replication_slots)", o.Slot, err)
			}
			return nil, fmt.Errorf("create slot %s: %w", o.Slot, err)
		}
		rep.CreatedSlot, rep.SlotLSN = true, lsn
	case err != nil:
		return nil, fmt.Errorf("look up slot %s: %w", o.Slot, err)
	default:
		var db string
		if err := conn.QueryRow(ctx, "SELECT current_database()").Scan(&db); err != nil {
			return nil, err
		}
		if slotDB == nil || *slotDB != db {
			return nil, fmt.Errorf("replication slot %q exists but is not a logical slot of database %q: choose another postgres.slot", o.Slot, db)
		}
	}
	return rep, nil
}
