package sqltext

import (
	"reflect"
	"slices"
	"strings"
	"testing"
)

// splitCase is one input with the pieces Split cuts it into and the
// statements Statements returns. Cases with server set are valid SQL that
// TestAgreesWithServer also runs on a real PostgreSQL. Cases with off set
// are cut with standard_conforming_strings off (Lexer.BackslashStrings),
// and run on the server with that setting.
type splitCase struct {
	name   string
	sql    string
	split  []string
	stmts  []string
	server bool
	off    bool
}

func (c splitCase) lexer() Lexer { return Lexer{BackslashStrings: c.off} }

var splitCases = []splitCase{
	{
		name:   "semicolons in standard strings, '' escapes",
		sql:    "SELECT 'x;y'; SELECT 'it''s;'",
		split:  []string{"SELECT 'x;y';", " SELECT 'it''s;'"},
		stmts:  []string{"SELECT 'x;y'", "SELECT 'it''s;'"},
		server: true,
	},
	{
		name:   "a backslash does not escape in a standard string",
		sql:    `SELECT 'a\'; SELECT 'b'`,
		split:  []string{`SELECT 'a\';`, ` SELECT 'b'`},
		stmts:  []string{`SELECT 'a\'`, `SELECT 'b'`},
		server: true,
	},
	{
		name:   "E strings: backslash escapes, '' too, either case",
		sql:    `SELECT E'it\'s; here'; SELECT e'\\'; SELECT E'a'';\';'`,
		split:  []string{`SELECT E'it\'s; here';`, ` SELECT e'\\';`, ` SELECT E'a'';\';'`},
		stmts:  []string{`SELECT E'it\'s; here'`, `SELECT e'\\'`, `SELECT E'a'';\';'`},
		server: true,
	},
	{
		name: "an E that ends a longer word does not make an E string",
		// "a$e" and "xe" are identifiers followed by a standard string
		// (a typed literal): the backslash does not escape.
		sql:   `SELECT a$e'\'; SELECT xe'\'; SELECT 1`,
		split: []string{`SELECT a$e'\';`, ` SELECT xe'\';`, ` SELECT 1`},
		stmts: []string{`SELECT a$e'\'`, `SELECT xe'\'`, `SELECT 1`},
	},
	{
		name:   "E string after punctuation",
		sql:    `SELECT 'a'||E'\';'; SELECT 2`,
		split:  []string{`SELECT 'a'||E'\';';`, ` SELECT 2`},
		stmts:  []string{`SELECT 'a'||E'\';'`, `SELECT 2`},
		server: true,
	},
	{
		name:   "U& strings read like standard ones",
		sql:    `SELECT U&'!0041;\' UESCAPE '!'; SELECT 3`,
		split:  []string{`SELECT U&'!0041;\' UESCAPE '!';`, ` SELECT 3`},
		stmts:  []string{`SELECT U&'!0041;\' UESCAPE '!'`, `SELECT 3`},
		server: true,
	},
	{
		name:   "quoted identifiers with semicolons and doubled quotes",
		sql:    `SELECT 1 AS "we;ird""t"; SELECT 2 AS "'"; SELECT 3 AS "--"`,
		split:  []string{`SELECT 1 AS "we;ird""t";`, ` SELECT 2 AS "'";`, ` SELECT 3 AS "--"`},
		stmts:  []string{`SELECT 1 AS "we;ird""t"`, `SELECT 2 AS "'"`, `SELECT 3 AS "--"`},
		server: true,
	},
	{
		name:   "dollar quotes, empty and tagged",
		sql:    "SELECT $$a;'b$$; SELECT $_$ SELECT 'a;b'; $_$; SELECT $body1$;$$;$body1$",
		split:  []string{"SELECT $$a;'b$$;", " SELECT $_$ SELECT 'a;b'; $_$;", " SELECT $body1$;$$;$body1$"},
		stmts:  []string{"SELECT $$a;'b$$", "SELECT $_$ SELECT 'a;b'; $_$", "SELECT $body1$;$$;$body1$"},
		server: true,
	},
	{
		name:   "a dollar quote ends only at its own tag",
		sql:    "SELECT $a$ b $ab$ ; $b$ $a$; SELECT 2",
		split:  []string{"SELECT $a$ b $ab$ ; $b$ $a$;", " SELECT 2"},
		stmts:  []string{"SELECT $a$ b $ab$ ; $b$ $a$", "SELECT 2"},
		server: true,
	},
	{
		name:   "a dollar quote ends at its tag even right after a word",
		sql:    "SELECT $q$x;y$q$; SELECT 2",
		split:  []string{"SELECT $q$x;y$q$;", " SELECT 2"},
		stmts:  []string{"SELECT $q$x;y$q$", "SELECT 2"},
		server: true,
	},
	{
		name:   "function bodies",
		sql:    "CREATE FUNCTION g() RETURNS text LANGUAGE sql AS $$SELECT $1 || ';'$$;\nDO $$ BEGIN PERFORM 1; END $$;",
		split:  []string{"CREATE FUNCTION g() RETURNS text LANGUAGE sql AS $$SELECT $1 || ';'$$;", "\nDO $$ BEGIN PERFORM 1; END $$;"},
		stmts:  []string{"CREATE FUNCTION g() RETURNS text LANGUAGE sql AS $$SELECT $1 || ';'$$", "DO $$ BEGIN PERFORM 1; END $$"},
		server: false,
	},
	{
		name: "$ inside an identifier starts no dollar quote",
		// a$$ and b$$ are identifiers: two statements, not one dollar
		// quote from a$$ to b$$.
		sql:    "SELECT 1 AS a$$; SELECT 2 AS b$$; SELECT 3 AS x$y$; SELECT 4 AS z$y$; SELECT 5 AS a$b",
		split:  []string{"SELECT 1 AS a$$;", " SELECT 2 AS b$$;", " SELECT 3 AS x$y$;", " SELECT 4 AS z$y$;", " SELECT 5 AS a$b"},
		stmts:  []string{"SELECT 1 AS a$$", "SELECT 2 AS b$$", "SELECT 3 AS x$y$", "SELECT 4 AS z$y$", "SELECT 5 AS a$b"},
		server: true,
	},
	{
		name:   "$ inside a non-ASCII identifier",
		sql:    "SELECT 1 AS é$$; SELECT 2 AS ü$$",
		split:  []string{"SELECT 1 AS é$$;", " SELECT 2 AS ü$$"},
		stmts:  []string{"SELECT 1 AS é$$", "SELECT 2 AS ü$$"},
		server: true,
	},
	{
		name:  "parameters are no dollar quotes",
		sql:   "SELECT a$b FROM t WHERE x = $1; SELECT $2;",
		split: []string{"SELECT a$b FROM t WHERE x = $1;", " SELECT $2;"},
		stmts: []string{"SELECT a$b FROM t WHERE x = $1", "SELECT $2"},
	},
	{
		name: "a $ right after a number or parameter starts a dollar quote",
		// PostgreSQL's lexer ends numbers and parameters before a $ (the
		// server then rejects the string literal that follows).
		sql:   "SELECT 1$$;$$; SELECT $1$$;$$; SELECT 3",
		split: []string{"SELECT 1$$;$$;", " SELECT $1$$;$$;", " SELECT 3"},
		stmts: []string{"SELECT 1$$;$$", "SELECT $1$$;$$", "SELECT 3"},
	},
	{
		name:  "a lone $",
		sql:   "SELECT $ ; SELECT $-1;",
		split: []string{"SELECT $ ;", " SELECT $-1;"},
		stmts: []string{"SELECT $", "SELECT $-1"},
	},
	{
		name:   "line comments",
		sql:    "SELECT 1; -- a comment; with a semicolon and it's quote\nSELECT 2 -- the end; really",
		split:  []string{"SELECT 1;", " -- a comment; with a semicolon and it's quote\nSELECT 2 -- the end; really"},
		stmts:  []string{"SELECT 1", "SELECT 2"},
		server: true,
	},
	{
		name:   "comments are whitespace, also between the words of a statement",
		sql:    "SELECT/**/1 AS a--x\n, 'b'--;\n'c';",
		split:  []string{"SELECT/**/1 AS a--x\n, 'b'--;\n'c';"},
		stmts:  []string{"SELECT 1 AS a \n, 'b' \n'c'"},
		server: true,
	},
	{
		name:   "nested block comments",
		sql:    "/* block ; /* nested ; */ still ; */ SELECT 'it''s;'; SELECT /* a /* b */ c */ 2",
		split:  []string{"/* block ; /* nested ; */ still ; */ SELECT 'it''s;';", " SELECT /* a /* b */ c */ 2"},
		stmts:  []string{"SELECT 'it''s;'", "SELECT   2"},
		server: true,
	},
	{
		name:   "comment markers inside literals are text",
		sql:    `SELECT '--;', "/*;", $$*/;$$, E'/*\';'; SELECT 2`,
		split:  []string{`SELECT '--;', "/*;", $$*/;$$, E'/*\';';`, ` SELECT 2`},
		stmts:  []string{`SELECT '--;', "/*;", $$*/;$$, E'/*\';'`, `SELECT 2`},
		server: false, // "/*;" is a column reference
	},
	{
		name:   "empty statements",
		sql:    "SELECT 1;;  ; /* c */ ;SELECT 2",
		split:  []string{"SELECT 1;", ";", "  ;", " /* c */ ;", "SELECT 2"},
		stmts:  []string{"SELECT 1", "SELECT 2"},
		server: true,
	},
	{
		name:   "trailing comments and whitespace are no statement",
		sql:    "SELECT 1;\n-- the end\n/* really /* nested */ */\n\t",
		split:  []string{"SELECT 1;"},
		stmts:  []string{"SELECT 1"},
		server: true,
	},
	{
		name:  "nothing but comments",
		sql:   "-- a\n/* b */",
		split: nil,
		stmts: nil,
	},
	{
		name:  "empty",
		sql:   "",
		split: nil,
		stmts: nil,
	},
	{
		name: "vertical tab is not PostgreSQL 15 whitespace",
		// The server rejects it, so a statement is left to reject.
		sql:   "SELECT 1;\v",
		split: []string{"SELECT 1;", "\v"},
		stmts: []string{"SELECT 1", "\v"},
	},
	{
		name:  "unterminated string runs to the end",
		sql:   "SELECT 1; SELECT 'a;b",
		split: []string{"SELECT 1;", " SELECT 'a;b"},
		stmts: []string{"SELECT 1", "SELECT 'a;b"},
	},
	{
		name:  "unterminated E string ending in a backslash",
		sql:   `SELECT 1; SELECT E'a;\`,
		split: []string{"SELECT 1;", ` SELECT E'a;\`},
		stmts: []string{"SELECT 1", `SELECT E'a;\`},
	},
	{
		name:  "unterminated quoted identifier runs to the end",
		sql:   `SELECT 1; SELECT "a;b`,
		split: []string{"SELECT 1;", ` SELECT "a;b`},
		stmts: []string{"SELECT 1", `SELECT "a;b`},
	},
	{
		name:  "unterminated dollar quote runs to the end",
		sql:   "SELECT 1; SELECT $x$a;b$$;",
		split: []string{"SELECT 1;", " SELECT $x$a;b$$;"},
		stmts: []string{"SELECT 1", "SELECT $x$a;b$$;"},
	},
	{
		name:  "unterminated block comment runs to the end",
		sql:   "SELECT 1; /* a /* b */ ; SELECT 2",
		split: []string{"SELECT 1;"},
		stmts: []string{"SELECT 1"},
	},
	{
		name: "the old basebackup test",
		sql: `SET a = 'x;y';
-- a comment; with a semicolon
CREATE FUNCTION f() RETURNS text LANGUAGE sql AS $_$ SELECT 'a;b'; $_$;
CREATE FUNCTION g() RETURNS text LANGUAGE sql AS $$SELECT $1 || ';'$$;
COMMENT ON TABLE "we;ird""t" IS E'it\'s; here';
/* block ; /* nested ; */ still ; */ SELECT 'it''s;';
SELECT a$b FROM t WHERE x = $1;
SELECT 1`,
		split: []string{
			`SET a = 'x;y';`,
			"\n-- a comment; with a semicolon\nCREATE FUNCTION f() RETURNS text LANGUAGE sql AS $_$ SELECT 'a;b'; $_$;",
			"\nCREATE FUNCTION g() RETURNS text LANGUAGE sql AS $$SELECT $1 || ';'$$;",
			"\nCOMMENT ON TABLE \"we;ird\"\"t\" IS E'it\\'s; here';",
			"\n/* block ; /* nested ; */ still ; */ SELECT 'it''s;';",
			"\nSELECT a$b FROM t WHERE x = $1;",
			"\nSELECT 1",
		},
		stmts: []string{
			`SET a = 'x;y'`,
			"CREATE FUNCTION f() RETURNS text LANGUAGE sql AS $_$ SELECT 'a;b'; $_$",
			"CREATE FUNCTION g() RETURNS text LANGUAGE sql AS $$SELECT $1 || ';'$$",
			"COMMENT ON TABLE \"we;ird\"\"t\" IS E'it\\'s; here'",
			"SELECT 'it''s;'",
			"SELECT a$b FROM t WHERE x = $1",
			"SELECT 1",
		},
	},
	{
		name: "the old replay test",
		sql: `create table a(x text default 'a;b'); -- c;omment
	INSERT INTO a VALUES (E'it\'s;'); /* block ; /* nested; */ */ ALTER TABLE "we;ird" ADD c int;
	create function f() returns int language sql as $body$ select 1; $body$;
	DO $$ BEGIN PERFORM 1; END $$;  ;
	comment on table a is 'x''; y'`,
		split: []string{
			"create table a(x text default 'a;b');",
			" -- c;omment\n\tINSERT INTO a VALUES (E'it\\'s;');",
			" /* block ; /* nested; */ */ ALTER TABLE \"we;ird\" ADD c int;",
			"\n\tcreate function f() returns int language sql as $body$ select 1; $body$;",
			"\n\tDO $$ BEGIN PERFORM 1; END $$;",
			"  ;",
			"\n\tcomment on table a is 'x''; y'",
		},
		stmts: []string{
			"create table a(x text default 'a;b')",
			`INSERT INTO a VALUES (E'it\'s;')`,
			`ALTER TABLE "we;ird" ADD c int`,
			"create function f() returns int language sql as $body$ select 1; $body$",
			"DO $$ BEGIN PERFORM 1; END $$",
			"comment on table a is 'x''; y'",
		},
	},
}

// offCases are cut with standard_conforming_strings off: a backslash
// escapes in every '...' string, as in E'...'.
var offCases = []splitCase{
	{
		name:   "a backslash escapes a quote in an ordinary string",
		sql:    `SELECT 'it\'s; odd'; SELECT 2`,
		split:  []string{`SELECT 'it\'s; odd';`, ` SELECT 2`},
		stmts:  []string{`SELECT 'it\'s; odd'`, `SELECT 2`},
		server: true,
	},
	{
		name: "captured DDL with an escaped quote",
		sql:  `COMMENT ON TABLE t IS 'it\'s; odd'; CREATE TABLE u (a int, b text DEFAULT 'a\';b')`,
		split: []string{`COMMENT ON TABLE t IS 'it\'s; odd';`,
			` CREATE TABLE u (a int, b text DEFAULT 'a\';b')`},
		stmts: []string{`COMMENT ON TABLE t IS 'it\'s; odd'`,
			`CREATE TABLE u (a int, b text DEFAULT 'a\';b')`},
	},
	{
		name: "the standard-strings case reads as one statement",
		// The server too: 'a\'; SELECT ' is one string, then b and an
		// unterminated string.
		sql:   `SELECT 'a\'; SELECT 'b'`,
		split: []string{`SELECT 'a\'; SELECT 'b'`},
		stmts: []string{`SELECT 'a\'; SELECT 'b'`},
	},
	{
		name:   "an escaped backslash ends a string",
		sql:    `SELECT 'a\\'; SELECT '\\', 'x'`,
		split:  []string{`SELECT 'a\\';`, ` SELECT '\\', 'x'`},
		stmts:  []string{`SELECT 'a\\'`, `SELECT '\\', 'x'`},
		server: true,
	},
	{
		name:   "a string that is one escaped quote",
		sql:    `SELECT '\''; SELECT ';', '\';'`,
		split:  []string{`SELECT '\'';`, ` SELECT ';', '\';'`},
		stmts:  []string{`SELECT '\''`, `SELECT ';', '\';'`},
		server: true,
	},
	{
		name:   "doubled quotes still escape",
		sql:    `SELECT 'it''s;\\'; SELECT 'a''\';'`,
		split:  []string{`SELECT 'it''s;\\';`, ` SELECT 'a''\';'`},
		stmts:  []string{`SELECT 'it''s;\\'`, `SELECT 'a''\';'`},
		server: true,
	},
	{
		name:   "E strings read as with the setting on",
		sql:    `SELECT E'it\'s; here'; SELECT e'\\'; SELECT E'a'';\';'`,
		split:  []string{`SELECT E'it\'s; here';`, ` SELECT e'\\';`, ` SELECT E'a'';\';'`},
		stmts:  []string{`SELECT E'it\'s; here'`, `SELECT e'\\'`, `SELECT E'a'';\';'`},
		server: true,
	},
	{
		name:  "the string after a word ending in e escapes too",
		sql:   `SELECT xe'\';'; SELECT 1`,
		split: []string{`SELECT xe'\';';`, ` SELECT 1`},
		stmts: []string{`SELECT xe'\';'`, `SELECT 1`},
	},
	{
		name:   "no escapes in dollar quotes, quoted identifiers, bit strings",
		sql:    `SELECT $$\$$; SELECT 1 AS "a\"; SELECT B'01', X'1F'; SELECT '\\'`,
		split:  []string{`SELECT $$\$$;`, ` SELECT 1 AS "a\";`, ` SELECT B'01', X'1F';`, ` SELECT '\\'`},
		stmts:  []string{`SELECT $$\$$`, `SELECT 1 AS "a\"`, `SELECT B'01', X'1F'`, `SELECT '\\'`},
		server: true,
	},
	{
		name: "a bit string ends at its next quote",
		// The server rejects the digit \, but only after the lexer ended
		// the bit string there.
		sql:   `SELECT X'\'; SELECT 'a\';b'`,
		split: []string{`SELECT X'\';`, ` SELECT 'a\';b'`},
		stmts: []string{`SELECT X'\'`, `SELECT 'a\';b'`},
	},
	{
		name:   "comment markers in a string with an escaped quote",
		sql:    `SELECT '\'--;', '/*\';'; SELECT 2`,
		split:  []string{`SELECT '\'--;', '/*\';';`, ` SELECT 2`},
		stmts:  []string{`SELECT '\'--;', '/*\';'`, `SELECT 2`},
		server: true,
	},
	{
		name:  "unterminated string ending in a backslash",
		sql:   `SELECT 1; SELECT 'a;\`,
		split: []string{"SELECT 1;", ` SELECT 'a;\`},
		stmts: []string{"SELECT 1", `SELECT 'a;\`},
	},
}

// allSplitCases returns splitCases and offCases, the latter marked off.
func allSplitCases() []splitCase {
	out := slices.Clone(splitCases)
	for _, c := range offCases {
		c.off = true
		c.name = "off: " + c.name
		out = append(out, c)
	}
	return out
}

func TestSplit(t *testing.T) {
	for _, c := range allSplitCases() {
		t.Run(c.name, func(t *testing.T) {
			lx := c.lexer()
			got := lx.Split(c.sql)
			if !reflect.DeepEqual(got, c.split) {
				t.Errorf("Split(%q):\n got %q\nwant %q", c.sql, got, c.split)
			}
			// The pieces add up to the input, but for a blank tail.
			joined := strings.Join(got, "")
			if !strings.HasPrefix(c.sql, joined) || lx.TrimLeadingComments(c.sql[len(joined):]) != "" {
				t.Errorf("Split(%q) pieces add up to %q", c.sql, joined)
			}
			if got := lx.Statements(c.sql); !reflect.DeepEqual(got, c.stmts) {
				t.Errorf("Statements(%q):\n got %q\nwant %q", c.sql, got, c.stmts)
			}
			if !c.off {
				// The package functions are the zero Lexer's.
				if got := Split(c.sql); !reflect.DeepEqual(got, c.split) {
					t.Errorf("package Split(%q) = %q", c.sql, got)
				}
				if got := Statements(c.sql); !reflect.DeepEqual(got, c.stmts) {
					t.Errorf("package Statements(%q) = %q", c.sql, got)
				}
			}
		})
	}
}

func TestForStandardConformingStrings(t *testing.T) {
	for v, want := range map[string]bool{
		"off": true, "OFF": true, " off ": true, "false": true, "no": true, "0": true,
		"on": false, "ON": false, "true": false, "": false, "yes": false, "1": false,
	} {
		if got := ForStandardConformingStrings(v).BackslashStrings; got != want {
			t.Errorf("ForStandardConformingStrings(%q).BackslashStrings = %v, want %v", v, got, want)
		}
	}
}

func TestTrimLeadingComments(t *testing.T) {
	for in, want := range map[string]string{
		"":               "",
		"  \n\t":         "",
		"SELECT 1; -- x": "SELECT 1; -- x",
		"\n--\n-- Name: x; Type: INDEX\n--\n\nCREATE INDEX i ON t (a);": "CREATE INDEX i ON t (a);",
		"/* a /* nested */ b */ SET x = 1":                              "SET x = 1",
		"/* unterminated ":                                              "",
		"-- no newline":                                                 "",
		"'-- not a comment'":                                            "'-- not a comment'",
		" /**/-\n-1":                                                    "-\n-1",
	} {
		if got := TrimLeadingComments(in); got != want {
			t.Errorf("TrimLeadingComments(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestTokens(t *testing.T) {
	for _, c := range []struct {
		in   string
		n    int
		want []string
	}{
		{
			"-- x\nALTER TABLE ONLY \"My Schema\".\"Odd.\"\"Name\"\"\"\n    ADD CONSTRAINT u UNIQUE (a);", 16,
			[]string{"ALTER", "TABLE", "ONLY", `"My Schema"`, ".", `"Odd.""Name"""`, "ADD", "CONSTRAINT", "u", "UNIQUE", "(", "a", ")", ";"},
		},
		{"SELECT pg_catalog.set_config('search_path', '', false);", 5, []string{"SELECT", "pg_catalog", ".", "set_config", "("}},
		{"CREATE INDEX a$b ON /* c */ t$1 USING btree (x) WHERE y <> 'a b'", 16,
			[]string{"CREATE", "INDEX", "a$b", "ON", "t$1", "USING", "btree", "(", "x", ")", "WHERE", "y", "<", ">", "'a b'"}},
		{"SELECT $1, $$x y$$, E'\\'', 1.5e3", 16, []string{"SELECT", "$1", ",", "$$x y$$", ",", `E'\''`, ",", "1", ".", "5e3"}},
		{"", 3, nil},
	} {
		if got := Tokens(c.in, c.n); !reflect.DeepEqual(got, c.want) {
			t.Errorf("Tokens(%q, %d):\n got %q\nwant %q", c.in, c.n, got, c.want)
		}
	}
	off := Lexer{BackslashStrings: true}
	in := `SELECT 'it\'s', E'\'', X'\', '\\' x`
	want := []string{"SELECT", `'it\'s'`, ",", `E'\''`, ",", `X'\'`, ",", `'\\'`, "x"}
	if got := off.Tokens(in, 16); !reflect.DeepEqual(got, want) {
		t.Errorf("off: Tokens(%q):\n got %q\nwant %q", in, got, want)
	}
}
