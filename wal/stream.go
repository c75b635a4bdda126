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
	// lowat sets the socket's receive low-water mark (nil when the
	// connection offers no socket to set it on).
	lowat func(n int) error
	// batching is set while the stream replays a backlog: see Receive.
	batching bool
}

// Batching while behind. The walsender writes every pgoutput message with
// its own send(), and a reader that keeps up wakes once per message: while
// a 100,000-transaction backlog drained, the agent woke some 600,000 times
// and the walsender was preempted 40,000-80,000 times (under pg_recvlogical
// about 2,000), each time queueing for a CPU again on a busy machine. While
// the stream is behind, the socket's low-water mark is raised so the kernel
// wakes the agent once per batchBytes; no read waits longer than batchWait
// for the mark, which bounds the delay it adds. It halves the agent's CPU
// while it drains a backlog (docs/performance.md).
const (
	batchBytes = 32 << 10
	batchWait  = 20 * time.Millisecond
	// behindLag is how old a transaction must be when the server sends its
	// commit (send time minus commit time, both the server's clock) for
	// the stream to count as behind.
	behindLag = 100 * time.Millisecond
)

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
	// sent is when the server sent a pgoutput message, in the server's
	// microseconds since 2000-01-01.
	sent int64
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
	return &Stream{conn: conn, lowat: socketLowat(conn.Conn())}, nil
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
	for {
		raw, err := s.receive(ctx, deadline)
		if err != nil {
			return Event{}, err
		}
		if raw == nil {
			continue // a batching wait ended: read what has arrived
		}
		ev, err := s.parse(raw)
		if err == nil {
			s.track(ev)
		}
		return ev, err
	}
}

// receive reads one message; nil, nil when a batching wait ended first.
func (s *Stream) receive(ctx context.Context, deadline time.Time) (pgproto3.BackendMessage, error) {
	// A context with a deadline handed to pgconn costs a timer and a
	// watcher goroutine hand-off per message, a visible share of the
	// agent's CPU at tens of thousands of messages a second. A socket read
	// deadline, set only when it changes, and a callback that runs only on
	// cancellation cost next to nothing per message.
	sock := s.conn.Conn()
	want, batchEnd := deadline, false
	if s.batching {
		// The batching limit is moved only when it is more than half
		// used, so most messages still leave the deadline alone.
		now := time.Now()
		if c := now.Add(batchWait); c.Before(deadline) {
			want, batchEnd = c, true
			if cur := s.readDeadline; !cur.After(c) && cur.After(now.Add(batchWait/2)) {
				want = cur
			}
		}
	}
	if !want.Equal(s.readDeadline) {
		if err := sock.SetReadDeadline(want); err != nil {
			return nil, fmt.Errorf("set replication read deadline: %w", err)
		}
		s.readDeadline = want
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
				return nil, fmt.Errorf("receive from replication stream: %w", ctx.Err())
			}
			if batchEnd && time.Now().Before(deadline) {
				// Fewer than batchBytes came within batchWait: the next
				// read takes what is there without waiting.
				return nil, nil
			}
			return nil, errTimeout
		}
		return nil, fmt.Errorf("receive from replication stream: %w", err)
	}
	return raw, nil
}

// track switches batching on while the server sends transactions long after
// they committed, and off when it reports that it has caught up (it sends a
// keepalive when it runs out of WAL to decode) or sends a fresh commit.
func (s *Stream) track(ev Event) {
	if s.lowat == nil {
		return
	}
	on := s.batching
	switch {
	case ev.Keepalive:
		on = false
	case len(ev.Msg) >= 26 && ev.Msg[0] == MsgCommit:
		// Commit: flags, commit LSN, end LSN, commit time.
		on = ev.sent-int64(binary.BigEndian.Uint64(ev.Msg[18:26])) > behindLag.Microseconds()
	}
	if on == s.batching {
		return
	}
	n := 1
	if on {
		n = batchBytes
	}
	if err := s.lowat(n); err != nil {
		// Only an optimisation: stop switching. batching stays as it was,
		// so a mark that could not be lowered keeps its waits capped.
		s.lowat = nil
		return
	}
	s.batching = on
}

func (s *Stream) parse(raw pgproto3.BackendMessage) (Event, error) {
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
			// (0/0 for some messages) only orders ties (Builder.AddAt), the
			// send time tells whether the stream is behind (track).
			return Event{Msg: m.Data[25:], WALStart: LSN(binary.BigEndian.Uint64(m.Data[1:9])), ServerWALEnd: LSN(binary.BigEndian.Uint64(m.Data[9:17])),
				sent: int64(binary.BigEndian.Uint64(m.Data[17:25]))}, nil
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
