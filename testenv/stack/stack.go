// Package stack starts what a restore drill needs — a PostgreSQL 15 source
// with wal_level=logical, an S3-compatible and a GCS-compatible store, and
// the wayback agent shipping to both — in one of two modes behind one API:
//
//   - Local: throwaway clusters from the machine's PostgreSQL binaries
//     (testenv.NewCluster), in-process S3/GCS servers (testenv.StartS3,
//     testenv.StartGCS) and the agent in-process (wayback.StartAgent).
//   - Containers: the same pieces as containers through testcontainers-go,
//     the agent as the wayback image in a sidecar that shares the database
//     container's network namespace, as a Kubernetes pod runs it. Built
//     only with -tags containers, so `go test ./...` never links Docker's
//     client.
//
// The mode is Options.Mode, else WAYBACK_TESTENV=local|containers, else
// local. Restore drills then compare table checksums with AssertRestoresTo.
package stack

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/wayback-pitr/wayback"
	"github.com/wayback-pitr/wayback/testenv"
)

// Mode says where the stack's pieces run.
type Mode string

// The modes.
const (
	// Local runs everything as processes on this machine.
	Local Mode = "local"
	// Containers runs everything in Docker containers (needs -tags
	// containers and the images; see the README's "Restore drills in CI").
	Containers Mode = "containers"
)

// Default images for container mode, as `make images` tags them. Users on a
// runner with a registry set WAYBACK_POSTGRES_IMAGE=postgres:15 and their
// own wayback image instead.
const (
	DefaultPostgresImage   = "wayback-postgres:15-local"
	DefaultWaybackImage    = "wayback:local"
	DefaultTestStoresImage = "wayback-teststores:local"
)

// Network is how container mode connects its containers.
type Network string

// The container networks.
const (
	// NetworkBridge puts the database and the stores on a private Docker
	// network and publishes their ports to the test process; the agent's
	// sidecar shares the database container's network namespace.
	NetworkBridge Network = "bridge"
	// NetworkHost runs the database and the stores in the host's network
	// namespace on free loopback ports (the sidecar still joins the
	// database container's namespace, which is then the host's). For
	// Docker engines whose published ports the test process cannot reach.
	NetworkHost Network = "host"
)

// Options configure a stack. Zero values are fine.
type Options struct {
	// Mode: "" reads WAYBACK_TESTENV (default Local).
	Mode Mode
	// Database is the source database's name (default "app").
	Database string
	// Container images; "" reads WAYBACK_POSTGRES_IMAGE, WAYBACK_IMAGE and
	// WAYBACK_TESTSTORES_IMAGE, then the Default*Image constants. Images
	// must exist locally: the stack never pulls.
	PostgresImage, WaybackImage, TestStoresImage string
	// Network is container mode's networking; "" reads
	// WAYBACK_TESTENV_NETWORK, then NetworkBridge.
	Network Network
	// MinCopies is how many stores must hold an object before the agent
	// acknowledges it (default 1, so one store may be down).
	MinCopies int
	// FlushInterval is the agent's segment flush interval (default 200ms).
	FlushInterval time.Duration
	// RepairInterval is how often the agent backfills a store that missed
	// objects (default 2s).
	RepairInterval time.Duration
}

// ModeFromEnv returns the mode WAYBACK_TESTENV names; unset or empty is
// Local.
func ModeFromEnv() (Mode, error) {
	switch v := strings.TrimSpace(os.Getenv("WAYBACK_TESTENV")); v {
	case "", string(Local):
		return Local, nil
	case string(Containers):
		return Containers, nil
	default:
		return "", fmt.Errorf("WAYBACK_TESTENV=%q: use local or containers", v)
	}
}

func (o Options) withDefaults() (Options, error) {
	if o.Mode == "" {
		m, err := ModeFromEnv()
		if err != nil {
			return o, err
		}
		o.Mode = m
	}
	if o.Mode != Local && o.Mode != Containers {
		return o, fmt.Errorf("stack mode %q: use local or containers", o.Mode)
	}
	o.Database = cmp.Or(o.Database, "app")
	o.Network = cmp.Or(o.Network, Network(strings.TrimSpace(os.Getenv("WAYBACK_TESTENV_NETWORK"))), NetworkBridge)
	if o.Network != NetworkBridge && o.Network != NetworkHost {
		return o, fmt.Errorf("container network %q (WAYBACK_TESTENV_NETWORK): use bridge or host", o.Network)
	}
	o.PostgresImage = cmp.Or(o.PostgresImage, os.Getenv("WAYBACK_POSTGRES_IMAGE"), DefaultPostgresImage)
	o.WaybackImage = cmp.Or(o.WaybackImage, os.Getenv("WAYBACK_IMAGE"), DefaultWaybackImage)
	o.TestStoresImage = cmp.Or(o.TestStoresImage, os.Getenv("WAYBACK_TESTSTORES_IMAGE"), DefaultTestStoresImage)
	o.MinCopies = cmp.Or(o.MinCopies, 1)
	o.FlushInterval = cmp.Or(o.FlushInterval, 200*time.Millisecond)
	o.RepairInterval = cmp.Or(o.RepairInterval, 2*time.Second)
	return o, nil
}

// backend is one mode's implementation.
type backend interface {
	sourceDSN() string
	storeURLs() []string
	startAgent(ctx context.Context, o Options) error
	stopAgent(ctx context.Context) error
	killDatabase(ctx context.Context) error
	startDatabase(ctx context.Context) error
	pauseStore(ctx context.Context, i int) error
	resumeStore(ctx context.Context, i int) error
	newDatabase(ctx context.Context, t testing.TB, name string) (string, error)
	logs(ctx context.Context) string
	close(ctx context.Context)
}

// Stack is a running source database, two stores and (after StartAgent) an
// agent. Addresses it hands out are reachable from the test process.
type Stack struct {
	// Mode is where the pieces run.
	Mode Mode
	opts Options
	b    backend
}

// New starts a stack for a test and stops it in t.Cleanup; on failure the
// cleanup first logs every container's (or cluster's) output.
func New(t testing.TB, o Options) *Stack {
	t.Helper()
	s, err := Start(t.Context(), t, o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Start is New returning its error; t is used for cleanups and temporary
// directories only.
func Start(ctx context.Context, t testing.TB, o Options) (*Stack, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	var b backend
	switch o.Mode {
	case Local:
		b, err = startLocal(ctx, t, o)
	case Containers:
		b, err = startContainers(ctx, t, o)
	}
	if err != nil {
		return nil, err
	}
	s := &Stack{Mode: o.Mode, opts: o, b: b}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("stack (%s) output after the failure:\n%s", s.Mode, s.b.logs(context.Background()))
		}
		s.b.close(context.Background())
	})
	return s, nil
}

// SourceDSN is the source database's connection string.
func (s *Stack) SourceDSN() string { return s.b.sourceDSN() }

// Stores are the archive's store URLs: an s3:// and a gs:// one.
func (s *Stack) Stores() []string { return s.b.storeURLs() }

// Exec runs SQL on the source database.
func (s *Stack) Exec(ctx context.Context, sql string) error {
	return testenv.Exec(ctx, s.SourceDSN(), sql)
}

// StartAgent sets up the source (publication, slot, DDL capture) and starts
// the agent on both stores; it returns once the first base backup is in the
// archive.
func (s *Stack) StartAgent(ctx context.Context) error {
	if _, err := wayback.Setup(ctx, wayback.SetupOptions{DSN: s.SourceDSN(), Slot: "wayback", Publication: "wayback"}); err != nil {
		return fmt.Errorf("set up the source: %w", err)
	}
	if err := s.b.startAgent(ctx, s.opts); err != nil {
		return fmt.Errorf("start the agent: %w", err)
	}
	return s.waitForBackup(ctx)
}

// StopAgent stops the agent.
func (s *Stack) StopAgent(ctx context.Context) error { return s.b.stopAgent(ctx) }

func (s *Stack) waitForBackup(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for {
		ok, err := s.hasBackup(ctx)
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no base backup in the archive after 2 minutes (last error: %v)", err)
		case <-time.After(300 * time.Millisecond):
		}
	}
}

func (s *Stack) hasBackup(ctx context.Context) (bool, error) {
	arc, err := wayback.Open(ctx, wayback.ArchiveOptions{Stores: s.Stores()})
	if err != nil {
		return false, err
	}
	defer arc.Close()
	cat, err := arc.Catalog(ctx)
	if err != nil {
		return false, err
	}
	return len(cat.Backups) > 0, nil
}

// Sync waits until everything committed on the source before the call is
// acknowledged by the agent, that is durable in MinCopies stores: it writes
// a transactional marker and waits for the slot's confirmed_flush_lsn to
// pass it (the agent acknowledges only what is archived).
func (s *Stack) Sync(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.SourceDSN())
	if err != nil {
		return fmt.Errorf("sync: connect to the source: %w", err)
	}
	defer conn.Close(context.Background())
	var marker string
	if err := conn.QueryRow(ctx, "SELECT pg_logical_emit_message(true, 'wayback.sync', '')::text").Scan(&marker); err != nil {
		return fmt.Errorf("sync: write a marker: %w", err)
	}
	var flushed string
	for {
		var done bool
		err := conn.QueryRow(ctx, `SELECT coalesce(confirmed_flush_lsn::text, ''), coalesce(confirmed_flush_lsn > $1::pg_lsn, false)
			FROM pg_replication_slots WHERE slot_name = 'wayback'`, marker).Scan(&flushed, &done)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("sync: read the slot: %w", err)
		}
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("sync: the agent confirmed LSN %s, waiting for %s: %w", flushed, marker, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// KillDatabase kills the source database without a shutdown (SIGKILL).
func (s *Stack) KillDatabase(ctx context.Context) error { return s.b.killDatabase(ctx) }

// StartDatabase starts the source database again after KillDatabase and
// waits until it accepts connections. In container mode the agent's
// sidecar is restarted too: it shares the database container's network
// namespace, which a restarted container gets anew.
func (s *Stack) StartDatabase(ctx context.Context) error { return s.b.startDatabase(ctx) }

// PauseStore cuts store i (an index into Stores) off: its container is
// paused, or the in-process server holds every request.
func (s *Stack) PauseStore(ctx context.Context, i int) error { return s.b.pauseStore(ctx, i) }

// ResumeStore undoes PauseStore.
func (s *Stack) ResumeStore(ctx context.Context, i int) error { return s.b.resumeStore(ctx, i) }

// NewDatabase returns the DSN of a database that does not exist yet on a
// fresh, empty PostgreSQL server (a new container or cluster), for a
// restore drill to restore into. It is removed when the test ends.
func (s *Stack) NewDatabase(ctx context.Context, t testing.TB, name string) (string, error) {
	return s.b.newDatabase(ctx, t, name)
}

// Logs returns the output of every piece of the stack, newest last.
func (s *Stack) Logs(ctx context.Context) string { return s.b.logs(ctx) }
