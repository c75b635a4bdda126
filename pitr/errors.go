package pitr

import (
	"errors"
	"fmt"
)

// Kinds of planning failure, for callers that branch on them with
// errors.Is. The errors returned carry a full, user-facing message; these
// only classify it.
var (
	// ErrNoBackup: the archive holds no complete base backup.
	ErrNoBackup = errors.New("no complete base backup")
	// ErrBeforeOldestBackup: the target lies before the oldest base backup.
	ErrBeforeOldestBackup = errors.New("target before the oldest base backup")
	// ErrGap: no store holds a segment covering part of the needed range.
	ErrGap = errors.New("gap in the archive")
	// ErrAfterNewest: the target lies after the newest archived point.
	ErrAfterNewest = errors.New("target after the newest archived point")
)

// kindError is a user-facing message classified by one of the Err values
// above: Error() is the message alone, errors.Is matches the kind.
type kindError struct {
	kind error
	msg  string
}

func (e *kindError) Error() string { return e.msg }
func (e *kindError) Unwrap() error { return e.kind }

func errorOf(kind error, format string, args ...any) error {
	return &kindError{kind: kind, msg: fmt.Sprintf(format, args...)}
}
