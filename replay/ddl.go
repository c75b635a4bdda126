package replay

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"unicode"
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
}

// createsWithRows reports whether the command creates a table together
// with its rows. Those rows are in the stream as INSERTs that precede the
// DDL message (the event trigger fires at the command's end), so replay
// runs the command first and empties what it created (see ctasFirst).
func (m *ddlMessage) createsWithRows() bool {
	return m.Tag == "CREATE TABLE AS" || m.Tag == "SELECT INTO"
}

// statement returns the DDL statement the message stands for.
func (m *ddlMessage) statement() (string, error) {
	if m.Synthetic {
		return m.Query, nil
	}
	var ddl []string
	for _, s := range splitStatements(m.Query) {
		if isDDL(s) || isSelectInto(s) {
			ddl = append(ddl, s)
		}
	}
	if m.N < 1 || m.N > len(ddl) {
		return "", fmt.Errorf("DDL %s ran inside a function, procedure or DO block (query %.80q), which cannot be replayed exactly: restore to a point before it, or take a new base backup after it", m.Tag, m.Query)
	}
	return ddl[m.N-1], nil
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

var (
	quoted     = regexp.MustCompile(`'(?:[^']|'')*'|"(?:[^"]|"")*"`)
	intoWord   = regexp.MustCompile(`(?i)(^|[^a-z0-9_$])into($|[^a-z0-9_$])`)
	insertInto = regexp.MustCompile(`(?i)(^|[^a-z0-9_$])(insert|merge)\s+into($|[^a-z0-9_$])`)
)

// isSelectInto recognises SELECT ... INTO new_table (a DDL command, though
// it starts with SELECT or WITH): INTO outside quotes, not part of INSERT
// INTO or MERGE INTO.
func isSelectInto(stmt string) bool {
	word := strings.ToUpper(strings.TrimLeftFunc(stmt, func(r rune) bool { return unicode.IsSpace(r) || r == '(' }))
	if !strings.HasPrefix(word, "SELECT") && !strings.HasPrefix(word, "WITH") {
		return false
	}
	bare := quoted.ReplaceAllString(stmt, "''")
	return intoWord.MatchString(bare) && !insertInto.MatchString(bare)
}

func isDDL(stmt string) bool {
	word := strings.ToUpper(strings.TrimLeftFunc(stmt, func(r rune) bool { return unicode.IsSpace(r) || r == '(' }))
	if i := strings.IndexFunc(word, func(r rune) bool { return !unicode.IsLetter(r) }); i >= 0 {
		word = word[:i]
	}
	return word != "" && !notDDL[word]
}

// splitStatements splits a query string at top-level semicolons, minding
// quotes, E” strings, quoted identifiers, dollar quotes and comments.
// Comments are dropped; empty statements are skipped.
func splitStatements(q string) []string {
	var out []string
	var cur strings.Builder
	flush := func() {
		if s := strings.TrimSpace(cur.String()); s != "" {
			out = append(out, s)
		}
		cur.Reset()
	}
	for i := 0; i < len(q); {
		c := q[i]
		switch {
		case c == ';':
			flush()
			i++
		case c == '-' && i+1 < len(q) && q[i+1] == '-':
			for i < len(q) && q[i] != '\n' {
				i++
			}
			cur.WriteByte(' ')
		case c == '/' && i+1 < len(q) && q[i+1] == '*':
			depth := 0
			for i < len(q) {
				if strings.HasPrefix(q[i:], "/*") {
					depth++
					i += 2
				} else if strings.HasPrefix(q[i:], "*/") {
					depth--
					i += 2
					if depth == 0 {
						break
					}
				} else {
					i++
				}
			}
			cur.WriteByte(' ')
		case c == '\'' || c == '"':
			escapes := c == '\'' && i > 0 && (q[i-1] == 'E' || q[i-1] == 'e') && (i < 2 || !isIdent(q[i-2]))
			j := i + 1
			for j < len(q) {
				if escapes && q[j] == '\\' {
					j += 2
					continue
				}
				if q[j] == c {
					if j+1 < len(q) && q[j+1] == c {
						j += 2
						continue
					}
					break
				}
				j++
			}
			j = min(j+1, len(q))
			cur.WriteString(q[i:j])
			i = j
		case c == '$' && (i == 0 || !isIdent(q[i-1])):
			tagEnd := i + 1
			for tagEnd < len(q) && isIdent(q[tagEnd]) && !(q[tagEnd] >= '0' && q[tagEnd] <= '9' && tagEnd == i+1) {
				tagEnd++
			}
			if tagEnd < len(q) && q[tagEnd] == '$' {
				tag := q[i : tagEnd+1]
				end := strings.Index(q[tagEnd+1:], tag)
				if end < 0 {
					cur.WriteString(q[i:])
					i = len(q)
				} else {
					stop := tagEnd + 1 + end + len(tag)
					cur.WriteString(q[i:stop])
					i = stop
				}
			} else {
				cur.WriteByte(c)
				i++
			}
		default:
			cur.WriteByte(c)
			i++
		}
	}
	flush()
	return out
}

func isIdent(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c >= 0x80
}
