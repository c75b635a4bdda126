package basebackup

import (
	"strings"
)

// splitStatements cuts SQL text into its top-level statements, each ending
// in its semicolon (a last statement without one is kept too). It knows
// enough of PostgreSQL's lexical rules to never cut inside a string
// literal (standard or escape string), a quoted identifier, a dollar-quoted body or
// a comment, which is all it takes for pg_dump's output.
func splitStatements(sql string) []string {
	var out []string
	start := 0
	n := len(sql)
	for i := 0; i < n; {
		c := sql[i]
		switch {
		case c == ';':
			out = append(out, sql[start:i+1])
			i++
			start = i
		case c == '\'':
			escapes := i > 0 && (sql[i-1] == 'E' || sql[i-1] == 'e') && (i < 2 || !isIdentChar(sql[i-2]))
			i++
			for i < n {
				if escapes && sql[i] == '\\' {
					i += 2
					continue
				}
				if sql[i] == '\'' {
					if i+1 < n && sql[i+1] == '\'' {
						i += 2
						continue
					}
					break
				}
				i++
			}
			i++
		case c == '"':
			i++
			for i < n {
				if sql[i] == '"' {
					if i+1 < n && sql[i+1] == '"' {
						i += 2
						continue
					}
					break
				}
				i++
			}
			i++
		case c == '-' && i+1 < n && sql[i+1] == '-':
			for i < n && sql[i] != '\n' {
				i++
			}
		case c == '/' && i+1 < n && sql[i+1] == '*':
			depth := 0
			for i < n {
				if sql[i] == '/' && i+1 < n && sql[i+1] == '*' {
					depth++
					i += 2
					continue
				}
				if sql[i] == '*' && i+1 < n && sql[i+1] == '/' {
					depth--
					i += 2
					if depth == 0 {
						break
					}
					continue
				}
				i++
			}
		case c == '$' && (i == 0 || !isIdentChar(sql[i-1])):
			// $tag$ or $$; $1 is a parameter, not a quote.
			j := i + 1
			for j < n && isIdentChar(sql[j]) && sql[j] != '$' {
				j++
			}
			if j >= n || sql[j] != '$' || (j > i+1 && sql[i+1] >= '0' && sql[i+1] <= '9') {
				i++
				continue
			}
			tag := sql[i : j+1]
			end := strings.Index(sql[j+1:], tag)
			if end < 0 {
				i = n
				continue
			}
			i = j + 1 + end + len(tag)
		default:
			i++
		}
	}
	if strings.TrimSpace(stripComments(sql[start:])) != "" {
		out = append(out, sql[start:])
	}
	return out
}

func isIdentChar(c byte) bool {
	return c == '_' || c == '$' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80
}

// stripComments drops the comments and whitespace that lead a statement.
func stripComments(s string) string {
	for {
		s = strings.TrimLeft(s, " \t\r\n")
		switch {
		case strings.HasPrefix(s, "--"):
			if i := strings.IndexByte(s, '\n'); i >= 0 {
				s = s[i+1:]
			} else {
				return ""
			}
		case strings.HasPrefix(s, "/*"):
			if i := strings.Index(s, "*/"); i >= 0 { // pg_dump writes no nested comments
				s = s[i+2:]
			} else {
				return ""
			}
		default:
			return s
		}
	}
}

// words returns the first n tokens of a statement: words (keywords and
// bare identifiers) and quoted identifiers as written, and each
// punctuation character on its own.
func words(stmt string, n int) []string {
	s := stripComments(stmt)
	var out []string
	for i := 0; i < len(s) && len(out) < n; {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
			i++
		case c == '"':
			j := i + 1
			for j < len(s) {
				if s[j] == '"' {
					if j+1 < len(s) && s[j+1] == '"' {
						j += 2
						continue
					}
					break
				}
				j++
			}
			out = append(out, s[i:min(j+1, len(s))])
			i = j + 1
		case isIdentChar(c):
			j := i
			for j < len(s) && isIdentChar(s[j]) {
				j++
			}
			out = append(out, s[i:j])
			i = j
		default:
			out = append(out, string(c))
			i++
		}
	}
	return out
}

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
	stmts := splitStatements(sql)
	out := make([]postDataStatement, 0, len(stmts))
	for _, s := range stmts {
		w := words(s, 16)
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

// qualifiedName reads schema.name (or a bare name) from tokens as words
// returns them: the names as PostgreSQL resolves them (quotes removed,
// bare identifiers folded to lower case) and how many tokens it used.
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
	return t != "" && (t[0] == '"' || isIdentChar(t[0]))
}

func identName(t string) string {
	if len(t) >= 2 && t[0] == '"' && t[len(t)-1] == '"' {
		return strings.ReplaceAll(t[1:len(t)-1], `""`, `"`)
	}
	return strings.ToLower(t)
}
