package cdc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// Handler receives whole committed transactions of the published tables, in commit
// order. The Stream calls it from the goroutine running [Stream.Run], one call at a time.
//
// Delivery is at least once: a transaction is confirmed to the slot only after Handle
// returned nil for it, and everything after the last confirmed position is delivered
// again after an error, a reconnect or a restart. Handlers must be idempotent.
//
// A publication that existed before the Stream may publish more tables than
// Options.Tables; their changes are delivered too, and a handler should skip tables it
// does not know.
type Handler interface {
	// Gap is called before any transaction when changes to tables may have been
	// missed: the slot was created (the first run, or it had gone), Postgres
	// invalidated it, or tables were added to the publication. tables are entries of
	// Options.Tables, spelled as there; reason is one of the Gap constants. Gap must
	// invalidate everything cached for those tables before it returns nil. After an
	// error Run calls it again, after backoff, before streaming anything.
	Gap(ctx context.Context, tables []string, reason string) error
	// Handle handles one transaction. An error stops the stream; after backoff it
	// resumes from the last confirmed position, so tx is delivered again.
	//
	// While Handle runs the stream does not read from the server, so it cannot answer
	// the server's keepalives: a handler that takes longer than the server's
	// wal_sender_timeout (60s by default) gets the connection closed under it, and
	// the transaction is delivered again on the next one.
	Handle(ctx context.Context, tx *Tx) error
}

// Stats is a snapshot of a Stream's progress.
type Stats struct {
	// ConfirmedLSN is the position reported to the slot as handled.
	ConfirmedLSN LSN
	// ReceivedLSN is the server's WAL end as last seen in the stream.
	ReceivedLSN LSN
	// LastCommitTime is the commit time of the last transaction handled.
	LastCommitTime time.Time
	// Transactions and Changes count what the handler accepted, redeliveries included.
	Transactions uint64
	Changes      uint64
	// Reconnects counts the times Run started over after an error.
	Reconnects uint64
	// Connected reports whether the stream is receiving from the slot now.
	Connected bool
}

// Stream streams the changes of a set of tables from a logical replication slot to a
// [Handler]. Create it with [NewStream]; the zero value is not usable. Run must not be
// called concurrently; Stats may be called at any time from any goroutine.
type Stream struct {
	connString string
	opts       Options
	tables     []table
	h          Handler
	log        *slog.Logger

	running atomic.Bool

	// Owned by the goroutine in Run.
	gap       gap
	staleSlot string // why the slot must be replaced before streaming; empty if not
	warned    map[uint32]bool

	mu    sync.Mutex
	stats Stats
}

// Attribute keys of the logs.
const (
	logSlot        = "slot"
	logPublication = "publication"
	logTable       = "table"
	logTables      = "tables"
	logLSN         = "lsn"
	logReason      = "reason"
	logErr         = "err"
	logBackoff     = "backoff"
	logXID         = "xid"
)

// NewStream returns a Stream that connects with connString, a Postgres URL or keyword/value
// string, as a role that can replicate (see the package documentation). It checks the
// options and the connection string and does no I/O. Errors wrap [ErrConfig].
func NewStream(connString string, opts Options, h Handler) (*Stream, error) {
	opts, tables, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if h == nil {
		return nil, fmt.Errorf("%w: the Handler is nil", ErrConfig)
	}
	if _, err := pgconn.ParseConfig(connString); err != nil {
		return nil, fmt.Errorf("%w: connection string: %v", ErrConfig, err)
	}
	return &Stream{
		connString: connString,
		opts:       opts,
		tables:     tables,
		h:          h,
		log:        opts.Logger.With(slog.String(logSlot, opts.Slot)),
		warned:     make(map[uint32]bool),
	}, nil
}

// Stats returns a snapshot of the stream's progress. It is safe for concurrent use.
func (s *Stream) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// Run connects (adding replication=database to the connection string), checks that the
// server and the role can replicate, ensures the publication and the slot, reports any
// gap to the handler, and streams transactions to it until ctx is done or a fatal error
// occurs. It blocks until then.
//
// When ctx is done Run reports the position of the last transaction handled to the
// server and returns nil. Errors that retrying cannot fix ([IsFatal]) are returned at
// once. Every other error (a lost connection, a server restart, the slot in use by
// another process, a handler error) is logged and retried after backoff, resuming from
// the slot's confirmed position. Run starts no goroutine that outlives it.
func (s *Stream) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("cdc: Run called while the Stream is already running")
	}
	defer s.running.Store(false)

	failures := 0
	waitingForSlot := false
	for {
		streamed, err := s.session(ctx)
		s.update(func(st *Stats) { st.Connected = false })
		if ctx.Err() != nil {
			attrs := []any{slog.String(logLSN, s.Stats().ConfirmedLSN.String())}
			if err != nil && !errors.Is(err, ctx.Err()) {
				attrs = append(attrs, slog.Any(logErr, err))
			}
			s.log.Info("cdc: stopped", attrs...)
			return nil
		}
		if IsFatal(err) {
			s.log.Error("cdc: cannot stream", slog.Any(logErr, err))
			return err
		}
		if streamed >= s.opts.MaxBackoff {
			failures = 0
		}
		hi := s.opts.MaxBackoff
		if errors.Is(err, ErrSlotInUse) {
			// A standby keeps polling at a short interval however long it has waited,
			// so that it takes over soon after the active stream ends.
			hi = min(hi, max(s.opts.MinBackoff, standbyPoll))
		}
		wait := backoff(s.opts.MinBackoff, hi, failures)
		failures++
		s.update(func(st *Stats) { st.Reconnects++ })
		if errors.Is(err, ErrSlotInUse) {
			// A standby waits here for the active stream to stop: say so once, not on
			// every retry.
			level := slog.LevelDebug
			if !waitingForSlot {
				level = slog.LevelInfo
			}
			waitingForSlot = true
			s.log.Log(ctx, level, "cdc: the slot is in use by another process; waiting to take it over", slog.Any(logErr, err), slog.Duration(logBackoff, wait))
		} else {
			waitingForSlot = false
			s.log.Warn("cdc: stream interrupted; resuming from the slot after backoff", slog.Any(logErr, err), slog.Duration(logBackoff, wait))
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			s.log.Info("cdc: stopped", slog.String(logLSN, s.Stats().ConfirmedLSN.String()))
			return nil
		case <-t.C:
		}
	}
}

// standbyPoll caps the wait between attempts on a slot in use (unless MinBackoff is
// longer): a standby takes the slot over within about this long of the active stream's
// end, for the price of one connection and a few catalog queries per attempt.
const standbyPoll = time.Second

// backoff returns the wait before retry n (from 0): lo doubled n times, capped at hi,
// with equal jitter, so processes that failed together do not retry together.
func backoff(lo, hi time.Duration, n int) time.Duration {
	d := lo
	for i := 0; i < n && d < hi; i++ {
		d *= 2
	}
	d = min(d, hi)
	half := d / 2
	return half + rand.N(d-half+1)
}

func (s *Stream) update(f func(*Stats)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(&s.stats)
}

// session runs one connection: setup, gap, streaming. It returns how long it streamed.
func (s *Stream) session(ctx context.Context) (time.Duration, error) {
	confirmed, err := s.prepare(ctx)
	if err != nil {
		return 0, err
	}
	if s.gap.reason != "" {
		g := s.gap
		s.log.Info("cdc: changes may have been missed; asking the handler to invalidate the tables",
			slog.String(logReason, g.reason), slog.Any(logTables, g.tables))
		if err := s.h.Gap(ctx, slices.Clone(g.tables), g.reason); err != nil {
			return 0, fmt.Errorf("cdc: handler: Gap(%q): %w", g.reason, err)
		}
		s.gap = gap{}
	}

	conn, err := s.connectReplication(ctx)
	if err != nil {
		return 0, err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}()

	sctx, cancel := context.WithTimeout(ctx, queryTimeout)
	err = pglogrepl.StartReplication(sctx, conn, s.opts.Slot, 0, pglogrepl.StartReplicationOptions{
		Mode: pglogrepl.LogicalReplication,
		PluginArgs: []string{
			"proto_version '1'",
			// publication_names is a list of identifiers; quoting keeps the name exact.
			"publication_names '" + pgx.Identifier{s.opts.Publication}.Sanitize() + "'",
		},
	})
	cancel()
	if err != nil {
		return 0, classify("start replication from slot "+s.opts.Slot, err)
	}
	s.update(func(st *Stats) {
		st.Connected = true
		st.ConfirmedLSN = confirmed
	})
	s.log.Info("cdc: streaming", slog.String(logLSN, confirmed.String()))

	start := time.Now()
	err = s.stream(ctx, conn, &confirmed)
	streamed := time.Since(start)
	// Report what was handled, on a stop as on an error, so that a successor does not
	// receive it again. The walsender reads this before the Terminate sent by Close.
	if !conn.IsClosed() {
		_ = conn.Conn().SetWriteDeadline(time.Now().Add(5 * time.Second))
		_ = sendStatus(conn, confirmed, false)
	}
	return streamed, err
}

func (s *Stream) connectReplication(ctx context.Context) (*pgconn.PgConn, error) {
	cfg, err := pgconn.ParseConfig(s.connString)
	if err != nil {
		return nil, fmt.Errorf("%w: connection string: %v", ErrConfig, err)
	}
	cfg.RuntimeParams["replication"] = "database"
	cctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	conn, err := pgconn.ConnectConfig(cctx, cfg)
	if err != nil {
		return nil, classify("connect for replication", err)
	}
	return conn, nil
}

func sendStatus(conn *pgconn.PgConn, pos LSN, replyRequested bool) error {
	err := pglogrepl.SendStandbyStatusUpdate(context.Background(), conn, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: pos,
		WALFlushPosition: pos,
		WALApplyPosition: pos,
		ReplyRequested:   replyRequested,
	})
	if err != nil {
		return fmt.Errorf("cdc: send status update: %w", err)
	}
	return nil
}

// stream receives and handles messages until ctx is done or an error. *confirmed is the
// position of the last transaction handled; it never passes a commit not yet handled.
func (s *Stream) stream(ctx context.Context, conn *pgconn.PgConn, confirmed *LSN) error {
	dec := NewDecoder()
	interval := s.opts.StatusInterval
	// Every status update asks for a reply, so the server is never silent for long;
	// silence this long means the connection is gone without a word.
	silence := max(3*interval, 30*time.Second)
	nextStatus := time.Now()
	lastHeard := time.Now()
	for {
		now := time.Now()
		if !now.Before(nextStatus) {
			if err := sendStatus(conn, *confirmed, true); err != nil {
				return err
			}
			nextStatus = now.Add(interval)
		}
		if now.Sub(lastHeard) > silence {
			return fmt.Errorf("cdc: no message from the server for %v", silence)
		}

		rctx, cancel := context.WithDeadline(ctx, nextStatus)
		msg, err := conn.ReceiveMessage(rctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if pgconn.Timeout(err) {
				continue
			}
			return fmt.Errorf("cdc: receive: %w", err)
		}

		switch msg := msg.(type) {
		case *pgproto3.CopyData:
			replyNow, err := s.copyData(ctx, dec, msg.Data, confirmed)
			if err != nil {
				return err
			}
			if replyNow {
				nextStatus = time.Now()
			}
		case *pgproto3.ErrorResponse:
			return classify("replication stream", pgconn.ErrorResponseToPgError(msg))
		case *pgproto3.CopyDone:
			return errors.New("cdc: the server ended the replication stream")
		}
		lastHeard = time.Now()
	}
}

// copyData handles one CopyData message and reports whether the server asked for a reply.
func (s *Stream) copyData(ctx context.Context, dec *Decoder, data []byte, confirmed *LSN) (replyNow bool, err error) {
	if len(data) == 0 {
		return false, fmt.Errorf("%w: empty CopyData message", ErrProtocol)
	}
	switch data[0] {
	case pglogrepl.PrimaryKeepaliveMessageByteID:
		ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(data[1:])
		if err != nil {
			return false, fmt.Errorf("%w: keepalive: %v", ErrProtocol, err)
		}
		// Transactions are handled as they arrive, so when none is open every commit
		// the server sent before this keepalive is handled, and nothing below its WAL
		// end is owed to the handler: confirming it keeps an idle slot from pinning WAL.
		if !dec.InTransaction() && ka.ServerWALEnd > *confirmed {
			*confirmed = ka.ServerWALEnd
		}
		s.update(func(st *Stats) {
			st.ReceivedLSN = max(st.ReceivedLSN, ka.ServerWALEnd)
			st.ConfirmedLSN = *confirmed
		})
		return ka.ReplyRequested, nil

	case pglogrepl.XLogDataByteID:
		xld, err := pglogrepl.ParseXLogData(data[1:])
		if err != nil {
			return false, fmt.Errorf("%w: XLogData: %v", ErrProtocol, err)
		}
		s.update(func(st *Stats) { st.ReceivedLSN = max(st.ReceivedLSN, xld.ServerWALEnd) })
		tx, err := dec.Decode(xld.WALData)
		if err != nil || tx == nil {
			return false, err
		}
		s.warnKeyless(tx)
		if len(tx.Changes) > 0 {
			if err := s.h.Handle(ctx, tx); err != nil {
				return false, fmt.Errorf("cdc: handler failed on transaction %d (commit %s), which will be delivered again: %w", tx.XID, tx.CommitLSN, err)
			}
		}
		if tx.EndLSN > *confirmed {
			*confirmed = tx.EndLSN
		}
		s.update(func(st *Stats) {
			st.ConfirmedLSN = *confirmed
			if len(tx.Changes) > 0 {
				st.Transactions++
				st.Changes += uint64(len(tx.Changes))
				st.LastCommitTime = tx.CommitTime
			}
		})
		return false, nil
	}
	return false, nil
}

// warnKeyless logs, once per relation, a change that came without a key.
func (s *Stream) warnKeyless(tx *Tx) {
	for _, c := range tx.Changes {
		if c.Key != nil || c.Kind == Truncate || s.warned[c.Relation.ID] {
			continue
		}
		s.warned[c.Relation.ID] = true
		why := "a key column arrived null or as an unchanged TOAST value"
		if len(c.Relation.keyIdx) == 0 {
			why = "the table has no key columns (REPLICA IDENTITY NOTHING, or no primary key)"
		}
		s.log.Warn("cdc: a change came without a key, so the handler must treat it as touching the whole table; set a primary key and REPLICA IDENTITY DEFAULT",
			slog.String(logTable, pgx.Identifier{c.Relation.Schema, c.Relation.Name}.Sanitize()),
			slog.String(logReason, why), slog.Uint64(logXID, uint64(tx.XID)))
	}
}
