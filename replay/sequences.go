package replay

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// SequencePrefix is the logical-message prefix of the agent's sequence
// snapshots. Sequences are not in PostgreSQL 15's logical stream, so the
// agent records their positions in it whenever they move.
const SequencePrefix = "wayback.seq"

type sequenceValue struct {
	Schema string `json:"s"`
	Name   string `json:"n"`
	Value  int64  `json:"v"`
}

func parseSequences(content []byte) ([]sequenceValue, error) {
	var v []sequenceValue
	if err := json.Unmarshal(content, &v); err != nil {
		return nil, fmt.Errorf("decode sequence snapshot: %w", err)
	}
	return v, nil
}

// setSequences moves each sequence forward to the newest snapshot replayed
// (never backward: the base backup or replayed rows may be ahead).
func setSequences(ctx context.Context, conn *pgx.Conn, snap []sequenceValue) error {
	for _, s := range snap {
		seq := pgx.Identifier{s.Schema, s.Name}.Sanitize()
		var exists bool
		if err := conn.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", seq).Scan(&exists); err != nil || !exists {
			continue // dropped since, or unreadable: AdvanceSequences still covers owned ones
		}
		// The snapshot's value was handed out (is_called). The target's
		// sequence is behind it unless it has handed out as much: a
		// sequence at last_value = $2 that is not called (new, or just
		// restarted) would hand out $2 again.
		_, err := conn.Exec(ctx, `SELECT pg_catalog.setval($1::regclass, $2, true)
			FROM `+seq+` WHERE $2 > last_value OR ($2 = last_value AND NOT is_called)`, seq, s.Value)
		if err != nil {
			return fmt.Errorf("set sequence %s: %w", seq, err)
		}
	}
	return nil
}
