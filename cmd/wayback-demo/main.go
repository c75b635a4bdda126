// Command wayback-demo shows wayback end to end on a throwaway PostgreSQL
// cluster: setup, the agent shipping to two stores, an accident, and a
// point-in-time restore that brings the data back. It runs the real
// wayback binary for every step and prints each command as a user would
// type it. Run it with `make demo`.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/wayback-pitr/wayback/testenv"
)

func main() {
	bin := flag.String("wayback", "bin/wayback", "path of the wayback binary")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *bin); err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
}

func step(format string, args ...any) { fmt.Printf("\n== "+format+"\n", args...) }

func run(ctx context.Context, bin string) error {
	bin, err := filepath.Abs(bin)
	if err != nil {
		return err
	}
	step("starting a throwaway PostgreSQL 15 cluster (wal_level=logical)")
	pg, err := testenv.StartCluster(ctx, testenv.Options{})
	if err != nil {
		return err
	}
	defer pg.Close()
	work, err := os.MkdirTemp("", "wayback-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	if err := pg.CreateDatabase(ctx, "shop"); err != nil {
		return err
	}
	dsn := pg.DSN("shop")
	step("two clouds on loopback: an S3 server and a GCS server (in-process, real HTTP APIs)")
	s3, err := testenv.StartS3(ctx, testenv.S3Options{Buckets: []string{"shop-backups"}})
	if err != nil {
		return err
	}
	defer s3.Close()
	gcs, err := testenv.StartGCS(ctx, testenv.GCSOptions{Buckets: []string{"shop-backups"}})
	if err != nil {
		return err
	}
	defer gcs.Close()
	fmt.Printf("S3  at %s\nGCS at %s\n", s3.Endpoint(), gcs.Endpoint())
	cfgPath := filepath.Join(work, "wayback.yaml")
	cfg := fmt.Sprintf("postgres:\n  dsn: %s\nstores:\n  - %q\n  - %q\nflush_interval: 250ms\n", dsn, s3.URL("shop-backups", "shop"), gcs.URL("shop-backups", "shop"))
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return err
	}
	fmt.Printf("config %s:\n%s", cfgPath, indent(cfg))

	sql := func(q string) error { return testenv.Exec(ctx, dsn, q) }
	wayback := func(args ...string) error {
		fmt.Printf("$ wayback %s\n", strings.Join(args, " "))
		cmd := exec.CommandContext(ctx, bin, append(args, "--config", cfgPath)...)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stdout
		return cmd.Run()
	}

	step("a small shop database")
	if err := sql(`CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, email text);
		CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id int REFERENCES customers ON DELETE CASCADE,
		  status text NOT NULL DEFAULT 'new', total numeric(10,2), placed timestamptz DEFAULT now());
		INSERT INTO customers (name, email) SELECT 'customer ' || g, 'c' || g || '@example.com' FROM generate_series(1, 200) g;
		INSERT INTO orders (customer_id, total) SELECT 1 + g % 200, (g % 97) * 1.25 FROM generate_series(1, 5000) g;`); err != nil {
		return err
	}

	step("wayback setup: publication, replication slot")
	if err := wayback("setup"); err != nil {
		return err
	}
	step("wayback agent: streams every commit to both stores (first start takes a base backup)")
	fmt.Printf("$ wayback agent --config %s &\n", cfgPath)
	agentLog := filepath.Join(work, "agent.log")
	lf, err := os.Create(agentLog)
	if err != nil {
		return err
	}
	agent := exec.Command(bin, "agent", "--config", cfgPath)
	agent.Stdout, agent.Stderr = lf, lf
	if err := agent.Start(); err != nil {
		return err
	}
	defer func() {
		agent.Process.Signal(syscall.SIGTERM)
		agent.Wait()
		lf.Close()
	}()
	if err := waitFor(ctx, 60*time.Second, func() bool {
		out, err := exec.CommandContext(ctx, bin, "list", "--json", "--config", cfgPath).Output()
		var l struct {
			Stores []struct{ Backups []string } `json:"stores"`
		}
		if err != nil || json.Unmarshal(out, &l) != nil || len(l.Stores) != 2 {
			return false
		}
		return len(l.Stores[0].Backups) > 0 && len(l.Stores[1].Backups) > 0
	}); err != nil {
		b, _ := os.ReadFile(agentLog)
		return fmt.Errorf("no base backup appeared: %w\nagent log:\n%s", err, b)
	}

	step("business as usual: new orders, payments")
	for i := 0; i < 20; i++ {
		if err := sql(fmt.Sprintf(`INSERT INTO orders (customer_id, total) VALUES (%d, %d.50); UPDATE orders SET status = 'paid' WHERE id %% 20 = %d`, 1+i*7, 10+i, i)); err != nil {
			return err
		}
	}
	time.Sleep(50 * time.Millisecond)
	before, err := serverTime(ctx, dsn)
	if err != nil {
		return err
	}
	want, err := testenv.Checksums(ctx, dsn)
	if err != nil {
		return err
	}
	fmt.Printf("the time is now %s: remember it\n", before)
	time.Sleep(50 * time.Millisecond)

	step("the accident")
	fmt.Println("psql> DELETE FROM orders;   -- forgot the WHERE clause")
	if err := sql(`DELETE FROM orders`); err != nil {
		return err
	}
	left, _ := testenv.QueryRows(ctx, dsn, "SELECT count(*) FROM orders")
	fmt.Printf("orders left: %s\n", left[0][0])
	if err := syncArchive(ctx, dsn); err != nil {
		return err
	}

	step("wayback list: what the archive holds")
	if err := wayback("list"); err != nil {
		return err
	}
	step("wayback restore: the database as it was just before the accident, into a new database")
	target := pg.DSN("shop_restored")
	if err := wayback("restore", "--target-dsn", target, "--to-time", before); err != nil {
		return err
	}

	step("checking the restore against the source's content at %s, table by table", before)
	got, err := testenv.Checksums(ctx, target)
	if err != nil {
		return err
	}
	names := make([]string, 0, len(want))
	for n := range want {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Printf("  %-20s source %6d rows %s   restored %6d rows %s\n", n, want[n].Rows, want[n].Sum[:12], got[n].Rows, got[n].Sum[:12])
	}
	if d := testenv.DiffChecksums(want, got); d != "" {
		return fmt.Errorf("restored data differs:\n%s", d)
	}
	fmt.Println("\nrestored database matches the source at that instant: every order is back.")
	return nil
}

// syncArchive waits until everything committed is durable in the stores.
func syncArchive(ctx context.Context, dsn string) error {
	rows, err := testenv.QueryRows(ctx, dsn, "SELECT pg_logical_emit_message(true, 'wayback-demo', 'sync')::text")
	if err != nil {
		return err
	}
	marker := rows[0][0]
	return waitFor(ctx, 60*time.Second, func() bool {
		r, err := testenv.QueryRows(ctx, dsn, "SELECT (confirmed_flush_lsn > $1::pg_lsn)::text FROM pg_replication_slots WHERE slot_name = 'wayback'", marker)
		return err == nil && len(r) == 1 && r[0][0] == "true"
	})
}

func serverTime(ctx context.Context, dsn string) (string, error) {
	rows, err := testenv.QueryRows(ctx, dsn, `SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`)
	if err != nil {
		return "", err
	}
	return rows[0][0], nil
}

func waitFor(ctx context.Context, limit time.Duration, ok func() bool) error {
	deadline := time.Now().Add(limit)
	for !ok() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s", limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ") + "\n"
}
