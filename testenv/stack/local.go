package stack

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/wayback-pitr/wayback"
	"github.com/wayback-pitr/wayback/config"
	"github.com/wayback-pitr/wayback/testenv"
)

// local is the Local mode: a throwaway cluster, in-process S3 and GCS
// servers, the agent in-process through the public API.
type local struct {
	t   testing.TB
	db  string
	pg  *testenv.Cluster
	s3  *testenv.S3Server
	gcs *testenv.GCSServer

	mu    sync.Mutex
	arc   *wayback.Archive
	agent *wayback.Agent
	extra []*testenv.Cluster
}

func startLocal(ctx context.Context, t testing.TB, o Options) (backend, error) {
	pg, err := testenv.StartCluster(ctx, testenv.Options{})
	if err != nil {
		return nil, fmt.Errorf("start the source cluster: %w", err)
	}
	l := &local{t: t, db: o.Database, pg: pg}
	if err := pg.CreateDatabase(ctx, o.Database); err != nil {
		l.close(ctx)
		return nil, fmt.Errorf("create database %s: %w", o.Database, err)
	}
	if l.s3, err = testenv.StartS3(ctx, testenv.S3Options{Buckets: []string{"wayback"}}); err != nil {
		l.close(ctx)
		return nil, err
	}
	if l.gcs, err = testenv.StartGCS(ctx, testenv.GCSOptions{Buckets: []string{"wayback"}}); err != nil {
		l.close(ctx)
		return nil, err
	}
	return l, nil
}

func (l *local) sourceDSN() string { return l.pg.DSN(l.db) }

func (l *local) storeURLs() []string {
	return []string{l.s3.URL("wayback", "archive"), l.gcs.URL("wayback", "archive")}
}

func (l *local) startAgent(ctx context.Context, o Options) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.agent != nil {
		return errors.New("the agent is already running")
	}
	arc, err := wayback.Open(ctx, wayback.ArchiveOptions{Stores: l.storeURLs()})
	if err != nil {
		return err
	}
	cfg := wayback.DefaultConfig()
	cfg.Postgres.DSN = l.sourceDSN()
	cfg.MinCopies = o.MinCopies
	cfg.FlushInterval = config.Duration(o.FlushInterval)
	// Not ctx: the agent outlives the call that starts it.
	ag, err := arc.StartAgent(context.WithoutCancel(ctx), wayback.AgentOptions{Config: cfg, RepairInterval: o.RepairInterval})
	if err != nil {
		arc.Close()
		return err
	}
	l.arc, l.agent = arc, ag
	return nil
}

func (l *local) stopAgent(context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.agent == nil {
		return nil
	}
	err := l.agent.Stop()
	l.arc.Close()
	l.agent, l.arc = nil, nil
	return err
}

func (l *local) killDatabase(context.Context) error { return l.pg.Kill() }

func (l *local) startDatabase(ctx context.Context) error { return l.pg.Start(ctx) }

func (l *local) faults(i int) (*testenv.Faults, error) {
	switch i {
	case 0:
		return l.s3.Faults, nil
	case 1:
		return l.gcs.Faults, nil
	}
	return nil, fmt.Errorf("no store %d (0 is S3, 1 is GCS)", i)
}

func (l *local) pauseStore(_ context.Context, i int) error {
	f, err := l.faults(i)
	if err == nil {
		f.SetFault(testenv.FaultHang)
	}
	return err
}

func (l *local) resumeStore(_ context.Context, i int) error {
	f, err := l.faults(i)
	if err == nil {
		f.SetFault(testenv.FaultNone)
	}
	return err
}

func (l *local) newDatabase(ctx context.Context, t testing.TB, name string) (string, error) {
	c, err := testenv.StartCluster(ctx, testenv.Options{})
	if err != nil {
		return "", fmt.Errorf("start a cluster to restore into: %w", err)
	}
	l.mu.Lock()
	l.extra = append(l.extra, c)
	l.mu.Unlock()
	return c.DSN(name), nil
}

func (l *local) logs(context.Context) string {
	var b strings.Builder
	fmt.Fprintf(&b, "--- source cluster log (tail) ---\n%s\n", l.pg.LogTail(60))
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, c := range l.extra {
		fmt.Fprintf(&b, "--- restore cluster %d log (tail) ---\n%s\n", i+1, c.LogTail(30))
	}
	return b.String()
}

func (l *local) close(ctx context.Context) {
	if err := l.stopAgent(ctx); err != nil {
		l.t.Logf("stack: agent: %v", err)
	}
	if l.s3 != nil {
		l.s3.Close()
	}
	if l.gcs != nil {
		l.gcs.Close()
	}
	l.mu.Lock()
	for _, c := range l.extra {
		c.Close()
	}
	l.mu.Unlock()
	l.pg.Close()
}
