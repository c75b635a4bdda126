package testenv

import (
	"context"
	"testing"

	"github.com/wayback-pitr/wayback/scratch"
)

// The throwaway cluster lives in package scratch, because production code
// (wayback verify --deep, wayback export) starts the same kind of cluster;
// these aliases keep testenv's API.

// DefaultBinDir is where Debian and Ubuntu packages install the PostgreSQL 15
// server programs.
const DefaultBinDir = scratch.DefaultBinDir

// BinDirEnv names the environment variable that selects the server programs.
const BinDirEnv = scratch.BinDirEnv

// DefaultStartTimeout bounds how long a start waits for the server to accept
// connections.
const DefaultStartTimeout = scratch.DefaultStartTimeout

// Options configure a cluster (see scratch.Options).
type Options = scratch.Options

// Cluster is one throwaway PostgreSQL cluster (see scratch.Cluster).
type Cluster = scratch.Cluster

// DefaultSettings returns the postgresql.conf parameters every cluster gets
// unless Options.Settings overrides them.
func DefaultSettings() map[string]string { return scratch.DefaultSettings() }

// StartCluster creates a new cluster in a fresh temporary directory and
// starts it. The caller owns the cluster and must Close it; tests should use
// NewCluster, which does that automatically.
func StartCluster(ctx context.Context, opts Options) (*Cluster, error) {
	return scratch.StartCluster(ctx, opts)
}

// NewCluster starts a cluster for a test and registers a cleanup that
// closes it and removes its files, also when the test fails or panics. When
// the test has failed, the tail of the server log is written to the test log
// first, because that is usually where the explanation is. Errors starting
// the cluster end the test with t.Fatal.
func NewCluster(t testing.TB, opts Options) *Cluster {
	t.Helper()
	c, err := StartCluster(t.Context(), opts)
	if err != nil {
		t.Fatalf("starting PostgreSQL cluster: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("server log of cluster on port %d (%s), last lines:\n%s", c.Port, c.LogFile, c.LogTail(60))
		}
		if err := c.Close(); err != nil {
			t.Errorf("closing PostgreSQL cluster: %v", err)
		}
	})
	return c
}
