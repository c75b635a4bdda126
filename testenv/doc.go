// Package testenv runs throwaway, real PostgreSQL 15 clusters for tests, the
// demo and users' CI pipelines, and compares database contents by checksum.
//
// Wayback's correctness claims (a restore reproduces the data exactly as it
// was at a point in time) can only be checked against a real server, so this
// package never mocks PostgreSQL: every Cluster is a fresh initdb in its own
// temporary directory, listening on a free TCP port on 127.0.0.1, with trust
// authentication and wal_level=logical. Durability settings (fsync,
// full_page_writes, synchronous_commit) are off by default because the data is
// thrown away; override them through Options.Settings when a test depends on
// them.
//
// A typical test:
//
//	func TestRestore(t *testing.T) {
//		c := testenv.NewCluster(t, testenv.Options{})
//		ctx := t.Context()
//		if err := c.CreateDatabase(ctx, "app"); err != nil {
//			t.Fatal(err)
//		}
//		if err := testenv.Exec(ctx, c.DSN("app"), "CREATE TABLE t(id int)"); err != nil {
//			t.Fatal(err)
//		}
//		want, err := testenv.Checksums(ctx, c.DSN("app"))
//		// ... back up, restore into another cluster, then:
//		got, err := testenv.Checksums(ctx, restored.DSN("app"))
//		if d := testenv.DiffChecksums(want, got); d != "" {
//			t.Fatal(d)
//		}
//	}
//
// The server binaries are found in Options.BinDir, else $WAYBACK_PG_BIN, else
// /usr/lib/postgresql/15/bin, else the directory of pg_ctl on PATH. PostgreSQL
// refuses to run as root, so when the calling process is root the server
// programs run as the "postgres" OS user (or "nobody" if that user does not
// exist), and the cluster directory is handed over to that user.
//
// The package is for Unix-like systems (it relies on process groups, signals
// and, when root, on switching the user of child processes) and is tested on
// Linux.
package testenv
