package wal

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// Stream is one logical replication session on a slot, speaking pgoutput
// protocol 1 with logical messages enabled.
type Stream struct {
	conn *pgconn.PgConn
	// readDeadline is the read deadline currently set on the socket, so
	// Receive sets it only when it changes.
	readDeadline time.Time
}

// Event is what Receive returns: either a pgoutput message or a keepalive.
type Event struct {
	// Msg is a pgoutput message; it is only valid until the next Receive.
	Msg []byte
	// WALStart is the WAL position the server gave Msg: a change's record
	// start, a logical message's position, 0 for Relation messages. It
	// is no stream position; only Builder.AddAt compares it.
	WALStart LSN
	// Keepalive is set for a primary keepalive: the server has decoded
	// everything before ServerWALEnd.
	Keepalive      bool
	ServerWALEnd   LSN
	ServerTime     time.Time
	ReplyRequested bool
}

// ReplicationDSN adds replication=database to a connection string.
func ReplicationDSN(dsn string) (*pgconn.Config, error) {
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("parse postgres DSN: %w", err)
	}
	cfg.RuntimeParams["replication"] = "database"
	cfg.RuntimeParams["application_name"] = "wayback"
	// pgoutput prints values with the walsender's settings.
	PinTextSettings(cfg.RuntimeParams)
	return cfg, nil
}

// ConnectReplication opens a replication connection (replication=database).
func ConnectReplication(ctx context.Context, dsn string) (*pgconn.PgConn, error) {
	cfg, err := ReplicationDSN(dsn)
	if err != nil {
		return nil, err
	}
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open replication connection to %s:%d: %w", cfg.Host, cfg.Port, err)
	}
	return conn, nil
}

// StartStream starts streaming slot from start with the given publication.
func StartStream(ctx context.Context, dsn, slot, publication string, start LSN) (*Stream, error) {
	conn, err := ConnectReplication(ctx, dsn)
	if err != nil {
		return nil, err
	}
	err = pglogrepl.StartReplication(ctx, conn, slot, start, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{
			fmt.Sprintf("proto_version '%d'", ProtoVersion),
			fmt.Sprintf("publication_names '%s'", publication),
			"messages 'true'",
		},
	})
	if err != nil {
		conn.Close(context.Background())
		return nil, fmt.Errorf("start replication on slot %q at %s: %w", slot, start, err)
	}
	return &Stream{conn: conn}, nil
}

// errTimeout is returned by Receive when the deadline passed with no data.
var errTimeout = errors.New("receive timeout")

// IsTimeout reports whether Receive returned because its deadline passed.
func IsTimeout(err error) bool { return errors.Is(err, errTimeout) }

// Receive waits until deadline for the next message.
func (s *Stream) Receive(ctx context.Context, deadline time.Time) (Event, error) {
	if err := ctx.Err(); err != nil {
		return Event{}, fmt.Errorf("receive from replication stream: %w", err)
	}
	// A context with a deadline handed to pgconn costs a timer and a
	// watcher goroutine hand-off per message, a visible share of the
	// agent's CPU at tens of thousands of messages a second. A socket read
	// deadline, set only when it changes, and a callback that runs only on
	// cancellation cost next to nothing per message.
	sock := s.conn.Conn()
	if !deadline.Equal(s.readDeadline) {
		if err := sock.SetReadDeadline(deadline); err != nil {
			return Event{}, fmt.Errorf("set replication read deadline: %w", err)
		}
		s.readDeadline = deadline
	}
	stop := context.AfterFunc(ctx, func() { _ = sock.SetReadDeadline(time.Now()) })
	raw, err := s.conn.ReceiveMessage(context.Background())
	if !stop() {
		// Cancellation moved the socket's deadline: set it again next time.
		s.readDeadline = time.Unix(1, 0)
	}
	if err != nil {
		if pgconn.Timeout(err) {
			if ctx.Err() != nil {
				return Event{}, fmt.Errorf("receive from replication stream: %w", ctx.Err())
			}
			return Event{}, errTimeout
		}
		return Event{}, fmt.Errorf("receive from replication stream: %w", err)
	}
	switch m := raw.(type) {
	case *pgproto3.CopyData:
		if len(m.Data) == 0 {
			return Event{}, errors.New("empty CopyData from server")
		}
		switch m.Data[0] {
		case pglogrepl.PrimaryKeepaliveMessageByteID:
			ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(m.Data[1:])
			if err != nil {
				return Event{}, fmt.Errorf("parse keepalive: %w", err)
			}
			return Event{Keepalive: true, ServerWALEnd: ka.ServerWALEnd, ServerTime: ka.ServerTime, ReplyRequested: ka.ReplyRequested}, nil
		case pglogrepl.XLogDataByteID:
			if len(m.Data) < 26 {
				return Event{}, errors.New("short XLogData from server")
			}
			// Bytes 1..24 are WALStart, ServerWALEnd and ServerTime; the
			// payload matters, ServerWALEnd feeds the lag metric, WALStart
			// (0/0 for some messages) only orders ties (Builder.AddAt).
			return Event{Msg: m.Data[25:], WALStart: LSN(binary.BigEndian.Uint64(m.Data[1:9])), ServerWALEnd: LSN(binary.BigEndian.Uint64(m.Data[9:17]))}, nil
		default:
			return Event{}, fmt.Errorf("unexpected CopyData type %q", m.Data[0])
		}
	case *pgproto3.ErrorResponse:
		return Event{}, fmt.Errorf("replication stream: %w", pgconn.ErrorResponseToPgError(m))
	case *pgproto3.CopyDone:
		return Event{}, errors.New("server ended the replication stream")
	default:
		return Event{}, fmt.Errorf("unexpected message %T on replication stream", raw)
	}
}

// Ack tells the server that everything before pos is durable, letting it
// advance the slot's confirmed_flush_lsn and recycle WAL.
func (s *Stream) Ack(ctx context.Context, pos LSN, replyRequested bool) error {
	err := pglogrepl.SendStandbyStatusUpdate(ctx, s.conn, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: pos, WALFlushPosition: pos, WALApplyPosition: pos, ReplyRequested: replyRequested,
	})
	if err != nil {
		return fmt.Errorf("send standby status %s: %w", pos, err)
	}
	return nil
}

// Close ends the session.
func (s *Stream) Close(ctx context.Context) error { return s.conn.Close(ctx) }
