package replay

import (
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strings"
	"unicode"

	"github.com/wayback-pitr/wayback/sqltext"
	"github.com/wayback-pitr/wayback/wal"
)

// DDLPrefix is the logical-message prefix of captured DDL (see
// agent/ddl.go).
const DDLPrefix = "wayback.ddl"

// ddlMessage is the payload the capture trigger emits.
type ddlMessage struct {
	Query      string `json:"query"`
	N          int    `json:"n"` // which DDL statement of Query this is, from 1
	Tag        string `json:"tag"`
	SearchPath string `json:"search_path"`
	Role       string `json:"role"`
	Synthetic  bool   `json:"synthetic"` // made by the trigger itself (REPLICA IDENTITY FULL)
	// Settings that parse literals (DateStyle, TimeZone, ...) as they were
	// in the session that ran the DDL; absent in older archives.
	Settings map[string]string `json:"settings"`
	// Tables a CREATE TABLE AS or SELECT INTO created (absent in older
	// archives and for other commands).
	Tables []struct {
		Schema string `json:"s"`
		Name   string `json:"n"`
	} `json:"tables"`
	// Missing lists, after an ALTER TABLE, the columns whose existing rows
	// read a stored "missing value" (ADD COLUMN with a non-volatile
	// default), with that value as an array literal printed under Settings.
	Missing []struct {
		Schema string `json:"s"`
		Name   string `json:"n"`
		Column string `json:"c"`
		Value  string `json:"v"`
	} `json:"missing"`
}

// lexer reads the query as the server read it in the capturing session:
// with standard_conforming_strings off, 'it\'s; odd' is one string, and
// cut as if the setting were on it would end a statement in the middle.
// Replay runs the statement under the same setting (see setLocal).
func (m *ddlMessage) lexer() sqltext.Lexer {
	return sqltext.ForStandardConformingStrings(m.Settings["standard_conforming_strings"])
}

// createsWithRows reports whether the command creates a table together
// with its rows. Those rows are in the stream as INSERTs that precede the
// DDL message (the event trigger fires at the command's end), so replay
// runs the command first and empties what it created (see ctasFirst).
func (m *ddlMessage) createsWithRows() bool {
	return m.Tag == "CREATE TABLE AS" || m.Tag == "SELECT INTO"
}

// ddlStep is what replay does at one DDL message: run stmt, or nothing
// (skip: a command nested in another statement of the same query string,
// which that statement reproduces), or fail with err.
type ddlStep struct {
	msg  *ddlMessage
	stmt string
	skip bool
	err  error
}

// planDDL decides what each DDL message of a transaction runs, by index in
// changes.
//
// The capture trigger fires once per DDL command that ends, numbering them
// within the query string. Usually that is once per DDL statement of the
// string, and the n-th message runs the n-th statement. But commands run
// by other commands fire it too, before the outer one ends: an extension's
// script under CREATE EXTENSION, the temporary tables of REFRESH
// MATERIALIZED VIEW CONCURRENTLY, the elements of CREATE SCHEMA. And some
// statements fire nothing (roles, databases). When the counts differ the
// messages are matched to statements by command tag from the end (an
// outer command's message comes after its nested ones), and messages that
// match no statement are nested and skipped. A statement that matches no
// message, or a message that matches none when nothing can be nested, is
// an error: better to stop than to guess.
func planDDL(changes []wal.Change) map[int]*ddlStep {
	plan := map[int]*ddlStep{}
	// The same text under another standard_conforming_strings is another
	// query.
	type query struct {
		text string
		lx   sqltext.Lexer
	}
	groups := map[query][]int{}
	var order []query
	for i := range changes {
		c := &changes[i]
		if c.Op != wal.OpMessage || c.Prefix != DDLPrefix {
			continue
		}
		m, err := parseDDL(c.Content)
		if err != nil {
			plan[i] = &ddlStep{err: err}
			continue
		}
		plan[i] = &ddlStep{msg: m}
		if m.Synthetic {
			plan[i].stmt = m.Query
			continue
		}
		key := query{m.Query, m.lexer()}
		if _, ok := groups[key]; !ok {
			order = append(order, key)
		}
		groups[key] = append(groups[key], i)
	}
	for _, key := range order {
		q, lx := key.text, key.lx
		idx := groups[key]
		stmts := ddlStatements(lx, q)
		first := plan[idx[0]].msg
		inside := fmt.Errorf("DDL %s ran inside a function, procedure or DO block (query %.80q), which cannot be replayed exactly: restore to a point before it, or take a new base backup after it", first.Tag, q)
		if len(stmts) == 0 {
			for _, i := range idx {
				plan[i].err = inside
			}
			continue
		}
		if len(idx) == len(stmts) {
			for _, i := range idx {
				st, err := plan[i].msg.statement()
				plan[i].stmt, plan[i].err = st, err
			}
			continue
		}
		// Align by tag from the end.
		assigned := make([]bool, len(stmts))
		j := len(stmts) - 1
		for k := len(idx) - 1; k >= 0; k-- {
			step := plan[idx[k]]
			match := -1
			for x := j; x >= 0; x-- {
				if tagMatches(lx, step.msg.Tag, stmts[x]) {
					match = x
					break
				}
			}
			if match < 0 {
				step.skip = true
				continue
			}
			step.stmt = inTransaction(stmts[match])
			assigned[match] = true
			j = match - 1
		}
		var bad error
		if len(idx) > len(stmts) && slices.Contains(assigned, false) {
			bad = fmt.Errorf("cannot tell which of the %d DDL commands captured for query %.80q are its %d statements: restore to a point before it, or take a new base backup after it", len(idx), q, len(stmts))
		}
		if len(idx) < len(stmts) {
			for _, i := range idx {
				if plan[i].skip {
					bad = fmt.Errorf("DDL %s of query %.80q matches none of its statements: restore to a point before it, or take a new base backup after it", plan[i].msg.Tag, q)
				}
			}
		}
		if bad != nil {
			for _, i := range idx {
				plan[i].err = bad
			}
		}
	}
	return plan
}

// createModifiers are words between CREATE and the object type that the
// command tag leaves out.
var createModifiers = map[string]bool{
	"OR": true, "REPLACE": true, "UNIQUE": true, "TEMP": true, "TEMPORARY": true, "UNLOGGED": true,
	"GLOBAL": true, "LOCAL": true, "TRUSTED": true, "PROCEDURAL": true, "DEFAULT": true,
	"RECURSIVE": true, "CONSTRAINT": true,
}

// tagMatches reports whether a statement has the command tag (at least
// its first two words: CREATE TABLE, ALTER TYPE, COMMENT, ...).
func tagMatches(lx sqltext.Lexer, tag, stmt string) bool {
	if tag == "SELECT INTO" {
		return isSelectInto(lx, stmt)
	}
	words := strings.FieldsFunc(strings.ToUpper(stmt), func(r rune) bool { return !unicode.IsLetter(r) && r != '_' })
	if len(words) > 0 && words[0] == "CREATE" {
		rest := words[1:]
		for len(rest) > 0 && createModifiers[rest[0]] {
			rest = rest[1:]
		}
		words = append([]string{"CREATE"}, rest...)
	}
	want := strings.Fields(tag)
	if len(want) > 2 {
		want = want[:2]
	}
	return len(words) >= len(want) && slices.Equal(words[:len(want)], want)
}

// statement returns the DDL statement the message stands for.
func (m *ddlMessage) statement() (string, error) {
	if m.Synthetic {
		return m.Query, nil
	}
	ddl := ddlStatements(m.lexer(), m.Query)
	if m.N < 1 || m.N > len(ddl) {
		return "", fmt.Errorf("DDL %s ran inside a function, procedure or DO block (query %.80q), which cannot be replayed exactly: restore to a point before it, or take a new base backup after it", m.Tag, m.Query)
	}
	return inTransaction(ddl[m.N-1]), nil
}

// ddlStatements returns the statements of a query string that fire the
// capture trigger, in order.
func ddlStatements(lx sqltext.Lexer, query string) []string {
	var out []string
	for _, s := range lx.Statements(query) {
		if isDDL(s) || isSelectInto(lx, s) {
			out = append(out, s)
		}
	}
	return out
}

var (
	createIndexConcurrently = regexp.MustCompile(`(?is)^(\s*CREATE\s+(?:UNIQUE\s+)?INDEX\s+)CONCURRENTLY\s+`)
	dropIndexConcurrently   = regexp.MustCompile(`(?is)^(\s*DROP\s+INDEX\s+)CONCURRENTLY\s+`)
	detachConcurrently      = regexp.MustCompile(`(?is)^(\s*ALTER\s+TABLE\s.*\sDETACH\s+PARTITION\s.*?)\s+(?:CONCURRENTLY|FINALIZE)\s*$`)
)

// inTransaction rewrites the commands that refuse to run in a transaction
// block (CREATE/DROP INDEX CONCURRENTLY, DETACH PARTITION CONCURRENTLY or
// FINALIZE) into their plain forms, which have the same result. Replay runs
// every DDL inside a transaction, and nobody else uses the target during a
// restore, so the concurrency buys nothing there.
func inTransaction(stmt string) string {
	stmt = createIndexConcurrently.ReplaceAllString(stmt, "${1}")
	stmt = dropIndexConcurrently.ReplaceAllString(stmt, "${1}")
	return detachConcurrently.ReplaceAllString(stmt, "${1}")
}

func parseDDL(content []byte) (*ddlMessage, error) {
	var m ddlMessage
	if err := json.Unmarshal(content, &m); err != nil {
		return nil, fmt.Errorf("decode captured DDL: %w", err)
	}
	return &m, nil
}

// notDDL are the first keywords of statements that fire no DDL event
// trigger; anything else in a query string counts as DDL.
var notDDL = map[string]bool{
	"SELECT": true, "INSERT": true, "UPDATE": true, "DELETE": true, "WITH": true, "VALUES": true,
	"TABLE": true, "COPY": true, "MERGE": true, "TRUNCATE": true, "BEGIN": true, "COMMIT": true,
	"END": true, "ROLLBACK": true, "ABORT": true, "START": true, "SAVEPOINT": true, "RELEASE": true,
	"SET": true, "SHOW": true, "RESET": true, "EXPLAIN": true, "ANALYZE": true, "ANALYSE": true,
	"VACUUM": true, "LOCK": true, "DO": true, "CALL": true, "PREPARE": true, "EXECUTE": true,
	"DEALLOCATE": true, "LISTEN": true, "UNLISTEN": true, "NOTIFY": true, "DISCARD": true,
	"CHECKPOINT": true, "FETCH": true, "DECLARE": true, "CLOSE": true, "MOVE": true, "CLUSTER": true,
	"REINDEX": true, "LOAD": true,
}

// isSelectInto recognises SELECT ... INTO new_table (a DDL command, though
// it starts with SELECT or WITH): the word INTO outside literals and
// quoted identifiers (read as lx reads them), not part of INSERT INTO or
// MERGE INTO.
func isSelectInto(lx sqltext.Lexer, stmt string) bool {
	// Most statements are ruled out by their first word, before the
	// whole statement (a long INSERT, say) is cut into tokens.
	word := strings.ToUpper(strings.TrimLeftFunc(stmt, func(r rune) bool { return unicode.IsSpace(r) || r == '(' }))
	if !strings.HasPrefix(word, "SELECT") && !strings.HasPrefix(word, "WITH") {
		return false
	}
	toks := lx.Tokens(stmt, math.MaxInt)
	for len(toks) > 0 && toks[0] == "(" {
		toks = toks[1:]
	}
	if len(toks) == 0 || !strings.EqualFold(toks[0], "SELECT") && !strings.EqualFold(toks[0], "WITH") {
		return false
	}
	into := false
	for i, t := range toks {
		if !strings.EqualFold(t, "INTO") {
			continue
		}
		if i > 0 && (strings.EqualFold(toks[i-1], "INSERT") || strings.EqualFold(toks[i-1], "MERGE")) {
			return false
		}
		into = true
	}
	return into
}

func isDDL(stmt string) bool {
	word := strings.ToUpper(strings.TrimLeftFunc(stmt, func(r rune) bool { return unicode.IsSpace(r) || r == '(' }))
	if i := strings.IndexFunc(word, func(r rune) bool { return !unicode.IsLetter(r) }); i >= 0 {
		word = word[:i]
	}
	return word != "" && !notDDL[word]
}
