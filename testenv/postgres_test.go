package testenv

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func mustExec(t *testing.T, ctx context.Context, dsn, sql string, args ...any) {
	t.Helper()
	if err := Exec(ctx, dsn, sql, args...); err != nil {
		t.Fatal(err)
	}
}

func queryOne(t *testing.T, ctx context.Context, dsn, sql string, args ...any) string {
	t.Helper()
	rows, err := QueryRows(ctx, dsn, sql, args...)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 || len(rows[0]) != 1 {
		t.Fatalf("%s: want one value, got %q", sql, rows)
	}
	return rows[0][0]
}

func TestServerSettings(t *testing.T) {
	t.Parallel()
	c := NewCluster(t, Options{Settings: map[string]string{"work_mem": "7MB", "application_name": "it's"}})
	ctx := t.Context()
	dsn := c.DSN("")
	for setting, want := range map[string]string{
		"wal_level":             "logical",
		"max_wal_senders":       "20",
		"max_replication_slots": "20",
		"fsync":                 "off",
		"synchronous_commit":    "off",
		"full_page_writes":      "off",
		"listen_addresses":      "127.0.0.1",
		"port":                  strconv.Itoa(c.Port),
		"shared_buffers":        "128MB",
		"max_connections":       "100",
		"server_encoding":       "UTF8",
		"lc_collate":            "C",
		"work_mem":              "7MB",
		"application_name":      "it's", // quoting in postgresql.conf
		"data_directory":        c.DataDir,
	} {
		if setting == "application_name" {
			// The session's own application_name wins; read the file's.
			got := queryOne(t, ctx, dsn, "SELECT reset_val FROM pg_settings WHERE name = $1", setting)
			if got != want {
				t.Errorf("%s = %q, want %q", setting, got, want)
			}
			continue
		}
		if got := queryOne(t, ctx, dsn, "SHOW "+setting); got != want {
			t.Errorf("SHOW %s = %q, want %q", setting, got, want)
		}
	}
	if v := queryOne(t, ctx, dsn, "SELECT current_setting('server_version_num')::int / 10000"); v != "15" {
		t.Errorf("server major version %s, want 15", v)
	}
	if !strings.HasPrefix(c.DSN("app"), "postgres://postgres@127.0.0.1:"+strconv.Itoa(c.Port)+"/app?sslmode=disable") {
		t.Errorf("DSN = %q", c.DSN("app"))
	}
	// Replication connections are allowed (pg_hba replication lines).
	cfg, err := pgx.ParseConfig(c.DSN("postgres") + "&replication=database")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("replication connection: %v", err)
	}
	defer conn.Close(ctx)
	res := conn.PgConn().Exec(ctx, "IDENTIFY_SYSTEM")
	if _, err := res.ReadAll(); err != nil {
		t.Fatalf("IDENTIFY_SYSTEM: %v", err)
	}
	// The client tools of the same version reach the server.
	out, err := c.Command(ctx, "psql", "-XAtc", "SELECT 40 + 2", "postgres").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "42" {
		t.Errorf("psql via Command: %v: %q", err, out)
	}
	if st, err := os.Stat(c.Dir); err != nil || st.Mode().Perm() != 0o755 {
		t.Errorf("cluster dir %s: %v, %v", c.Dir, st.Mode(), err)
	}
}

func TestQueryRows(t *testing.T) {
	t.Parallel()
	c := NewCluster(t, Options{})
	ctx := t.Context()
	rows, err := QueryRows(ctx, c.DSN(""), "SELECT $1::int, NULL::text, ''::text, 'NULL', true, '2024-01-02'::date, $2::bytea",
		7, []byte{0xde, 0xad})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"7", Null, "", "NULL", "t", "2024-01-02", `\xdead`}
	if len(rows) != 1 || strings.Join(rows[0], "|") != strings.Join(want, "|") {
		t.Fatalf("got %q, want %q", rows, want)
	}
	rows, err = QueryRows(ctx, c.DSN(""), "SELECT 1 WHERE false")
	if err != nil || rows == nil || len(rows) != 0 {
		t.Fatalf("empty result: %q, %v", rows, err)
	}
	if err := Exec(ctx, c.DSN(""), "SELECT * FROM no_such_table"); err == nil || !strings.Contains(err.Error(), "no_such_table") {
		t.Fatalf("Exec on a missing table: %v", err)
	}
}

// loadShop creates the same logical contents with a different insert order
// (and so a different physical order) depending on reverse.
func loadShop(t *testing.T, ctx context.Context, dsn string, reverse bool) {
	t.Helper()
	mustExec(t, ctx, dsn, `
		CREATE TABLE customers (id int PRIMARY KEY, name text, note text, t int);
		CREATE TABLE "Order Items" (id bigint, customer int, price numeric, at timestamptz, tags text[], data bytea);
		CREATE TABLE events (id int, kind text) PARTITION BY LIST (kind);
		CREATE TABLE events_a PARTITION OF events FOR VALUES IN ('a');
		CREATE TABLE events_b PARTITION OF events FOR VALUES IN ('b');
		CREATE TABLE parent (id int);
		CREATE TABLE child () INHERITS (parent);
		CREATE SCHEMA wayback;
		CREATE TABLE wayback.state (v text);
		CREATE TABLE empty (x int);`)
	order := "ASC"
	if reverse {
		order = "DESC"
	}
	mustExec(t, ctx, dsn, `
		INSERT INTO customers SELECT i, 'name ' || i, CASE WHEN i % 3 = 0 THEN NULL ELSE 'n' END, i % 5
			FROM generate_series(1, 500) i ORDER BY i `+order+`;
		INSERT INTO "Order Items" SELECT i, i % 500 + 1, i * 1.25, '2024-03-01 12:00+02'::timestamptz + i * interval '1 minute',
			ARRAY['x', i::text], decode(md5(i::text), 'hex')
			FROM generate_series(1, 2000) i ORDER BY i `+order+`;
		INSERT INTO "Order Items" VALUES (1, 2, 1.25, NULL, NULL, NULL), (1, 2, 1.25, NULL, NULL, NULL);
		INSERT INTO events SELECT i, CASE WHEN i % 2 = 0 THEN 'a' ELSE 'b' END FROM generate_series(1, 100) i ORDER BY i `+order+`;
		INSERT INTO parent SELECT generate_series(1, 10);
		INSERT INTO child SELECT generate_series(11, 20);`)
	if reverse {
		// Make the physical layout differ further and exercise dead tuples.
		mustExec(t, ctx, dsn, `UPDATE customers SET name = name WHERE id % 7 = 0`)
		mustExec(t, ctx, dsn, `VACUUM customers`)
	}
	// Bookkeeping in the wayback schema is expected to differ.
	mustExec(t, ctx, dsn, "INSERT INTO wayback.state VALUES ($1)", strconv.FormatBool(reverse))
}

func TestChecksums(t *testing.T) {
	t.Parallel()
	c := NewCluster(t, Options{})
	ctx := t.Context()
	for _, db := range []string{"a", "b b"} {
		if err := c.CreateDatabase(ctx, db); err != nil {
			t.Fatal(err)
		}
	}
	loadShop(t, ctx, c.DSN("a"), false)
	loadShop(t, ctx, c.DSN("b b"), true)

	want, err := Checksums(ctx, c.DSN("a"))
	if err != nil {
		t.Fatal(err)
	}
	wantTables := []string{"public.Order Items", "public.child", "public.customers", "public.empty",
		"public.events_a", "public.events_b", "public.parent"}
	var gotTables []string
	for k := range want {
		gotTables = append(gotTables, k)
	}
	slices.Sort(gotTables)
	if strings.Join(gotTables, ",") != strings.Join(wantTables, ",") {
		t.Fatalf("tables %q, want %q", gotTables, wantTables)
	}
	for name, rows := range map[string]int64{"public.customers": 500, "public.Order Items": 2002,
		"public.events_a": 50, "public.parent": 10, "public.child": 10, "public.empty": 0} {
		if want[name].Rows != rows {
			t.Errorf("%s: %d rows, want %d", name, want[name].Rows, rows)
		}
		if len(want[name].Sum) != 32 {
			t.Errorf("%s: sum %q is not a 32-digit digest", name, want[name].Sum)
		}
	}
	if want["public.parent"].Sum == want["public.child"].Sum {
		t.Errorf("parent and child have the same sum; ONLY missing?")
	}

	got, err := Checksums(ctx, c.DSN("b b"))
	if err != nil {
		t.Fatal(err)
	}
	if d := DiffChecksums(want, got); d != "" {
		t.Fatalf("identical contents loaded in a different order differ:\n%s", d)
	}

	// The session's formatting settings must not matter.
	mustExec(t, ctx, c.DSN("b b"), `ALTER DATABASE "b b" SET TimeZone = 'Asia/Kolkata'; ALTER DATABASE "b b" SET DateStyle = 'SQL, DMY'; ALTER DATABASE "b b" SET extra_float_digits = -3`)
	got, err = Checksums(ctx, c.DSN("b b"))
	if err != nil {
		t.Fatal(err)
	}
	if d := DiffChecksums(want, got); d != "" {
		t.Fatalf("session settings changed checksums:\n%s", d)
	}

	// One changed value in one row.
	mustExec(t, ctx, c.DSN("b b"), `UPDATE "Order Items" SET price = price + 0.01 WHERE id = 1000`)
	got, err = Checksums(ctx, c.DSN("b b"))
	if err != nil {
		t.Fatal(err)
	}
	d := DiffChecksums(want, got)
	if d == "" || !strings.Contains(d, "public.Order Items") || strings.Count(d, "\n") != 0 {
		t.Fatalf("diff after changing one row should name exactly that table, got:\n%s", d)
	}
	if got["public.Order Items"].Rows != want["public.Order Items"].Rows {
		t.Errorf("row count changed by an UPDATE")
	}

	// Removing one of two duplicate rows is visible (a XOR would miss it).
	mustExec(t, ctx, c.DSN("b b"), `UPDATE "Order Items" SET price = price - 0.01 WHERE id = 1000;
		DELETE FROM "Order Items" WHERE ctid = (SELECT min(ctid) FROM "Order Items" WHERE at IS NULL)`)
	got, err = Checksums(ctx, c.DSN("b b"))
	if err != nil {
		t.Fatal(err)
	}
	d = DiffChecksums(want, got)
	if !strings.Contains(d, "public.Order Items: want 2002 rows, got 2001") {
		t.Fatalf("diff after deleting a duplicate:\n%s", d)
	}

	// Swapping values between two rows keeps the multiset of columns but
	// changes the rows.
	mustExec(t, ctx, c.DSN("b b"), `INSERT INTO "Order Items" VALUES (1, 2, 1.25, NULL, NULL, NULL);
		UPDATE customers SET name = CASE id WHEN 1 THEN 'name 2' ELSE 'name 1' END WHERE id IN (1, 2)`)
	got, err = Checksums(ctx, c.DSN("b b"))
	if err != nil {
		t.Fatal(err)
	}
	if d := DiffChecksums(want, got); !strings.Contains(d, "public.customers") || strings.Contains(d, "Order Items") {
		t.Fatalf("diff after swapping names:\n%s", d)
	}

	mustExec(t, ctx, c.DSN("b b"), `DROP TABLE empty; CREATE TABLE extra (x int)`)
	got, err = Checksums(ctx, c.DSN("b b"))
	if err != nil {
		t.Fatal(err)
	}
	d = DiffChecksums(want, got)
	for _, s := range []string{"missing table public.empty", "extra table public.extra", "public.customers"} {
		if !strings.Contains(d, s) {
			t.Errorf("diff lacks %q:\n%s", s, d)
		}
	}
	if DiffChecksums(nil, nil) != "" || DiffChecksums(want, want) != "" {
		t.Errorf("DiffChecksums of equal inputs is not empty")
	}
}

func TestChecksumsSnapshot(t *testing.T) {
	t.Parallel()
	c := NewCluster(t, Options{})
	ctx := t.Context()
	dsn := c.DSN("")
	mustExec(t, ctx, dsn, "CREATE TABLE a (x int); CREATE TABLE b (x int); INSERT INTO a VALUES (1); INSERT INTO b VALUES (1)")

	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "SET LOCAL TimeZone = 'Asia/Tokyo'"); err != nil {
		t.Fatal(err)
	}
	before, err := ChecksumsTx(ctx, tx)
	if err != nil {
		t.Fatal(err)
	}
	// Writes committed meanwhile are invisible to the same transaction.
	mustExec(t, ctx, dsn, "INSERT INTO a VALUES (2); INSERT INTO b VALUES (2)")
	again, err := ChecksumsTx(ctx, tx)
	if err != nil {
		t.Fatal(err)
	}
	if d := DiffChecksums(before, again); d != "" {
		t.Fatalf("checksums in one repeatable-read transaction changed:\n%s", d)
	}
	// The caller's session settings survive.
	var tz string
	if err := tx.QueryRow(ctx, "SHOW TimeZone").Scan(&tz); err != nil || tz != "Asia/Tokyo" {
		t.Fatalf("TimeZone after ChecksumsTx = %q, %v", tz, err)
	}
	after, err := Checksums(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	if after["public.a"].Rows != 2 || after["public.b"].Rows != 2 {
		t.Fatalf("new transaction does not see the inserts: %+v", after)
	}
}

func TestKillStart(t *testing.T) {
	t.Parallel()
	c := NewCluster(t, Options{})
	ctx := t.Context()
	dsn := c.DSN("")
	// synchronous_commit=off would allow losing the last commits in a crash.
	mustExec(t, ctx, dsn, "CREATE TABLE survivor (id int); SET synchronous_commit = on; INSERT INTO survivor SELECT generate_series(1, 1000)")
	want, err := Checksums(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}

	// Hold a connection open so there is a backend to kill too.
	held, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close(context.Background())

	pid := postmasterPID(t, c)
	port := c.Port
	if err := c.Kill(); err != nil {
		t.Fatal(err)
	}
	if processAlive(pid) {
		t.Fatalf("postmaster %d still alive after Kill", pid)
	}
	if left := procsMatching(func(_, pgrp int) bool { return pgrp == pid }); len(left) > 0 {
		for _, p := range left {
			if processAlive(p) {
				t.Fatalf("server process %d survived Kill", p)
			}
		}
	}
	if err := held.Ping(ctx); err == nil {
		t.Fatal("connection still works after Kill")
	}
	if _, err := os.Stat(filepath.Join(c.DataDir, "postmaster.pid")); err != nil {
		t.Fatalf("Kill should leave the stale postmaster.pid of a crash: %v", err)
	}
	if err := c.Kill(); err != nil {
		t.Fatalf("second Kill: %v", err)
	}
	if err := c.Stop(ctx); err != nil {
		t.Fatalf("Stop after Kill: %v", err)
	}

	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if c.Port != port {
		t.Fatalf("port changed from %d to %d", port, c.Port)
	}
	got, err := Checksums(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	if d := DiffChecksums(want, got); d != "" {
		t.Fatalf("data changed across Kill/Start:\n%s", d)
	}
	if newPID := postmasterPID(t, c); newPID == pid {
		t.Fatalf("postmaster pid %d unchanged; Start did not restart", pid)
	}
}

func TestStopStart(t *testing.T) {
	t.Parallel()
	c := NewCluster(t, Options{})
	ctx := t.Context()
	dsn := c.DSN("")
	mustExec(t, ctx, dsn, "CREATE TABLE kept AS SELECT generate_series(1, 100) AS id")
	if err := c.Start(ctx); err != nil {
		t.Fatalf("Start while running: %v", err)
	}
	if err := c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Stop(ctx); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if _, err := os.Stat(filepath.Join(c.DataDir, "postmaster.pid")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("postmaster.pid after a clean stop: %v", err)
	}
	if err := Exec(ctx, dsn, "SELECT 1"); err == nil {
		t.Fatal("server still answers after Stop")
	}
	if err := c.Kill(); err == nil {
		t.Fatal("Kill of a stopped cluster should fail")
	}
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if n := queryOne(t, ctx, dsn, "SELECT count(*) FROM kept"); n != "100" {
		t.Fatalf("after restart: %s rows", n)
	}
}

func TestClose(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	c, err := StartCluster(ctx, Options{})
	if err != nil {
		t.Fatal(err)
	}
	pid := postmasterPID(t, c)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(c.Dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("cluster dir after Close: %v", err)
	}
	if processAlive(pid) {
		t.Fatalf("postmaster %d alive after Close", pid)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := c.Start(ctx); err == nil {
		t.Fatal("Start after Close should fail")
	}

	// Close after Kill, and Close of a stopped cluster.
	for _, prep := range []func(*Cluster) error{
		func(c *Cluster) error { return c.Kill() },
		func(c *Cluster) error { return c.Stop(ctx) },
	} {
		c, err := StartCluster(ctx, Options{})
		if err != nil {
			t.Fatal(err)
		}
		shm := shmemID(t, c)
		if err := prep(c); err != nil {
			t.Fatal(err)
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		if table, err := os.ReadFile("/proc/sysvipc/shm"); err == nil && shm != "" {
			for _, line := range strings.Split(string(table), "\n") {
				if f := strings.Fields(line); len(f) > 1 && f[1] == shm {
					t.Errorf("shared memory segment %s survived Close: %s", shm, line)
				}
			}
		}
		if _, err := os.Stat(c.Dir); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("cluster dir after Close: %v", err)
		}
	}
}

func TestNewClusterCleanup(t *testing.T) {
	t.Parallel()
	var dir string
	var pid int
	t.Run("inner", func(t *testing.T) {
		c := NewCluster(t, Options{})
		dir = c.Dir
		pid = postmasterPID(t, c)
	})
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("cluster dir %s after the test ended: %v", dir, err)
	}
	if processAlive(pid) {
		t.Fatalf("postmaster %d alive after the test ended", pid)
	}
}

func TestStartFailure(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	parent := publicTempDir(t)
	_, err := StartCluster(ctx, Options{TempDir: parent, Settings: map[string]string{"shared_buffers": "lots"}})
	if err == nil {
		t.Fatal("start with an invalid setting succeeded")
	}
	if !strings.Contains(err.Error(), "shared_buffers") {
		t.Fatalf("error lacks the server log explanation: %v", err)
	}
	if entries, _ := os.ReadDir(parent); len(entries) != 0 {
		t.Fatalf("failed start left %d entries in %s", len(entries), parent)
	}

	if _, err := StartCluster(ctx, Options{Settings: map[string]string{"port": "5432"}}); err == nil {
		t.Fatal("overriding port should fail")
	}
	if _, err := StartCluster(ctx, Options{Settings: map[string]string{"a = 1\nb": "x"}}); err == nil {
		t.Fatal("a malformed setting name should fail")
	}
	if _, err := StartCluster(ctx, Options{BinDir: t.TempDir()}); err == nil || !strings.Contains(err.Error(), "initdb") {
		t.Fatalf("empty BinDir: %v", err)
	}
	if os.Geteuid() == 0 {
		private := t.TempDir() // 0700, root-owned
		_, err := StartCluster(ctx, Options{TempDir: private})
		if err == nil || !strings.Contains(err.Error(), "not traversable") {
			t.Fatalf("root-only TempDir: %v", err)
		}
		if entries, _ := os.ReadDir(private); len(entries) != 0 {
			t.Fatalf("failed start left files in %s", private)
		}
	}
}

func TestStartCanceled(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), time.Millisecond)
	defer cancel()
	parent := publicTempDir(t)
	if _, err := StartCluster(ctx, Options{TempDir: parent}); err == nil {
		t.Fatal("start with an expired context succeeded")
	}
	if entries, _ := os.ReadDir(parent); len(entries) != 0 {
		t.Fatalf("canceled start left files in %s", parent)
	}
}

func postmasterPID(t *testing.T, c *Cluster) int {
	t.Helper()
	pid, err := c.PostmasterPID()
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, 0); err != nil {
		t.Fatalf("postmaster %d: %v", pid, err)
	}
	return pid
}

// publicTempDir is a temporary directory the server user can traverse even
// when the test runs as root (t.TempDir's parent is private to root).
func publicTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "testenv-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// shmemID returns the System V shared memory id from postmaster.pid.
func shmemID(t *testing.T, c *Cluster) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(c.DataDir, "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	if len(lines) < 7 || len(strings.Fields(lines[6])) != 2 {
		t.Fatalf("unexpected postmaster.pid:\n%s", b)
	}
	return strings.Fields(lines[6])[1]
}

// processAlive treats zombies as dead, as the cluster code does: a killed
// postmaster is not our child and may stay a zombie in containers.
func processAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 || i+2 >= len(b) {
		return false
	}
	return b[i+2] != 'Z' && b[i+2] != 'X'
}

// procsMatching lists the processes whose parent and process group match.
func procsMatching(match func(ppid, pgrp int) bool) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 3 {
			continue
		}
		ppid, err1 := strconv.Atoi(f[1])
		pgrp, err2 := strconv.Atoi(f[2])
		if err1 == nil && err2 == nil && match(ppid, pgrp) {
			pids = append(pids, p)
		}
	}
	return pids
}
