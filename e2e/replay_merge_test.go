package e2e

import (
	"fmt"
	"testing"
)

// TestReplayHotRows: replay folds repeated UPDATEs of one row into one
// statement (replay/merge.go). The restore must equal the source where
// that is tempting but wrong or subtle:
//   - a TOASTed column the later UPDATEs leave unchanged ("u" in the
//     stream) keeps the value an earlier UPDATE in the same batch set;
//   - a table with a second unique index, where folding a later UPDATE into
//     an earlier one would take a value before another row frees it (the
//     restore fails with a unique violation if it folds there);
//   - a row deleted and inserted again, and a row whose key changes,
//     between UPDATEs of the same key;
//   - runs of INSERTs and UPDATEs fused into one statement over arrays
//     (replay/fuse.go), with values that need quoting in array literals,
//     NULLs, and types from enums to xml; a domain column, which does not
//     fuse.
//
// Every change is its own source transaction, all in one batch of replay.
func TestReplayHotRows(t *testing.T) {
	e := newEnv(t)
	e.exec(`CREATE TABLE hot (id int PRIMARY KEY, n int NOT NULL, big text, note text);
		ALTER TABLE hot ALTER COLUMN big SET STORAGE EXTERNAL;
		CREATE TABLE uniq (id int PRIMARY KEY, email text UNIQUE, n int NOT NULL);
		CREATE TABLE keyed (k text PRIMARY KEY, v int NOT NULL);
		CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
		CREATE DOMAIN posint AS int CHECK (VALUE > 0);
		CREATE TABLE vals (id int PRIMARY KEY, t text, c char(5), n numeric(6,2), j jsonb, ts timestamptz(3),
			e mood, r int4range, b bytea, p point, x xml);
		CREATE TABLE dom (id int PRIMARY KEY, d posint, t text, a int[])`)
	e.exec(`INSERT INTO hot SELECT g, 0, (SELECT string_agg(md5(g::text || ':' || i), '') FROM generate_series(1, 100) i), 'note ' || g FROM generate_series(1, 5) g`)
	e.exec(`INSERT INTO uniq VALUES (1, 'x', 0), (2, 'z', 0), (3, 'y', 0)`)
	e.exec(`INSERT INTO keyed VALUES ('a', 0), ('b', 0), ('a, b', 0)`)
	e.mustRun("setup")
	agent := e.startAgent()
	e.waitBackup(1)
	// The agent ships the whole workload at once when it comes back, so
	// the changes share a segment and a batch of replay.
	agent.stop(t)

	for i := 0; i < 30; i++ {
		e.exec(`UPDATE hot SET n = n + 1 WHERE id = $1`, 1+i%2)
		e.exec(`UPDATE hot SET n = n + 1 WHERE id = 4`)
		switch i {
		case 7:
			e.exec(`UPDATE hot SET big = repeat(md5('new'), 100) WHERE id = 4`)
		case 11:
			e.exec(`UPDATE hot SET note = NULL WHERE id = 2`)
		case 15:
			e.exec(`DELETE FROM hot WHERE id = 1`)
			e.exec(`INSERT INTO hot VALUES (1, 100, repeat(md5('again'), 100), 'reborn')`)
		case 21:
			e.exec(`UPDATE hot SET id = 10 WHERE id = 2`)
			e.exec(`UPDATE hot SET id = 2, n = 1000 WHERE id = 3`)
		}
	}
	// vals: runs of INSERTs and then of UPDATEs, sent as one statement
	// over arrays each, with texts that need quoting in an array literal.
	texts := []string{`plain`, `"quoted"`, `back\slash`, `{braces}`, `a,b`, `NULL`, ``, ` spaced `, `tab	tab`, "new\nline", `'single'`, `ünï`}
	for i, txt := range texts {
		e.exec(`INSERT INTO vals VALUES ($1, $2, left($2, 5), $3, jsonb_build_object('k', $2::text), '2026-01-02 03:04:05.678+01',
			$4, $5, convert_to($2, 'UTF8'), $6, $7)`,
			i, txt, float64(i)/3, []string{"sad", "ok", "happy"}[i%3], fmt.Sprintf("[%d,%d)", i, i+5),
			fmt.Sprintf("(%d,%d.5)", i, i), "<a>"+fmt.Sprint(i)+"</a>")
		e.exec(`INSERT INTO dom VALUES ($1, $2, $3, $4)`, i, i+1, txt, "{1,NULL,"+fmt.Sprint(i)+"}")
	}
	e.exec(`INSERT INTO vals (id) VALUES (100)`)
	for i, txt := range texts {
		e.exec(`UPDATE vals SET t = $2 || t, n = n + 1, e = 'ok', r = NULL WHERE id = $1`, i, txt)
		e.exec(`UPDATE dom SET d = d + 1, t = t || $2, a = a || $1 WHERE id = $1`, i, txt)
	}
	e.exec(`UPDATE vals SET t = 'last' WHERE id = 100`)
	// uniq: row 1 is updated, row 2 frees 'z', row 1 takes 'z'; then row 3
	// takes 'x' that row 1 freed, and row 1 is updated again.
	e.exec(`UPDATE uniq SET n = n + 1 WHERE id = 1`)
	e.exec(`UPDATE uniq SET email = 'w' WHERE id = 2`)
	e.exec(`UPDATE uniq SET email = 'z', n = n + 1 WHERE id = 1`)
	e.exec(`UPDATE uniq SET email = 'x' WHERE id = 3`)
	e.exec(`UPDATE uniq SET n = n + 1 WHERE id = 1`)
	// keyed: keys whose text forms could run together.
	for i := 0; i < 6; i++ {
		e.exec(`UPDATE keyed SET v = v + $1 WHERE k = $2`, i+1, []string{"a", "b", "a, b"}[i%3])
	}
	e.startAgent()
	e.waitArchived()
	want := e.checkpoint("after the hot-row workload")

	e.mustRun("restore", "--target-dsn", e.pg.DSN("restored"), "--latest")
	e.assertRestored("restored", want.sums, "restore --latest")
}
