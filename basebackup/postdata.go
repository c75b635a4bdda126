package basebackup

import (
	"strings"

	"github.com/wayback-pitr/wayback/sqltext"
)

// postDataKind is how the load schedules one post-data statement.
type postDataKind int

const (
	// postSerial statements run after everything else, in the dump's order.
	postSerial postDataKind = iota
	// postSetting statements (SET, set_config) shape the session every
	// later statement runs in.
	postSetting
	// postIndex statements build an index (CREATE INDEX, or a primary key,
	// unique or exclusion constraint) on one table: they depend only on
	// that table's rows and the pre-data, so they run in parallel, each as
	// soon as its table is loaded.
	postIndex
)

// postDataStatement is one statement of the post-data section.
type postDataStatement struct {
	SQL  string
	Kind postDataKind
	// Schema and Table name the table a postIndex statement builds on;
	// Schema is "" if the dump did not qualify the name.
	Schema, Table string
}

// classifyPostData sorts the post-data section's statements into those
// that set the session up, index builds that may run in parallel, and the
// rest. pg_dump writes ALTER TABLE ONLY t ADD CONSTRAINT c PRIMARY KEY
// (...) and CREATE [UNIQUE] INDEX i ON [ONLY] t USING ...; anything else,
// including foreign keys (which need the referenced table's index and
// lock two tables), partition index attachment, triggers and rules, stays
// in order after the indexes.
func classifyPostData(sql string) []postDataStatement {
	stmts := sqltext.Split(sql)
	out := make([]postDataStatement, 0, len(stmts))
	for _, s := range stmts {
		w := sqltext.Tokens(s, 16)
		kw := func(i int, k string) bool { return i < len(w) && strings.EqualFold(w[i], k) }
		st := postDataStatement{SQL: s}
		switch {
		case kw(0, "SET"),
			kw(0, "SELECT") && kw(1, "pg_catalog") && kw(2, ".") && kw(3, "set_config") && kw(4, "("):
			st.Kind = postSetting
		case kw(0, "CREATE") && (kw(1, "INDEX") || kw(1, "UNIQUE") && kw(2, "INDEX")):
			i := 2
			if kw(1, "UNIQUE") {
				i = 3
			}
			// name ON [ONLY] table; CONCURRENTLY and IF NOT EXISTS are not
			// pg_dump's and stay serial.
			if kw(i, "CONCURRENTLY") || kw(i, "IF") || !kw(i+1, "ON") {
				break
			}
			i += 2
			if kw(i, "ONLY") {
				i++
			}
			if schema, table, _, ok := qualifiedName(w[min(i, len(w)):]); ok {
				st.Kind, st.Schema, st.Table = postIndex, schema, table
			}
		case kw(0, "ALTER") && kw(1, "TABLE"):
			i := 2
			if kw(i, "ONLY") {
				i++
			}
			schema, table, used, ok := qualifiedName(w[min(i, len(w)):])
			if !ok {
				break
			}
			i += used
			if kw(i, "ADD") && kw(i+1, "CONSTRAINT") && (kw(i+3, "PRIMARY") || kw(i+3, "UNIQUE") || kw(i+3, "EXCLUDE")) {
				st.Kind, st.Schema, st.Table = postIndex, schema, table
			}
		}
		out = append(out, st)
	}
	return out
}

// qualifiedName reads schema.name (or a bare name) from tokens as
// sqltext.Tokens returns them: the names as PostgreSQL resolves them
// (quotes removed, bare identifiers folded to lower case) and how many
// tokens it used.
func qualifiedName(tok []string) (schema, name string, used int, ok bool) {
	if len(tok) == 0 || !isName(tok[0]) {
		return "", "", 0, false
	}
	if len(tok) >= 3 && tok[1] == "." && isName(tok[2]) {
		return identName(tok[0]), identName(tok[2]), 3, true
	}
	return "", identName(tok[0]), 1, true
}

func isName(t string) bool {
	return t != "" && (t[0] == '"' || sqltext.IsIdentStart(t[0]))
}

func identName(t string) string {
	if len(t) >= 2 && t[0] == '"' && t[len(t)-1] == '"' {
		return strings.ReplaceAll(t[1:len(t)-1], `""`, `"`)
	}
	return strings.ToLower(t)
}
