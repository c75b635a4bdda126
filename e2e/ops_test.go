package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// freeAddr returns a loopback host:port nobody listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// scrape returns the value of every sample in addr's /metrics, keyed by
// name{labels}.
func scrape(t *testing.T, addr string) (map[string]float64, error) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out, nil
}

// waitMetric polls until cond holds for the scraped metrics.
func waitMetric(t *testing.T, addr, what string, cond func(m map[string]float64) bool) map[string]float64 {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var last map[string]float64
	for time.Now().Before(deadline) {
		m, err := scrape(t, addr)
		if err == nil {
			last = m
			if cond(m) {
				return m
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("metrics never showed %s; last scrape: %v", what, last)
	return nil
}

// waitExit waits for an agent that must stop on its own and returns its
// log.
func (p *agentProc) waitExit(t *testing.T) (int, string) {
	t.Helper()
	select {
	case err := <-p.done:
		p.done <- nil
		b, _ := os.ReadFile(p.log)
		code := 0
		if err != nil {
			code = -1
			if ee, ok := err.(interface{ ExitCode() int }); ok {
				code = ee.ExitCode()
			}
		}
		return code, string(b)
	case <-time.After(90 * time.Second):
		t.Fatal("agent did not exit within 90s")
		return 0, ""
	}
}

// TestSlotSafety: the agent never resumes over a gap. A slot advanced by
// someone else, an invalidated slot (max_slot_wal_keep_size) and a dropped
// slot each stop it with a non-zero exit and a message saying how to
// recover; the documented recovery (setup, backup) works, and the restored
// data after recovery is exact.
func TestSlotSafety(t *testing.T) {
	e := newEnv(t)
	e.mustRun("setup")
	e.exec("CREATE TABLE t (id int PRIMARY KEY, v text)")
	addr := freeAddr(t)
	ag := e.startAgent("--metrics-listen", addr)
	e.exec("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 500) g")
	e.waitBackup(1)
	e.waitArchived()
	m := waitMetric(t, addr, "streaming with the slot reserved", func(m map[string]float64) bool {
		return m["wayback_streaming"] == 1 && m[`wayback_slot_wal_status{wal_status="reserved"}`] == 1
	})
	if m["wayback_basebackup_age_seconds"] < 0 {
		t.Errorf("base backup age %v after a backup", m["wayback_basebackup_age_seconds"])
	}
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("/readyz while streaming: %v %v", resp, err)
	}
	resp.Body.Close()
	ag.stop(t)

	// 1. Someone else advances the slot past what the archive holds.
	// Synchronous commit (testenv runs with it off): the slot can only be
	// advanced up to flushed WAL, and the WAL writer may not have flushed
	// the INSERT yet.
	e.exec("SET synchronous_commit = on; INSERT INTO t SELECT g, 'unarchived' FROM generate_series(501, 600) g")
	afterRows := e.query1("SELECT pg_current_wal_flush_lsn()")
	e.exec("SELECT pg_replication_slot_advance('wayback', pg_current_wal_lsn())")
	if got := e.query1("SELECT confirmed_flush_lsn >= '" + afterRows + "' FROM pg_replication_slots WHERE slot_name = 'wayback'"); got != "t" {
		t.Fatalf("could not advance the slot past the unarchived rows (flushed to %s)", afterRows)
	}
	code, log := e.startAgent().waitExit(t)
	if code != 3 || !strings.Contains(log, "acknowledged without being archived") || !strings.Contains(log, "wayback backup") {
		t.Fatalf("advanced slot: want exit status 3 (needs an operator) saying data was acknowledged without being archived, got exit %d:\n%s", code, tail(log, 10))
	}
	// --log-format json: every log line is one JSON object (the final
	// error is the one plain "wayback:" line).
	for _, line := range strings.Split(strings.TrimSpace(log), "\n") {
		if !strings.HasPrefix(line, "wayback: ") && !json.Valid([]byte(line)) {
			t.Errorf("--log-format json wrote a non-JSON line: %q", line)
		}
	}
	// Recovery: a new base backup covers the gap; the agent then resumes.
	e.mustRun("backup")
	ag = e.startAgent()
	e.exec("INSERT INTO t VALUES (601, 'after recovery')")
	e.waitArchived()
	ag.stop(t)

	// 2. The slot is invalidated: max_slot_wal_keep_size is exceeded while
	// the agent is down.
	e.exec("ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'")
	e.exec("SELECT pg_reload_conf()")
	for i := 0; i < 20 && e.query1("SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'wayback'") != "lost"; i++ {
		e.exec("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1000000 + $1::int * 1000, 1000000 + $1::int * 1000 + 999) g", i)
		e.exec("SELECT pg_switch_wal()")
		e.exec("CHECKPOINT")
	}
	if st := e.query1("SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'wayback'"); st != "lost" {
		t.Fatalf("could not invalidate the slot: wal_status %s", st)
	}
	code, log = e.startAgent().waitExit(t)
	if code != 3 || !strings.Contains(log, "invalidated") || !strings.Contains(log, "wayback setup") || !strings.Contains(log, "wayback verify") {
		t.Fatalf("lost slot: want exit status 3 with recovery steps, got exit %d:\n%s", code, tail(log, 10))
	}
	r := e.run("agent", "--log-format", "console")
	if r.code != 3 || !regexp.MustCompile(`(?m)^wayback: .*invalidated.*wayback setup.*wayback backup`).MatchString(r.stderr) {
		t.Fatalf("lost slot: want one 'wayback:' line with the recovery steps:\n%s", r)
	}

	// 3. The slot is dropped while the archive holds data.
	e.exec("ALTER SYSTEM RESET max_slot_wal_keep_size")
	e.exec("SELECT pg_reload_conf()")
	e.exec("SELECT pg_drop_replication_slot('wayback')")
	r = e.run("agent")
	if r.code != 3 || !strings.Contains(r.stderr, "does not exist but the archive holds data") || !strings.Contains(r.stderr, "wayback setup") {
		t.Fatalf("dropped slot: want exit status 3 with recovery steps:\n%s", r)
	}
	// A source that is merely unreachable is worth a restart: status 1,
	// which deploy/systemd/wayback.service restarts on (it stops only on 3).
	r = e.run("agent", "--dsn", "postgres://wayback@127.0.0.1:1/nowhere?connect_timeout=2")
	if r.code != 1 {
		t.Fatalf("unreachable source: want exit status 1 (retryable), got:\n%s", r)
	}
	// The documented recovery: new slot, new base backup, agent.
	e.mustRun("setup")
	e.mustRun("backup")
	ag = e.startAgent()
	e.exec("UPDATE t SET v = 'recovered' WHERE id <= 10")
	e.waitArchived()
	want := e.checkpoint("end")
	ag.stop(t)
	e.mustRun("restore", "--target-dsn", e.pg.DSN("restored"), "--latest")
	e.assertRestored("restored", want.sums, "after slot recovery")
}
