package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/wayback-pitr/wayback/testenv"
)

// metricsOf scrapes addr and returns a lookup: the sum of a metric's
// samples whose name{labels} contains every filter (a label value, say).
func metricsOf(t *testing.T, addr string) func(name string, filters ...string) (float64, bool) {
	t.Helper()
	samples, err := scrape(t, addr)
	if err != nil {
		t.Fatalf("scrape metrics: %v", err)
	}
	return func(name string, filters ...string) (float64, bool) {
		var sum float64
		found := false
	keys:
		for k, v := range samples {
			if k != name && !strings.HasPrefix(k, name+"{") {
				continue
			}
			for _, f := range filters {
				if !strings.Contains(k, f) {
					continue keys
				}
			}
			sum += v
			found = true
		}
		return sum, found
	}
}

// TestMetricsDuringOutage (issue 6, acceptance 4): the agent's metrics
// endpoint serves the documented metrics with plausible values while a
// workload runs; with min_copies 2 and the S3 store refusing, the lag rises
// and S3's errors count up and its up-gauge drops; after S3 returns, the
// lag falls back and S3 is up again.
func TestMetricsDuringOutage(t *testing.T) {
	c := newCloudEnv(t, 2)
	c.exec(schema)
	c.insertCustomers(20)
	c.mustRun("setup")
	addr := freeAddr(t)
	c.startAgent("--repair-interval", "500ms", "--metrics-listen", addr)
	c.waitBackupCloud()
	c.insertOrders(100)
	c.waitArchived()

	m := metricsOf(t, addr)
	for _, name := range []string{"wayback_replication_lag_bytes", "wayback_replication_lag_seconds", "wayback_rpo_seconds_count",
		"wayback_segments_shipped_total", "wayback_bytes_shipped_total", "wayback_store_up", "wayback_last_durable_commit_timestamp_seconds",
		"wayback_basebackup_age_seconds", "wayback_slot_retained_wal_bytes", "wayback_slot_wal_status", "wayback_streaming"} {
		if _, ok := m(name); !ok {
			t.Errorf("metric %s is not served", name)
		}
	}
	if v, _ := m("wayback_segments_shipped_total", "wb-s3"); v < 1 {
		t.Errorf("no segments counted for S3: %v", v)
	}
	if v, _ := m("wayback_rpo_seconds_count"); v < 1 {
		t.Errorf("RPO histogram is empty")
	}
	if v, _ := m("wayback_slot_wal_status", `wal_status="reserved"`); v != 1 {
		t.Errorf("slot wal_status reserved = %v, want 1", v)
	}
	if v, _ := m("wayback_basebackup_age_seconds"); v < 0 {
		t.Errorf("base backup age %v with a backup taken", v)
	}
	before, _ := m("wayback_replication_lag_bytes")
	t.Logf("lag before the outage: %.0f bytes", before)

	c.s3.Faults.SetFault(testenv.FaultRefuse)
	var peak float64
	deadline := time.Now().Add(90 * time.Second)
	for {
		c.insertOrders(50)
		m = metricsOf(t, addr)
		lag, _ := m("wayback_replication_lag_bytes")
		errs, _ := m("wayback_store_errors_total", "wb-s3")
		up, _ := m("wayback_store_up", "wb-s3")
		peak = max(peak, lag)
		if lag > before && lag > 10000 && errs > 0 && up == 0 {
			t.Logf("during the outage: lag %.0f bytes, %v S3 errors, S3 up %v", lag, errs, up)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("during the S3 outage: lag %.0f bytes (before %.0f), S3 errors %v, S3 up %v", lag, before, errs, up)
		}
		time.Sleep(300 * time.Millisecond)
	}

	c.s3.Faults.SetFault(testenv.FaultNone)
	deadline = time.Now().Add(90 * time.Second)
	for {
		m = metricsOf(t, addr)
		lag, _ := m("wayback_replication_lag_bytes")
		secs, _ := m("wayback_replication_lag_seconds")
		up, _ := m("wayback_store_up", "wb-s3")
		if lag < peak/2 && secs == 0 && up == 1 {
			t.Logf("after the outage: lag %.0f bytes (peak %.0f), S3 up", lag, peak)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the S3 outage: lag %.0f bytes (peak %.0f), lag %v s, S3 up %v", lag, peak, secs, up)
		}
		time.Sleep(300 * time.Millisecond)
	}
	c.waitArchived()
}
