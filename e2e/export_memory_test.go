//go:build takeoutbench

package e2e

import (
	"archive/zip"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// TestExportMemory exports a table of WAYBACK_TAKEOUT_MB megabytes (make
// bench-takeout builds it with -tags takeoutbench; it takes minutes, so
// make test leaves it out) and checks that the
// export's peak RSS stays far below the table's size: rows are streamed
// from COPY into the zip, never held. It prints the numbers.
func TestExportMemory(t *testing.T) {
	mb, _ := strconv.Atoi(os.Getenv("WAYBACK_TAKEOUT_MB"))
	if mb <= 0 {
		t.Fatal("set WAYBACK_TAKEOUT_MB (make bench-takeout) to the table size to export")
	}
	e := newEnv(t)
	e.exec(`CREATE TABLE big (id bigint PRIMARY KEY, a text, b text, n numeric)`)
	// About 200 bytes of text per row, hex digests so it does not compress
	// to nothing.
	rows := mb * 1 << 20 / 200
	e.exec(`INSERT INTO big SELECT g, md5(g::text) || md5((g + 1)::text) || md5((g + 2)::text),
		md5((g * 7)::text) || md5((g * 11)::text) || md5((g * 13)::text), g * 1.5 FROM generate_series(1, $1::int) g`, rows)
	size := e.query1(`SELECT pg_size_pretty(pg_table_size('big'))`)
	e.mustRun("setup")
	a := e.startAgent()
	e.waitBackup(1)
	e.waitArchived()
	a.stop(t)

	out := filepath.Join(t.TempDir(), "takeout.zip")
	cmd := exec.CommandContext(t.Context(), waybackBin, "export", "--config", e.config, "--latest", "--out", out, "--log-format", "json")
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	began := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("export: %v\n%s", err, tail(stderr.String(), 20))
	}
	took := time.Since(began)
	peak := cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss // KiB on Linux
	zr, err := zip.OpenReader(out)
	if err != nil {
		t.Fatal(err)
	}
	var csv uint64
	for _, f := range zr.File {
		csv += f.UncompressedSize64
	}
	zr.Close()
	st, _ := os.Stat(out)
	t.Logf("exported %d rows (table %s, CSV %.0f MiB, zip %.0f MiB) in %s; wayback export peak RSS %.1f MiB",
		rows, size, float64(csv)/(1<<20), float64(st.Size())/(1<<20), took.Round(time.Second), float64(peak)/1024)
	// Generous: the Go runtime, pgx and zip buffers need tens of MiB; a
	// table held in memory would need hundreds.
	if limit := int64(mb) * 1024 / 2; peak > limit {
		t.Fatalf("peak RSS %d KiB exceeds half the table (%d KiB): the export is not streaming", peak, limit)
	}
}
