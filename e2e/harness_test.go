// Package e2e drives the real wayback binary against real PostgreSQL 15
// clusters and file:// stores: what a user runs is what is tested, exit
// codes and error lines included.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wayback-pitr/wayback/testenv"
)

var waybackBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "wayback-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	waybackBin = filepath.Join(dir, "wayback")
	build := exec.Command("go", "build", "-o", waybackBin, "../cmd/wayback")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build wayback:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// env is one source cluster with its archive in two file stores.
type env struct {
	t      *testing.T
	pg     *testenv.Cluster
	dsn    string
	stores []string
	config string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	pg := testenv.NewCluster(t, testenv.Options{})
	dir := t.TempDir()
	e := &env{t: t, pg: pg, dsn: pg.DSN("app")}
	if err := pg.CreateDatabase(t.Context(), "app"); err != nil {
		t.Fatal(err)
	}
	e.stores = []string{"file://" + filepath.Join(dir, "store-a"), "file://" + filepath.Join(dir, "store-b")}
	e.config = filepath.Join(dir, "wayback.yaml")
	cfg := fmt.Sprintf("postgres:\n  dsn: %q\nstores:\n  - %s\n  - %s\nflush_interval: 200ms\n", e.dsn, e.stores[0], e.stores[1])
	if err := os.WriteFile(e.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return e
}

// storeDir is the local directory of store i.
func (e *env) storeDir(i int) string { return strings.TrimPrefix(e.stores[i], "file://") }

type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// run runs wayback with the env's config plus args.
func (e *env) run(args ...string) result {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.t.Context(), 3*time.Minute)
	defer cancel()
	if !slices.Contains(args, "--config") {
		args = append(args, "--config", e.config)
	}
	cmd := exec.CommandContext(ctx, waybackBin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatalf("run wayback %v: %v", args, err)
	}
	return r
}

func (e *env) mustRun(args ...string) string {
	e.t.Helper()
	r := e.run(args...)
	if r.code != 0 {
		e.t.Fatalf("wayback %s failed:\n%s", strings.Join(args, " "), r)
	}
	return r.stdout
}

func (e *env) exec(sql string, args ...any) {
	e.t.Helper()
	if err := testenv.Exec(e.t.Context(), e.dsn, sql, args...); err != nil {
		e.t.Fatalf("%v", err)
	}
}

func (e *env) query1(sql string, args ...any) string {
	e.t.Helper()
	rows, err := testenv.QueryRows(e.t.Context(), e.dsn, sql, args...)
	if err != nil || len(rows) != 1 || len(rows[0]) != 1 {
		e.t.Fatalf("query %q: %v (%d rows)", sql, err, len(rows))
	}
	return rows[0][0]
}

// agentProc is a running `wayback agent`.
type agentProc struct {
	cmd  *exec.Cmd
	log  string
	done chan error
}

func (e *env) startAgent(extra ...string) *agentProc {
	e.t.Helper()
	logf, err := os.CreateTemp(e.t.TempDir(), "agent-*.log")
	if err != nil {
		e.t.Fatal(err)
	}
	cmd := exec.Command(waybackBin, append([]string{"agent", "--config", e.config, "--log-format", "json"}, extra...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	p := &agentProc{cmd: cmd, log: logf.Name(), done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait(); logf.Close() }()
	e.t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if e.t.Failed() {
			b, _ := os.ReadFile(p.log)
			e.t.Logf("agent log:\n%s", tail(string(b), 40))
		}
	})
	return p
}

func (p *agentProc) kill9(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.done
	p.done <- nil // keep Cleanup's receive from blocking
}

func (p *agentProc) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		p.done <- nil
		if err != nil {
			b, _ := os.ReadFile(p.log)
			t.Fatalf("agent exited with %v after SIGTERM:\n%s", err, tail(string(b), 20))
		}
	case <-time.After(60 * time.Second):
		t.Fatal("agent did not stop within 60s of SIGTERM")
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// waitArchived blocks until everything committed so far is durable in the
// archive: it commits a marker message and waits for the slot (which the
// agent advances only past durable data) to pass it.
func (e *env) waitArchived() {
	e.t.Helper()
	marker := e.query1("SELECT pg_logical_emit_message(true, 'wayback-test', 'sync')::text")
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		if e.query1("SELECT (confirmed_flush_lsn > $1::pg_lsn)::text FROM pg_replication_slots WHERE slot_name = 'wayback'", marker) == "true" {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	e.t.Fatalf("archive did not reach LSN %s within 90s", marker)
}

// waitBackup waits until the archive holds n complete base backups.
func (e *env) waitBackup(n int) {
	e.t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		// The file stores are read directly (other kinds, e.g. S3 in the
		// encryption test, get the manifest in the same fan-out).
		done := true
		for i, u := range e.stores {
			if !strings.HasPrefix(u, "file://") {
				continue
			}
			m, _ := filepath.Glob(filepath.Join(e.storeDir(i), "backups", "*", "manifest.json"))
			done = done && len(m) >= n
		}
		if done {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	e.t.Fatalf("archive did not get %d base backups within 90s", n)
}

// checkpoint is the source's content at an instant.
type checkpoint struct {
	name string
	at   time.Time
	sums map[string]testenv.TableSum
}

// checkpoint records the source's content and the server time now. No
// transaction may commit between the two reads, so callers quiesce writes.
func (e *env) checkpoint(name string) checkpoint {
	e.t.Helper()
	time.Sleep(5 * time.Millisecond)
	at, err := time.Parse(time.RFC3339Nano, e.query1(`SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`))
	if err != nil {
		e.t.Fatal(err)
	}
	sums, err := testenv.Checksums(e.t.Context(), e.dsn)
	if err != nil {
		e.t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond)
	return checkpoint{name: name, at: at, sums: sums}
}

// assertRestored compares a restored database with a checkpoint, table by
// table.
func (e *env) assertRestored(db string, want map[string]testenv.TableSum, what string) {
	e.t.Helper()
	got, err := testenv.Checksums(e.t.Context(), e.pg.DSN(db))
	if err != nil {
		e.t.Fatal(err)
	}
	if d := testenv.DiffChecksums(want, got); d != "" {
		e.t.Fatalf("%s: restored database %s differs from the source:\n%s", what, db, d)
	}
	if len(want) == 0 {
		e.t.Fatalf("%s: nothing to compare", what)
	}
}

func (e *env) dbExists(name string) bool {
	e.t.Helper()
	rows, err := testenv.QueryRows(e.t.Context(), e.pg.DSN("postgres"), "SELECT 1 FROM pg_database WHERE datname = $1", name)
	if err != nil {
		e.t.Fatal(err)
	}
	return len(rows) == 1
}
