// Package workload generates seeded, reproducible mixes of DML and DDL for
// differential tests: the same seed always yields the same statements, so a
// failing seed can be replayed and its SQL read.
//
// The generator keeps a model of the schema it has built (tables, columns
// added and dropped, enum values) so every statement it emits is valid;
// which rows a statement touches is decided by SQL over the current data
// (ORDER BY ... OFFSET/LIMIT), which is deterministic because the data
// itself is.
package workload

import (
	"fmt"
	"math/rand/v2"
	"strings"
)

// Txn is one transaction: its statements, and whether it ends in
// ROLLBACK instead of COMMIT.
type Txn struct {
	Statements []string
	Rollback   bool
}

// SQL is the transaction as one script, BEGIN to COMMIT or ROLLBACK.
func (t Txn) SQL() string {
	end := "COMMIT;"
	if t.Rollback {
		end = "ROLLBACK;"
	}
	return "BEGIN;\n" + strings.Join(t.Statements, ";\n") + ";\n" + end + "\n"
}

// Generator produces the workload of one seed.
type Generator struct {
	seed  uint64
	rnd   *rand.Rand
	extra []string // columns added to items and not dropped yet
	added int      // columns ever added (names stay unique)
	moods []string // enum values of type mood
	newT  []string // tables created by the workload
	step  int
}

// New returns the generator for seed.
func New(seed uint64) *Generator {
	return &Generator{seed: seed, rnd: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), moods: []string{"sad", "ok", "happy"}}
}

// Seed is the generator's seed.
func (g *Generator) Seed() uint64 { return g.seed }

// Schema is the initial schema and data, run before the base backup.
func (g *Generator) Schema() []string {
	return []string{
		`CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')`,
		`CREATE DOMAIN posint AS integer CHECK (VALUE > 0)`,
		`CREATE TABLE items (
			id serial PRIMARY KEY,
			name text NOT NULL,
			price numeric(14,3),
			qty posint,
			data jsonb,
			tags text[],
			at timestamptz,
			blob bytea,
			uid uuid,
			feel mood,
			span int4range,
			ratio float8
		)`,
		`CREATE TABLE events (id int NOT NULL, kind text NOT NULL, payload jsonb, seen date, PRIMARY KEY (id)) PARTITION BY RANGE (id)`,
		`CREATE TABLE events_0 PARTITION OF events FOR VALUES FROM (0) TO (1000)`,
		`CREATE TABLE events_1 PARTITION OF events FOR VALUES FROM (1000) TO (2000)`,
		`CREATE TABLE events_def PARTITION OF events DEFAULT`,
		`CREATE TABLE notes (msg text, n int, at timestamp)`,
		`ALTER TABLE notes REPLICA IDENTITY FULL`,
		`CREATE TABLE counters (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, label text UNIQUE, hits bigint DEFAULT 0)`,
		`INSERT INTO items (name, price, qty, data, tags, at, blob, uid, feel, span, ratio)
		 SELECT 'item ' || g, g * 1.5, g, jsonb_build_object('g', g, 'even', g % 2 = 0), ARRAY['a' || g, NULL, 'ü'],
		        timestamptz '2026-01-01 00:00:00+00' + g * interval '1 hour', decode(md5(g::text), 'hex'),
		        md5(g::text)::uuid, (ARRAY['sad','ok','happy'])[1 + g % 3]::mood, int4range(g, g + 10), g / 7.0
		 FROM generate_series(1, 200) g`,
		`INSERT INTO events SELECT g * 7, 'k' || (g % 5), jsonb_build_object('n', g), date '2026-01-01' + g FROM generate_series(1, 250) g`,
		`INSERT INTO notes SELECT 'note ' || (g % 10), g % 3, timestamp '2026-02-01' + g * interval '1 minute' FROM generate_series(1, 60) g`,
		`INSERT INTO counters (label) SELECT 'c' || g FROM generate_series(1, 20) g`,
	}
}

func (g *Generator) intn(n int) int { return g.rnd.IntN(n) }

// text returns a random string with ASCII, accents, CJK, emoji and quotes.
func (g *Generator) text() string {
	parts := []string{"a", "Z", "é", "ß", "漢", "字", "🙂", "'", `"`, `\`, " ", "\t", "\n", "ÿ", "Ω", "x"}
	var b strings.Builder
	for i := 0; i < 1+g.intn(12); i++ {
		b.WriteString(parts[g.intn(len(parts))])
	}
	return b.String()
}

func lit(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// pick selects count rows of table by position in key order.
func (g *Generator) pick(key, table string, count int) string {
	return fmt.Sprintf("%s IN (SELECT %s FROM %s ORDER BY %s OFFSET %d LIMIT %d)", key, key, table, key, g.intn(150), count)
}

// Next returns the next transaction.
func (g *Generator) Next() Txn {
	g.step++
	if g.intn(40) == 0 {
		// A new enum value cannot be used in the transaction that adds it,
		// so it gets a transaction of its own and the model learns it after.
		v := fmt.Sprintf("mood%d", len(g.moods))
		g.moods = append(g.moods, v)
		return Txn{Statements: []string{fmt.Sprintf("ALTER TYPE mood ADD VALUE %s", lit(v))}}
	}
	// A rolled-back transaction carries no DDL: the model would otherwise
	// believe in columns and tables that do not exist.
	t := Txn{Rollback: g.intn(12) == 0}
	for n := 1 + g.intn(4); len(t.Statements) < n; {
		if g.intn(15) == 0 {
			// A subtransaction rolled back inside a committed one: its
			// changes must not reach the restore. DML only, for the same
			// reason as above.
			t.Statements = append(t.Statements, "SAVEPOINT sp")
			t.Statements = append(t.Statements, g.statement(false)...)
			t.Statements = append(t.Statements, "ROLLBACK TO SAVEPOINT sp")
			continue
		}
		t.Statements = append(t.Statements, g.statement(!t.Rollback)...)
	}
	return t
}

func (g *Generator) statement(ddl bool) []string {
	switch r := g.intn(100); {
	case r < 22:
		return []string{g.insertItems()}
	case r < 34:
		return []string{g.updateItems()}
	case r < 40:
		return []string{fmt.Sprintf("DELETE FROM items WHERE %s", g.pick("id", "items", 1+g.intn(5)))}
	case r < 50:
		return []string{g.events()}
	case r < 60:
		return []string{g.notes()}
	case r < 66:
		return []string{fmt.Sprintf("INSERT INTO counters (label, hits) VALUES (%s, %d) ON CONFLICT (label) DO UPDATE SET hits = counters.hits + 1", lit(fmt.Sprintf("c%d", g.intn(40))), g.intn(100))}
	case r < 70:
		// The id suffix keeps labels unique however often a row is renamed.
		return []string{fmt.Sprintf("UPDATE counters SET hits = hits * 2, label = label || '.' || id WHERE %s", g.pick("id", "counters", 1+g.intn(3)))}
	case r < 72:
		return []string{g.truncate()}
	case r < 82 && len(g.newT) > 0:
		tbl := g.newT[g.intn(len(g.newT))]
		return []string{fmt.Sprintf("INSERT INTO %s (v, w) SELECT %s, g FROM generate_series(1, %d) g", tbl, lit(g.text()), 1+g.intn(20))}
	case ddl:
		return g.ddl()
	default:
		return []string{g.insertItems()}
	}
}

func (g *Generator) insertItems() string {
	rows := 1 + g.intn(6)
	var vals []string
	for i := 0; i < rows; i++ {
		price := fmt.Sprintf("%d.%03d", g.intn(100000), g.intn(1000))
		if g.intn(10) == 0 {
			price = "'NaN'"
		}
		ratio := fmt.Sprintf("%g", g.rnd.NormFloat64()*1e3)
		switch g.intn(15) {
		case 0:
			ratio = "'Infinity'"
		case 1:
			ratio = "'-0'"
		case 2:
			ratio = "NULL"
		}
		tags := fmt.Sprintf("ARRAY[%s, NULL]", lit(g.text()))
		if g.intn(5) == 0 {
			tags = "'{}'"
		}
		at := fmt.Sprintf("timestamptz '2026-03-01 12:00:00+00' + interval '%d seconds'", g.intn(1_000_000))
		if g.intn(20) == 0 {
			at = "'infinity'"
		}
		vals = append(vals, fmt.Sprintf("(%s, %s, %d, jsonb_build_object('t', %s::text, 'n', %d), %s, %s, decode(%s, 'hex'), %s, %s, int4range(%d, %d), %s)",
			lit(g.text()), price, 1+g.intn(1000), lit(g.text()), g.intn(1000), tags, at,
			lit(fmt.Sprintf("%016x", g.rnd.Uint64())), lit(fmt.Sprintf("%016x%016x", g.rnd.Uint64(), g.rnd.Uint64())), lit(g.moods[g.intn(len(g.moods))]), g.intn(50), 50+g.intn(50), ratio))
	}
	return "INSERT INTO items (name, price, qty, data, tags, at, blob, uid, feel, span, ratio) VALUES " + strings.Join(vals, ", ")
}

func (g *Generator) updateItems() string {
	sets := []string{
		fmt.Sprintf("name = %s", lit(g.text())),
		"price = price * 2",
		"data = data || jsonb_build_object('u', 1)",
		"tags = array_append(tags, 'more')",
		"at = at + interval '1 day'",
		"blob = NULL",
		"name = ''",
		fmt.Sprintf("feel = %s", lit(g.moods[g.intn(len(g.moods))])),
	}
	if len(g.extra) > 0 {
		sets = append(sets, fmt.Sprintf("%s = %d", g.extra[g.intn(len(g.extra))], g.intn(1000)))
	}
	if g.intn(8) == 0 { // key change
		return fmt.Sprintf("UPDATE items SET id = id + 100000 WHERE %s", g.pick("id", "items", 1))
	}
	return fmt.Sprintf("UPDATE items SET %s WHERE %s", sets[g.intn(len(sets))], g.pick("id", "items", 1+g.intn(8)))
}

func (g *Generator) events() string {
	switch g.intn(5) {
	case 4: // from events_1 into the default partition: negative ids are outside every range and unique
		return fmt.Sprintf("UPDATE events SET id = -id WHERE id >= 1000 AND id < 2000 AND %s", g.pick("id", "events", 1+g.intn(2)))
	case 0:
		id := g.intn(3000) + 3000*g.step // beyond 2000: the default partition; unique per step
		return fmt.Sprintf("INSERT INTO events VALUES (%d, %s, %s, date '2026-05-01' + %d) ON CONFLICT DO NOTHING", id, lit(g.text()), "jsonb_build_array(1, 'two', null)", g.intn(100))
	case 1: // cross-partition move
		return fmt.Sprintf("UPDATE events SET id = id + 1000 WHERE id < 1000 AND %s", g.pick("id", "events", 1+g.intn(3)))
	case 2:
		return fmt.Sprintf("UPDATE events SET payload = payload || '{\"x\": true}', kind = %s WHERE %s", lit(g.text()), g.pick("id", "events", 1+g.intn(5)))
	default:
		return fmt.Sprintf("DELETE FROM events WHERE %s", g.pick("id", "events", 1+g.intn(3)))
	}
}

func (g *Generator) notes() string {
	switch g.intn(3) {
	case 0: // duplicates on purpose
		msg := lit(fmt.Sprintf("note %d", g.intn(10)))
		return fmt.Sprintf("INSERT INTO notes SELECT %s, %d, NULL FROM generate_series(1, %d)", msg, g.intn(3), 1+g.intn(3))
	case 1:
		return fmt.Sprintf("UPDATE notes SET n = n + 1 WHERE ctid = (SELECT ctid FROM notes WHERE msg = %s LIMIT 1)", lit(fmt.Sprintf("note %d", g.intn(10))))
	default:
		return fmt.Sprintf("DELETE FROM notes WHERE ctid = (SELECT ctid FROM notes WHERE msg = %s LIMIT 1)", lit(fmt.Sprintf("note %d", g.intn(10))))
	}
}

func (g *Generator) truncate() string {
	switch g.intn(5) {
	case 0:
		return "TRUNCATE notes"
	case 1:
		return "TRUNCATE counters RESTART IDENTITY"
	case 2:
		if len(g.newT) > 0 {
			return fmt.Sprintf("TRUNCATE %s RESTART IDENTITY", g.newT[g.intn(len(g.newT))])
		}
		return "TRUNCATE notes, events_def"
	case 3:
		return "TRUNCATE notes, events_def"
	default:
		return "TRUNCATE events_def"
	}
}

func (g *Generator) ddl() []string {
	switch g.intn(6) {
	case 0:
		g.added++
		col := fmt.Sprintf("extra%d", g.added)
		g.extra = append(g.extra, col)
		return []string{fmt.Sprintf("ALTER TABLE items ADD COLUMN %s int DEFAULT %d", col, g.intn(100))}
	case 1:
		if len(g.extra) == 0 {
			return nil
		}
		i := g.intn(len(g.extra))
		col := g.extra[i]
		g.extra = append(g.extra[:i], g.extra[i+1:]...)
		return []string{fmt.Sprintf("ALTER TABLE items DROP COLUMN %s", col)}
	case 2:
		if len(g.newT) >= 4 {
			return nil
		}
		name := fmt.Sprintf("made_%d", len(g.newT)+1)
		g.newT = append(g.newT, name)
		if g.intn(2) == 0 {
			return []string{fmt.Sprintf("CREATE TABLE %s (id bigserial PRIMARY KEY, v text, w int, made timestamptz DEFAULT '2026-01-01')", name)}
		}
		return []string{fmt.Sprintf("CREATE TABLE %s (id int GENERATED BY DEFAULT AS IDENTITY (START WITH 100 INCREMENT BY 3) PRIMARY KEY, v text, w int, made timestamptz DEFAULT '2026-01-01')", name)}
	case 3:
		return []string{fmt.Sprintf("CREATE INDEX ON items (%s)", []string{"name", "price", "at", "feel"}[g.intn(4)])}
	case 4:
		if len(g.extra) == 0 {
			return nil
		}
		return []string{fmt.Sprintf("ALTER TABLE items ALTER COLUMN %s TYPE bigint", g.extra[g.intn(len(g.extra))])}
	default:
		return []string{fmt.Sprintf("COMMENT ON TABLE items IS %s", lit(g.text()))}
	}
}
