package e2e

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wayback-pitr/wayback/testenv"
)

// withTLS rewrites a testenv DSN (sslmode=disable) to verify the server's
// certificate against ca.
func withTLS(t *testing.T, dsn, ca string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("sslmode", "verify-full")
	q.Set("sslrootcert", ca)
	u.RawQuery = q.Encode()
	return u.String()
}

// TestPostgresTLS runs setup, the agent (normal and replication
// connections, base backup with pg_dump) and restore with
// sslmode=verify-full against a server with a certificate from a private
// CA; the server confirms the agent's connections used TLS, and the same
// commands with another CA fail with one line and no target database.
func TestPostgresTLS(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	tls, err := testenv.NewTLS(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := testenv.EnableTLS(ctx, e.pg, tls); err != nil {
		t.Fatal(err)
	}
	otherDir := filepath.Join(dir, "other")
	os.Mkdir(otherDir, 0o755)
	other, err := testenv.NewTLS(otherDir)
	if err != nil {
		t.Fatal(err)
	}
	cfg := func(name, ca string) string {
		p := filepath.Join(dir, name)
		body := fmt.Sprintf("postgres:\n  dsn: %q\nstores:\n  - %s\n  - %s\nflush_interval: 200ms\n", withTLS(t, e.dsn, ca), e.stores[0], e.stores[1])
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	e.config = cfg("tls.yaml", tls.CAFile)
	wrongCA := cfg("wrong-ca.yaml", other.CAFile)

	// Another CA: refused before anything is set up.
	if r := e.run("setup", "--config", wrongCA); r.code == 0 || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 || !strings.Contains(r.stderr, "certificate") {
		t.Fatalf("setup with another CA: want one line about the certificate, got\n%s", r)
	}

	e.exec(`CREATE TABLE t (id int PRIMARY KEY, v text)`)
	e.exec(`INSERT INTO t SELECT i, md5(i::text) FROM generate_series(1, 500) i`)
	e.mustRun("setup")
	agent := e.startAgent()
	e.waitBackup(1)
	e.exec(`INSERT INTO t SELECT i, md5(i::text) FROM generate_series(501, 900) i`)
	e.exec(`UPDATE t SET v = 'x' WHERE id % 5 = 0`)
	e.waitArchived()
	// The server's view: the walsender and every other wayback backend
	// (everything but this query's own connection) use TLS.
	rows, err := testenv.QueryRows(ctx, e.dsn, `SELECT a.backend_type, s.ssl::text FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
		WHERE a.backend_type IN ('client backend', 'walsender') AND a.pid <> pg_backend_pid()`)
	if err != nil {
		t.Fatal(err)
	}
	walsenders := 0
	for _, r := range rows {
		if r[1] != "true" {
			t.Errorf("a %s connection does not use TLS: %v", r[0], rows)
		}
		if r[0] == "walsender" {
			walsenders++
		}
	}
	if walsenders == 0 {
		t.Fatalf("no walsender while the agent runs: %v", rows)
	}
	cp := e.checkpoint("after the workload")
	agent.stop(t)

	target := withTLS(t, e.pg.DSN("restored"), tls.CAFile)
	e.mustRun("restore", "--target-dsn", target, "--latest")
	e.assertRestored("restored", cp.sums, "restore over verify-full TLS")

	r := e.run("restore", "--target-dsn", withTLS(t, e.pg.DSN("wrong_ca"), other.CAFile), "--latest")
	// Progress lines (the plan) come first; the error is one last line.
	lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
	if last := lines[len(lines)-1]; r.code == 0 || !strings.HasPrefix(last, "wayback: ") || !strings.Contains(last, "certificate") {
		t.Errorf("restore into a server with another CA: want a last line about the certificate, got\n%s", r)
	}
	if e.dbExists("wrong_ca") {
		t.Error("restore with another CA left a target database")
	}
}
