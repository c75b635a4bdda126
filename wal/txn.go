package wal

import (
	"fmt"
	"time"
)

// Op is the kind of a row change.
type Op byte

// Change kinds. The values are the pgoutput message types.
const (
	OpInsert   Op = MsgInsert
	OpUpdate   Op = MsgUpdate
	OpDelete   Op = MsgDelete
	OpTruncate Op = MsgTruncate
	OpMessage  Op = MsgMessage
)

// String returns the lower-case name used on the command line and in JSON.
func (o Op) String() string {
	switch o {
	case OpInsert:
		return "insert"
	case OpUpdate:
		return "update"
	case OpDelete:
		return "delete"
	case OpTruncate:
		return "truncate"
	case OpMessage:
		return "message"
	}
	return fmt.Sprintf("op(%c)", byte(o))
}

// Change is one decoded change inside a transaction.
type Change struct {
	Op  Op
	Rel *Relation // insert, update, delete

	// Old is the old row image: for OldKind 'K' only the replica identity
	// columns carry values (the others are KindNull placeholders, not NULLs);
	// for 'O' (REPLICA IDENTITY FULL) the whole old row. An UPDATE that
	// did not change the key has no old image (OldKind 0).
	OldKind byte
	Old     Tuple
	New     Tuple // insert, update

	Truncated       []*Relation // truncate
	TruncateOptions byte        // TruncateCascade | TruncateRestartIdentity

	Prefix  string // message
	Content []byte // message
}

// Txn is one committed transaction as the source decoded it.
type Txn struct {
	XID        uint32
	CommitLSN  LSN       // position of the commit record
	EndLSN     LSN       // end of the commit record: where the next transaction can start
	CommitTime time.Time // the source server's commit timestamp
	Changes    []Change
}
