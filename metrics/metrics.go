// Package metrics holds the agent's Prometheus metrics in a private
// registry (no global state, so several agents can live in one process and
// tests can scrape each one) and serves them with /healthz and /readyz.
// docs/metrics.md describes every metric and suggests alerts.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
)

// Sources are read at scrape time, so values that move with the clock
// (lag in seconds, backup age) are current on every scrape.
type Sources struct {
	// Lag returns the replication lag: server WAL end minus the durable
	// position in bytes, and the seconds since the newest durable commit
	// when the archive is behind (0 when caught up).
	Lag func() (bytes, seconds float64)
}

// Metrics are one agent's metrics.
type Metrics struct {
	reg *prometheus.Registry

	rpo         prometheus.Histogram
	segments    *prometheus.CounterVec
	bytes       *prometheus.CounterVec
	storeErrors *prometheus.CounterVec
	storeUp     *prometheus.GaugeVec
	lastCommit  *prometheus.GaugeVec
	retention   *prometheus.CounterVec
	slotRetain  prometheus.Gauge
	slotStatus  *prometheus.GaugeVec
	backupDur   prometheus.Gauge
	streaming   prometheus.Gauge

	mu         sync.Mutex
	lastBackup time.Time
	walStatus  string
	commits    map[string]float64
}

// New returns metrics registered in a fresh private registry.
func New(src Sources) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry(), commits: map[string]float64{}}
	m.rpo = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "wayback_rpo_seconds",
		Help:    "Delay from a segment's newest commit to the moment it was durable in min_copies stores.",
		Buckets: []float64{0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600},
	})
	m.segments = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wayback_segments_shipped_total", Help: "Segments written to each store."}, []string{"store"})
	m.bytes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wayback_bytes_shipped_total", Help: "Segment bytes (compressed) written to each store."}, []string{"store"})
	m.storeErrors = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wayback_store_errors_total", Help: "Failed write attempts per store."}, []string{"store"})
	m.storeUp = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "wayback_store_up", Help: "1 while the store takes writes, 0 while it is failing and skipped."}, []string{"store"})
	m.lastCommit = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "wayback_last_durable_commit_timestamp_seconds", Help: "Unix time of the newest commit each store holds."}, []string{"store"})
	m.retention = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wayback_retention_actions_total", Help: "Objects acted on by retention, by action."}, []string{"action"})
	m.slotRetain = prometheus.NewGauge(prometheus.GaugeOpts{Name: "wayback_slot_retained_wal_bytes", Help: "WAL the server keeps for the slot: pg_current_wal_lsn() - restart_lsn."})
	m.slotStatus = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "wayback_slot_wal_status", Help: "1 for the slot's current wal_status (reserved, extended, unreserved, lost, missing)."}, []string{"wal_status"})
	m.backupDur = prometheus.NewGauge(prometheus.GaugeOpts{Name: "wayback_basebackup_duration_seconds", Help: "Duration of the newest successful base backup."})
	m.streaming = prometheus.NewGauge(prometheus.GaugeOpts{Name: "wayback_streaming", Help: "1 while a replication session is open."})
	m.reg.MustRegister(m.rpo, m.segments, m.bytes, m.storeErrors, m.storeUp, m.lastCommit, m.retention, m.slotRetain, m.slotStatus, m.backupDur, m.streaming)
	if src.Lag != nil {
		m.reg.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "wayback_replication_lag_bytes", Help: "Server WAL end minus the durable LSN."},
				func() float64 { b, _ := src.Lag(); return b }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "wayback_replication_lag_seconds", Help: "Seconds since the newest durable commit while the archive is behind the server; 0 when caught up."},
				func() float64 { _, s := src.Lag(); return s }),
		)
	}
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "wayback_basebackup_age_seconds", Help: "Seconds since the newest successful base backup finished (-1: none)."},
		func() float64 {
			m.mu.Lock()
			defer m.mu.Unlock()
			if m.lastBackup.IsZero() {
				return -1
			}
			return time.Since(m.lastBackup).Seconds()
		}))
	return m
}

// Registry is the private registry, for embedding programs that serve it
// themselves.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// AddStore makes a store's series appear (at zero) before its first write.
func (m *Metrics) AddStore(url string) {
	m.segments.WithLabelValues(url)
	m.bytes.WithLabelValues(url)
	m.storeErrors.WithLabelValues(url)
	m.storeUp.WithLabelValues(url).Set(1)
}

// Shipped records a segment written to a store.
func (m *Metrics) Shipped(url string, size int64, lastCommit time.Time) {
	m.segments.WithLabelValues(url).Inc()
	m.bytes.WithLabelValues(url).Add(float64(size))
	if !lastCommit.IsZero() {
		// Background backfills may land out of order: never move back.
		v := float64(lastCommit.UnixNano()) / 1e9
		m.mu.Lock()
		if v > m.commits[url] {
			m.commits[url] = v
			m.lastCommit.WithLabelValues(url).Set(v)
		}
		m.mu.Unlock()
	}
}

// StoreError counts a failed write attempt.
func (m *Metrics) StoreError(url string) { m.storeErrors.WithLabelValues(url).Inc() }

// StoreUp sets whether a store takes writes.
func (m *Metrics) StoreUp(url string, up bool) { m.storeUp.WithLabelValues(url).Set(b2f(up)) }

// Durable observes one segment's commit-to-durable delay.
func (m *Metrics) Durable(d time.Duration) { m.rpo.Observe(d.Seconds()) }

// RetentionAction counts objects retention acted on, e.g. "delete_segment",
// "delete_backup", "keep". The retention scheduler calls it.
func (m *Metrics) RetentionAction(action string, n int) {
	m.retention.WithLabelValues(action).Add(float64(n))
}

// BaseBackup records a successful base backup.
func (m *Metrics) BaseBackup(finished time.Time, took time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if finished.After(m.lastBackup) {
		m.lastBackup = finished
		m.backupDur.Set(took.Seconds())
	}
}

// LastBackup is when the newest known base backup finished (zero: none).
func (m *Metrics) LastBackup() time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lastBackup
}

// Slot records the slot's retained WAL and its wal_status.
func (m *Metrics) Slot(retained int64, walStatus string) {
	m.slotRetain.Set(float64(retained))
	m.mu.Lock()
	defer m.mu.Unlock()
	if walStatus != m.walStatus {
		m.slotStatus.Reset()
		m.walStatus = walStatus
	}
	m.slotStatus.WithLabelValues(walStatus).Set(1)
}

// Streaming records whether a replication session is open.
func (m *Metrics) Streaming(on bool) { m.streaming.Set(b2f(on)) }

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Handler serves /metrics, /healthz (the process answers) and /readyz
// (ready returns nil: streaming and within min_copies).
func (m *Metrics) Handler(ready func() error) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := ready(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	return mux
}

// Serve listens on addr (host:port) until ctx ends. A port that cannot be
// bound is returned at once, so a misconfiguration stops the agent before
// it streams.
func Serve(ctx context.Context, addr string, h http.Handler, log *zap.Logger) (<-chan error, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics.listen %s: %w", addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan error, 1)
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	go func() {
		err := srv.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		done <- err
		close(done)
	}()
	log.Info("serving metrics", zap.String("addr", ln.Addr().String()))
	return done, nil
}
