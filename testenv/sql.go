package testenv

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Null is how QueryRows reports SQL NULL. It contains a NUL byte, which no
// PostgreSQL text value can contain, so it never collides with real data,
// and it still reads as NULL when printed with %q.
const Null = "\x00NULL"

// Exec runs one statement, or several separated by semicolons when no args
// are given, on a connection of its own. It exists so tests can set up
// schemas and data in one line without managing connections; use pgx
// directly for anything performance-sensitive.
func Exec(ctx context.Context, dsn string, sql string, args ...any) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return fmt.Errorf("testenv: connecting to %s: %w", redact(dsn), err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		return fmt.Errorf("testenv: executing %s: %w", abbreviate(sql), err)
	}
	return nil
}

// QueryRows runs one query on a connection of its own and returns every value
// in PostgreSQL's text representation (as psql would show it), so results of
// any type can be compared and printed for diagnostics without scanning code.
// SQL NULL is returned as the constant Null, distinguishable from the empty
// string.
func QueryRows(ctx context.Context, dsn string, sql string, args ...any) ([][]string, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("testenv: connecting to %s: %w", redact(dsn), err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	// A single result format code applies to every column: ask the server
	// for text throughout, whatever the types.
	qargs := append([]any{pgx.QueryResultFormats{pgx.TextFormatCode}}, args...)
	rows, err := conn.Query(ctx, sql, qargs...)
	if err != nil {
		return nil, fmt.Errorf("testenv: querying %s: %w", abbreviate(sql), err)
	}
	defer rows.Close()
	out := [][]string{}
	for rows.Next() {
		raw := rows.RawValues()
		row := make([]string, len(raw))
		for i, v := range raw {
			if v == nil {
				row[i] = Null
			} else {
				row[i] = string(v)
			}
		}
		out = append(out, row)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("testenv: querying %s: %w", abbreviate(sql), err)
	}
	return out, nil
}

// abbreviate shortens SQL for error messages.
func abbreviate(sql string) string {
	const limit = 200
	r := []rune(sql)
	if len(r) > limit {
		return fmt.Sprintf("%q...", string(r[:limit]))
	}
	return fmt.Sprintf("%q", sql)
}

// redact hides a password in a DSN for error messages.
func redact(dsn string) string {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return "(unparsable DSN)"
	}
	return fmt.Sprintf("%s:%d/%s", cfg.Host, cfg.Port, cfg.Database)
}
