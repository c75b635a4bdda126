package scratch_test

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/wayback-pitr/wayback/scratch"
	"github.com/wayback-pitr/wayback/testenv"
)

// TestOpenDBUserDSN: an empty database is used and comes back empty with
// its owner; a missing one is left to be created and is dropped; a
// non-empty or shared one is refused before anything is written.
func TestOpenDBUserDSN(t *testing.T) {
	ctx := t.Context()
	c := testenv.NewCluster(t, testenv.Options{})
	admin := c.DSN("postgres")
	if err := testenv.Exec(ctx, admin, `CREATE ROLE alice LOGIN`); err != nil {
		t.Fatal(err)
	}
	if err := testenv.Exec(ctx, admin, `CREATE DATABASE empty OWNER alice`); err != nil {
		t.Fatal(err)
	}
	one := func(dsn, q string) string {
		t.Helper()
		rows, err := testenv.QueryRows(ctx, dsn, q)
		if err != nil || len(rows) != 1 {
			t.Fatalf("%s: %v %v", q, rows, err)
		}
		return rows[0][0]
	}

	db, err := scratch.OpenDB(ctx, scratch.DBOptions{DSN: c.DSN("empty")})
	if err != nil {
		t.Fatal(err)
	}
	if err := testenv.Exec(ctx, db.DSN, `CREATE TABLE restored (id int); INSERT INTO restored VALUES (1)`); err != nil {
		t.Fatal(err)
	}
	if _, err := scratch.OpenDB(ctx, scratch.DBOptions{DSN: c.DSN("empty")}); err == nil || !strings.Contains(err.Error(), "is not empty") {
		t.Fatalf("a non-empty scratch database was accepted: %v", err)
	}
	if err := db.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if n := one(c.DSN("empty"), `SELECT count(*) FROM pg_class WHERE relname = 'restored'`); n != "0" {
		t.Fatal("the scratch database was not emptied")
	}
	if o := one(admin, `SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'empty'`); o != "alice" {
		t.Fatalf("owner after the drill is %s, want alice", o)
	}

	db, err = scratch.OpenDB(ctx, scratch.DBOptions{DSN: c.DSN("fresh")})
	if err != nil {
		t.Fatal(err)
	}
	if err := testenv.Exec(ctx, admin, `CREATE DATABASE fresh`); err != nil { // as restore does
		t.Fatal(err)
	}
	if err := db.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if n := one(admin, `SELECT count(*) FROM pg_database WHERE datname = 'fresh'`); n != "0" {
		t.Fatal("the scratch database created for the drill is still there")
	}

	for _, name := range []string{"postgres", "template1"} {
		if _, err := scratch.OpenDB(ctx, scratch.DBOptions{DSN: c.DSN(name)}); err == nil {
			t.Fatalf("scratch database %s was accepted", name)
		}
	}
}

// TestOpenDBLocal starts a private cluster, and Close removes it.
func TestOpenDBLocal(t *testing.T) {
	ctx := t.Context()
	db, err := scratch.OpenDB(ctx, scratch.DBOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if db.Local == nil || !strings.Contains(db.DSN, "/"+scratch.LocalDatabase) {
		t.Fatalf("local scratch: %+v", db)
	}
	if err := testenv.Exec(ctx, db.Local.DSN(""), `CREATE DATABASE `+scratch.LocalDatabase); err != nil {
		t.Fatal(err)
	}
	if err := testenv.Exec(ctx, db.DSN, `CREATE TABLE t (id int)`); err != nil {
		t.Fatal(err)
	}
	dir := db.Local.Dir
	if err := db.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("the local cluster's directory %s is still there: %v", dir, err)
	}
}
