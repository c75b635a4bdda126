package metrics

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestMetricsExposition(t *testing.T) {
	m := New(Sources{Lag: func() (float64, float64) { return 4096, 2.5 }})
	m.AddStore("s3://b/p")
	m.Shipped("s3://b/p", 1000, time.Unix(1700000000, 0))
	m.Shipped("s3://b/p", 500, time.Unix(1600000000, 0)) // older backfill: timestamp must not move back
	m.StoreError("s3://b/p")
	m.StoreUp("s3://b/p", false)
	m.Durable(300 * time.Millisecond)
	m.RetentionAction("delete_segment", 3)
	m.BaseBackup(time.Now().Add(-time.Minute), 7*time.Second)
	m.Slot(123456, "reserved")
	m.Slot(654321, "extended")
	m.Streaming(true)
	ready := errors.New("not streaming")
	srv := httptest.NewServer(m.Handler(func() error { return ready }))
	defer srv.Close()

	code, body := get(t, srv.URL+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	for _, want := range []string{
		`wayback_replication_lag_bytes 4096`,
		`wayback_replication_lag_seconds 2.5`,
		`wayback_segments_shipped_total{store="s3://b/p"} 2`,
		`wayback_bytes_shipped_total{store="s3://b/p"} 1500`,
		`wayback_store_errors_total{store="s3://b/p"} 1`,
		`wayback_store_up{store="s3://b/p"} 0`,
		`wayback_last_durable_commit_timestamp_seconds{store="s3://b/p"} 1.7e+09`,
		`wayback_rpo_seconds_bucket{le="0.5"} 1`,
		`wayback_rpo_seconds_count 1`,
		`wayback_retention_actions_total{action="delete_segment"} 3`,
		`wayback_basebackup_duration_seconds 7`,
		`wayback_slot_retained_wal_bytes 654321`,
		`wayback_slot_wal_status{wal_status="extended"} 1`,
		`wayback_streaming 1`,
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("missing %q in:\n%s", want, body)
		}
	}
	if strings.Contains(body, `wal_status="reserved"`) {
		t.Errorf("old wal_status still exported")
	}
	if !strings.Contains(body, "wayback_basebackup_age_seconds 6") {
		t.Errorf("backup age not about a minute:\n%s", body)
	}
	if strings.Contains(body, "go_goroutines") {
		t.Errorf("private registry should not carry the default Go collectors")
	}
	if code, _ := get(t, srv.URL+"/healthz"); code != 200 {
		t.Errorf("/healthz: %d", code)
	}
	if code, body := get(t, srv.URL+"/readyz"); code != 503 || !strings.Contains(body, "not streaming") {
		t.Errorf("/readyz while not ready: %d %q", code, body)
	}
	ready = nil
	if code, _ := get(t, srv.URL+"/readyz"); code != 200 {
		t.Errorf("/readyz when ready: %d", code)
	}
}

func TestServeBadAddress(t *testing.T) {
	m := New(Sources{})
	if _, err := Serve(context.Background(), "256.0.0.1:bad", m.Handler(func() error { return nil }), zap.NewNop()); err == nil || !strings.Contains(err.Error(), "metrics.listen") {
		t.Fatalf("want a metrics.listen error, got %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done, err := Serve(ctx, "127.0.0.1:0", m.Handler(func() error { return nil }), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
