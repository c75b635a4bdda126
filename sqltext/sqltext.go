// Package sqltext cuts SQL text into statements and tokens with
// PostgreSQL's lexical rules, as far as they matter for telling where a
// statement ends: string literals (standard, and E'...' with backslash
// escapes), quoted identifiers, dollar-quoted strings, -- and nested /* */
// comments, and identifiers that contain $ (a$b, a$$b$ are single
// identifiers, while $1 and $tag$ start a parameter and a dollar quote).
// A semicolon inside any of those does not end a statement.
//
// It does not parse: it is for SQL that a server will parse later
// (pg_dump's output, DDL captured from a session), and it follows the
// server's lexer so that each piece it cuts is what the server would have
// run as one statement. The package functions read strings as with
// standard_conforming_strings on, as pg_dump writes them; a Lexer reads
// them as a session with the setting off did.
package sqltext

import "strings"

// kind is what a token is, as far as splitting cares.
type kind int

const (
	// space is a run of whitespace.
	space kind = iota
	// comment is a -- line comment (without its newline) or a /* */
	// block comment, nested ones included.
	comment
	// semicolon is a ; outside any literal or comment: the end of a
	// statement.
	semicolon
	// other is every other token: a word (keyword or bare identifier), a
	// number, a parameter, a string literal, a quoted identifier, a
	// dollar-quoted string, or one punctuation byte.
	other
)

// Lexer cuts SQL text under one value of standard_conforming_strings, the
// only setting that changes where a token ends. Its zero value reads
// strings as with the setting on (the default since PostgreSQL 9.1, and
// how pg_dump writes).
type Lexer struct {
	// BackslashStrings reads ordinary '...' strings as a session with
	// standard_conforming_strings = off does: a backslash escapes the next
	// byte, as in E'...', so 'it\'s' is one string. E'...' strings,
	// quoted identifiers, dollar quotes and B'...' and X'...' strings
	// read the same either way.
	BackslashStrings bool
}

// ForStandardConformingStrings returns the Lexer for a session whose
// standard_conforming_strings has the given value, as current_setting or
// SHOW prints it ("on" or "off"; PostgreSQL's other spellings of false are
// taken too). An empty or unknown value reads as on, the default.
func ForStandardConformingStrings(value string) Lexer {
	switch strings.ToLower(strings.TrimSpace(value)) {
	case "off", "of", "false", "fals", "fal", "fa", "f", "no", "n", "0":
		return Lexer{BackslashStrings: true}
	}
	return Lexer{}
}

// next returns the kind of the token that starts at sql[i] and the index
// just past it. An unterminated literal or comment runs to the end of sql.
func (l Lexer) next(sql string, i int) (kind, int) {
	n := len(sql)
	c := sql[i]
	switch {
	case isSpace(c):
		j := i + 1
		for j < n && isSpace(sql[j]) {
			j++
		}
		return space, j
	case c == ';':
		return semicolon, i + 1
	case c == '-' && i+1 < n && sql[i+1] == '-':
		j := strings.IndexByte(sql[i:], '\n')
		if j < 0 {
			return comment, n
		}
		return comment, i + j
	case c == '/' && i+1 < n && sql[i+1] == '*':
		// Block comments nest in PostgreSQL, as the SQL standard has
		// them; pg_dump's comments do not, but captured DDL may.
		depth := 1
		j := i + 2
		for j < n && depth > 0 {
			switch {
			case sql[j] == '/' && j+1 < n && sql[j+1] == '*':
				depth++
				j += 2
			case sql[j] == '*' && j+1 < n && sql[j+1] == '/':
				depth--
				j += 2
			default:
				j++
			}
		}
		return comment, j
	case c == '\'':
		return other, quoted(sql, i, '\'', l.BackslashStrings)
	case c == '"':
		return other, quoted(sql, i, '"', false)
	case c == '$':
		j := i + 1
		if j < n && isDigit(sql[j]) {
			// $1: a parameter; PostgreSQL's lexer ends it at the
			// digits, so a $ right after it starts a new token.
			for j < n && isDigit(sql[j]) {
				j++
			}
			return other, j
		}
		// $tag$ or $$: the tag is an identifier without $, and may not
		// start with a digit (that was a parameter above).
		for j < n && (IsIdentStart(sql[j]) || isDigit(sql[j])) {
			j++
		}
		if j >= n || sql[j] != '$' {
			return other, i + 1 // a lone $, which the server will reject
		}
		tag := sql[i : j+1]
		end := strings.Index(sql[j+1:], tag)
		if end < 0 {
			return other, n
		}
		return other, j + 1 + end + len(tag)
	case IsIdentStart(c):
		j := i + 1
		for j < n && IsIdentChar(sql[j]) {
			j++
		}
		// E'...' is one token (an escape string), and B'...' and X'...'
		// (bit strings), only when the letter stands alone: in
		// "type'...'" or "some_e'...'" the word ends first.
		if j == i+1 && j < n && sql[j] == '\'' {
			switch c {
			case 'E', 'e':
				return other, quoted(sql, j, '\'', true)
			case 'B', 'b', 'X', 'x':
				// A bit string ends at the next quote whatever the
				// setting: the server's lexer reads no escapes in it,
				// and a quote right after it starts a new string.
				if end := strings.IndexByte(sql[j+1:], '\''); end >= 0 {
					return other, j + 1 + end + 1
				}
				return other, n
			}
		}
		return other, j
	case isDigit(c):
		// A number. It takes the letters that follow (1e5; PG 15
		// rejects junk such as 12abc anyway) but not a $, which the
		// server's lexer does not take into a number either.
		j := i + 1
		for j < n && IsIdentChar(sql[j]) && sql[j] != '$' {
			j++
		}
		return other, j
	default:
		return other, i + 1
	}
}

// quoted returns the index just past the literal whose opening quote is
// at sql[i]: a doubled quote stands for itself, and with backslash a
// backslash escapes the next byte (E'...' strings).
func quoted(sql string, i int, q byte, backslash bool) int {
	n := len(sql)
	for j := i + 1; j < n; j++ {
		switch sql[j] {
		case '\\':
			if backslash {
				j++
			}
		case q:
			if j+1 < n && sql[j+1] == q {
				j++
				continue
			}
			return j + 1
		}
	}
	return n
}

// IsIdentStart reports whether c can start an unquoted identifier or
// keyword: an ASCII letter, an underscore, or any byte of a multi-byte
// UTF-8 character.
func IsIdentStart(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80
}

// IsIdentChar reports whether c can continue an unquoted identifier:
// everything that can start one, digits, and $.
func IsIdentChar(c byte) bool {
	return IsIdentStart(c) || isDigit(c) || c == '$'
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// pgSpace is PostgreSQL 15's whitespace (scan.l's space class; a \v
// is a syntax error there, checked against the server).
const pgSpace = " \t\n\r\f"

func isSpace(c byte) bool { return strings.IndexByte(pgSpace, c) >= 0 }

// Split cuts sql into its top-level statements, each ending in its
// semicolon and starting with whatever whitespace and comments precede
// it, so that the pieces add up to sql. A last statement without a
// semicolon is kept too, unless it is only whitespace and comments (a
// dump's closing comment); a lone semicolon makes a piece of its own.
func Split(sql string) []string { return Lexer{}.Split(sql) }

// Split is the package's Split, with strings read as l reads them.
func (l Lexer) Split(sql string) []string {
	var out []string
	start, blank := 0, true
	for i := 0; i < len(sql); {
		k, j := l.next(sql, i)
		switch k {
		case semicolon:
			out = append(out, sql[start:j])
			start, blank = j, true
		case other:
			blank = false
		}
		i = j
	}
	if !blank {
		out = append(out, sql[start:])
	}
	return out
}

// Statements cuts sql into the statements to run one by one: each
// without its semicolon, with every comment replaced by a space (as the
// server reads it) and surrounding white space trimmed. Empty statements
// are left out.
func Statements(sql string) []string { return Lexer{}.Statements(sql) }

// Statements is the package's Statements, with strings read as l reads
// them.
func (l Lexer) Statements(sql string) []string {
	var out []string
	var cur strings.Builder
	flush := func() {
		if s := strings.Trim(cur.String(), pgSpace); s != "" {
			out = append(out, s)
		}
		cur.Reset()
	}
	for i := 0; i < len(sql); {
		k, j := l.next(sql, i)
		switch k {
		case semicolon:
			flush()
		case comment:
			cur.WriteByte(' ')
		default:
			cur.WriteString(sql[i:j])
		}
		i = j
	}
	flush()
	return out
}

// TrimLeadingComments drops the whitespace and comments that lead a
// statement.
func TrimLeadingComments(stmt string) string { return Lexer{}.TrimLeadingComments(stmt) }

// TrimLeadingComments is the package's TrimLeadingComments, with strings
// read as l reads them.
func (l Lexer) TrimLeadingComments(stmt string) string {
	for i := 0; i < len(stmt); {
		k, j := l.next(stmt, i)
		if k != space && k != comment {
			return stmt[i:]
		}
		i = j
	}
	return ""
}

// Tokens returns the first n tokens of a statement, skipping whitespace
// and comments: words (keywords and bare identifiers), numbers,
// parameters, literals and quoted identifiers as written, and each other
// byte (punctuation, including ;) on its own.
func Tokens(stmt string, n int) []string { return Lexer{}.Tokens(stmt, n) }

// Tokens is the package's Tokens, with strings read as l reads them.
func (l Lexer) Tokens(stmt string, n int) []string {
	var out []string
	for i := 0; i < len(stmt) && len(out) < n; {
		k, j := l.next(stmt, i)
		if k == other || k == semicolon {
			out = append(out, stmt[i:j])
		}
		i = j
	}
	return out
}
