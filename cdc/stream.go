package cdc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgcache/pgcache/internal/retry"
	"github.com/pgcache/pgcache/internal/testhooks"
	"golang.org/x/sync/errgroup"
)

// Handler receives whole committed transactions of the published tables, in commit
// order, each once it is visible: a snapshot taken on the server after it was received
// sees it as ended, so a query that begins after the handler was given it reads its
// changes (see "Visibility" in the package documentation). The Stream calls it from a
// goroutine of its own, one call at a time, while another goroutine goes on receiving
// and decoding the transactions that follow (up to a bound; see [Stream.Run]).
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
	// invalidated it, or tables were added to the publication. tables are named
	// schema.name, as the catalog spells them: entries of Options.Tables resolved as
	// the role's search_path resolves them (the change stream names them so too);
	// reason is one of the Gap constants. Gap must
	// invalidate everything cached for those tables before it returns nil. After an
	// error Run calls it again, after backoff, before streaming anything.
	Gap(ctx context.Context, tables []string, reason string) error
	// Handle handles one transaction. An error stops the stream; after backoff it
	// resumes from the last confirmed position, so tx is delivered again, and so is
	// every transaction received after it. ctx is cancelled when Run stops or the
	// connection fails; the transaction is then delivered again too.
	//
	// A slow Handle holds back only the confirmed position: the stream keeps reporting
	// it to the server while Handle runs, so the server does not time the connection
	// out however long Handle takes.
	Handle(ctx context.Context, tx *Tx) error
}

// BatchHandler is a [Handler] that can handle several transactions in one call, so that
// a backlog of small transactions costs one round trip to wherever the handler writes
// for many of them. When the Handler given to [NewStream] is a BatchHandler, the
// Stream calls HandleBatch instead of Handle, with every transaction received and not
// yet handled.
//
// Beware of embedding: a type that embeds a BatchHandler and overrides only Handle is
// itself a BatchHandler, and its Handle is not called.
type BatchHandler interface {
	Handler
	// HandleBatch handles consecutive transactions, at least one, in commit order, as
	// Handle would one after the other; each has at least one change. It returns nil
	// only when all of them are handled: the end of the last one is then confirmed. An
	// error confirms none of them; every one is delivered again. The slice is the
	// handler's to keep.
	HandleBatch(ctx context.Context, txs []*Tx) error
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
	// Pending counts the transactions received and not yet handled: waiting for the
	// handler, or being handled. They are dropped, to be delivered again, when the
	// connection ends.
	Pending int
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
	// snapshotsRefused: the server refused to log running transactions (snapshots.go).
	snapshotsRefused atomic.Bool

	// Owned by the goroutine in Run; warned by the receiver while a session streams.
	gap       gap
	staleSlot string // why the slot must be replaced before streaming; empty if not
	warned    map[uint32]bool
	// names maps entries of Options.Tables to schema.name, as resolved; catalog is the
	// tables as the last session resolved them.
	names   map[string]string
	catalog []catalogTable
	// domains: the base type of every domain, by OID, as the last session read them.
	domains map[uint32]uint32
	others  [][2]string

	mu    sync.Mutex
	stats Stats
	pipe  *pipeline // of the session streaming; nil between sessions
	// resolved: Options.Tables as schema.name, once a session resolved them (Tables).
	resolved []string
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
	logWaited      = "waited"
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
		names:      make(map[string]string),
	}, nil
}

// Stats returns a snapshot of the stream's progress. It is safe for concurrent use.
func (s *Stream) Stats() Stats {
	s.mu.Lock()
	st, p := s.stats, s.pipe
	s.mu.Unlock()
	if p != nil {
		st.Pending = p.pendingCount()
	}
	return st
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
// the slot's confirmed position.
//
// While streaming, one goroutine receives and decodes while another runs the handler,
// so that the next transactions are on hand when the handler finishes one. Up to 4096
// transactions or 65536 changes (but always one transaction) wait for the handler;
// beyond that the receiver waits too, still reporting the confirmed position on
// schedule. Run returns only after both goroutines have ended.
func (s *Stream) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("cdc: Run called while the Stream is already running")
	}
	defer s.running.Store(false)

	// Both waits advance on every failure, so that each is drawn from MinBackoff
	// doubled once per consecutive failure of either kind, under its own cap: a
	// standby keeps polling at a short interval however long it has waited, so that
	// it takes over soon after the active stream ends.
	backoff := retry.Backoff(s.opts.MinBackoff, s.opts.MaxBackoff)
	standby := retry.Backoff(s.opts.MinBackoff, min(s.opts.MaxBackoff, max(s.opts.MinBackoff, standbyPoll)))
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
			backoff.Reset()
			standby.Reset()
		}
		wait, standbyWait := backoff.NextBackOff(), standby.NextBackOff()
		if errors.Is(err, ErrSlotInUse) {
			wait = standbyWait
		}
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

func (s *Stream) setPipeline(p *pipeline) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pipe = p
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
		if err := s.h.Gap(ctx, s.qualify(g.tables), g.reason); err != nil {
			return 0, fmt.Errorf("cdc: handler: Gap(%q): %w", g.reason, err)
		}
		s.gap = gap{}
	}

	// A normal connection beside the replication one, to ask whether what was received
	// is visible yet (see awaitVisible).
	sqlConn, err := s.connect(ctx)
	if err != nil {
		return 0, err
	}
	defer closeConn(ctx, sqlConn)

	conn, lazy, err := s.connectReplication(ctx)
	if err != nil {
		return 0, err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}()

	// The server's WAL end now: what committed well before it is a backlog, which the
	// receiver reads as such (see lazyread.go).
	sctx, cancel := context.WithTimeout(ctx, queryTimeout)
	sys, err := pglogrepl.IdentifySystem(sctx, conn)
	cancel()
	if err != nil {
		return 0, classify("identify the server's WAL position", err)
	}
	sctx, cancel = context.WithTimeout(ctx, queryTimeout)
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

	p := newPipeline(confirmed)
	p.sawServerEnd(sys.XLogPos)
	s.setPipeline(p)
	start := time.Now()
	err = s.stream(ctx, conn, lazy, sqlConn, p)
	streamed := time.Since(start)
	if pe, ok := errors.AsType[*partitionsChangedError](err); ok {
		s.gap.add(GapPartitions, s.qualify([]string{pe.spec}))
	}
	s.setPipeline(nil)
	// Report what was handled, on a stop as on an error, so that a successor does not
	// receive it again. The walsender reads this before the Terminate sent by Close.
	if !conn.IsClosed() {
		_ = conn.Conn().SetWriteDeadline(time.Now().Add(5 * time.Second))
		_ = sendStatus(conn, p.position(), false)
	}
	return streamed, err
}

func (s *Stream) connectReplication(ctx context.Context) (*pgconn.PgConn, *lazyConn, error) {
	cfg, err := pgconn.ParseConfig(s.connString)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: connection string: %v", ErrConfig, err)
	}
	cfg.RuntimeParams["replication"] = "database"
	// Reads of up to readBuffer bytes, rather than pgproto3's 8 KB: while the receiver
	// reads lazily, some hundred changes wait in the socket per read (see lazyread.go).
	cfg.BuildFrontend = func(r io.Reader, w io.Writer) *pgproto3.Frontend {
		return pgproto3.NewFrontend(bufio.NewReaderSize(r, readBuffer), w)
	}
	var lc *lazyConn
	dial := cfg.DialFunc
	cfg.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		s.setReceiveBuffer(c)
		testhooks.Dialled(ctx, c)
		lc = &lazyConn{Conn: c} // the last dialled is the one connected
		return lc, nil
	}
	cctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	conn, err := pgconn.ConnectConfig(cctx, cfg)
	if err != nil {
		return nil, nil, classify("connect for replication", err)
	}
	return conn, lc, nil
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

// stream runs the receiver and the handler of a session until ctx is done or either
// fails, and returns the first error. The receiver owns conn, and the handler's
// goroutine sqlConn, until stream returns.
func (s *Stream) stream(ctx context.Context, conn *pgconn.PgConn, lazy *lazyConn, sqlConn *pgx.Conn, p *pipeline) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		r := receiver{s: s, conn: conn, lazy: lazy, p: p, dec: s.newDecoder()}
		return r.run(gctx)
	})
	g.Go(func() error { return s.handle(gctx, sqlConn, p) })
	var partitioned []catalogTable
	for _, t := range s.catalog {
		if t.kind == "p" {
			partitioned = append(partitioned, t)
		}
	}
	if len(partitioned) > 0 {
		g.Go(func() error { return s.watchPartitions(gctx, partitioned) })
	}
	return g.Wait()
}

// handle hands the transactions of p to the handler, in order, once they are visible
// (asked on conn), and confirms each one the handler accepted, until ctx is done or the
// handler fails.
func (s *Stream) handle(ctx context.Context, conn *pgx.Conn, p *pipeline) error {
	bh, batch := s.h.(BatchHandler)
	var lastSnapshot time.Time // see logSnapshot
	for {
		txs, err := p.take(ctx)
		if err != nil {
			return err
		}
		if err := s.awaitVisible(ctx, conn, p, txs); err != nil {
			return err
		}
		if batch {
			err = s.handleBatch(ctx, bh, p, txs)
		} else {
			for i, tx := range txs {
				if err = ctx.Err(); err != nil {
					break // the session is over: what is left comes again
				}
				if len(tx.Changes) > 0 {
					if err = s.h.Handle(ctx, tx); err != nil {
						err = fmt.Errorf("cdc: handler failed on transaction %d (commit %s), which will be delivered again: %w", tx.XID, tx.CommitLSN, err)
						break
					}
				}
				s.handled(p, txs[i:i+1])
			}
		}
		if err != nil {
			return err
		}
		if err := s.logSnapshot(ctx, conn, p, &lastSnapshot); err != nil {
			return err
		}
	}
}

// handleBatch hands txs to a BatchHandler, leaving out transactions without changes.
func (s *Stream) handleBatch(ctx context.Context, bh BatchHandler, p *pipeline, txs []*Tx) error {
	nonEmpty := make([]*Tx, 0, len(txs))
	for _, tx := range txs {
		if len(tx.Changes) > 0 {
			nonEmpty = append(nonEmpty, tx)
		}
	}
	if len(nonEmpty) > 0 {
		if err := bh.HandleBatch(ctx, nonEmpty); err != nil {
			first, last := nonEmpty[0], nonEmpty[len(nonEmpty)-1]
			if first == last {
				return fmt.Errorf("cdc: handler failed on transaction %d (commit %s), which will be delivered again: %w", first.XID, first.CommitLSN, err)
			}
			return fmt.Errorf("cdc: handler failed on %d transactions (xid %d, commit %s to xid %d, commit %s), which will be delivered again: %w",
				len(nonEmpty), first.XID, first.CommitLSN, last.XID, last.CommitLSN, err)
		}
	}
	s.handled(p, txs)
	return nil
}

// handled confirms txs, consecutive transactions the handler is done with.
func (s *Stream) handled(p *pipeline, txs []*Tx) {
	last := txs[len(txs)-1]
	confirmed := p.handled(len(txs), last.EndLSN)
	var changes uint64
	var n uint64
	var commitTime time.Time
	for _, tx := range txs {
		if len(tx.Changes) > 0 {
			n++
			changes += uint64(len(tx.Changes))
			commitTime = tx.CommitTime
		}
	}
	s.update(func(st *Stats) {
		// The receiver may have stored a later position first.
		st.ConfirmedLSN = max(st.ConfirmedLSN, confirmed)
		if n > 0 {
			st.Transactions += n
			st.Changes += changes
			st.LastCommitTime = commitTime
		}
	})
}

// receiver receives and decodes the messages of a session and queues the transactions
// for the handler. It alone uses the connection while the session streams.
type receiver struct {
	s    *Stream
	conn *pgconn.PgConn
	p    *pipeline
	dec  *Decoder
	lazy *lazyConn // conn's socket; nil when it is not one

	nextStatus time.Time // when the position is next reported
	lastHeard  time.Time // when the server was last heard from, or last listened to
}

// run receives until ctx is done or an error.
func (r *receiver) run(ctx context.Context) error {
	interval := r.s.opts.StatusInterval
	// Every status update asks for a reply, so the server is never silent for long;
	// silence this long means the connection is gone without a word.
	silence := max(3*interval, 30*time.Second)
	r.nextStatus = time.Now()
	r.lastHeard = time.Now()
	// The wait for a message is bounded by a read deadline on the connection, the next
	// status update's, not by a context: pgconn watches a context with a goroutine of
	// its own per ReceiveMessage, which cost more than decoding the message. A
	// cancelled ctx ends the wait by moving the deadline to the past.
	nc := r.conn.Conn()
	var deadline time.Time
	done, watched := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(watched)
		select {
		case <-ctx.Done():
			_ = nc.SetReadDeadline(time.Now())
		case <-done:
		}
	}()
	defer func() {
		close(done)
		<-watched
		if ctx.Err() != nil {
			r.linger(ctx)
		}
		_ = nc.SetReadDeadline(time.Time{})
	}()
	for {
		now := time.Now()
		if !now.Before(r.nextStatus) || r.p.reportDue() {
			if err := sendStatus(r.conn, r.p.position(), true); err != nil {
				return err
			}
			r.nextStatus = now.Add(interval)
		}
		if now.Sub(r.lastHeard) > silence {
			return fmt.Errorf("cdc: no message from the server for %v", silence)
		}
		if !deadline.Equal(r.nextStatus) {
			deadline = r.nextStatus
			if err := nc.SetReadDeadline(deadline); err != nil {
				return fmt.Errorf("cdc: receive: %w", err)
			}
		}
		// After the deadline is set, so that a cancellation the watcher acted on
		// first is not missed.
		if err := ctx.Err(); err != nil {
			return err
		}

		msg, err := r.conn.ReceiveMessage(context.Background())
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if pgconn.Timeout(err) {
				// The deadline passed: time for a status update.
				r.nextStatus = time.Now()
				continue
			}
			return fmt.Errorf("cdc: receive: %w", err)
		}

		switch msg := msg.(type) {
		case *pgproto3.CopyData:
			replyNow, err := r.copyData(ctx, msg.Data)
			if err != nil {
				return err
			}
			if replyNow {
				r.nextStatus = time.Now()
			}
		case *pgproto3.ErrorResponse:
			return classify("replication stream", pgconn.ErrorResponseToPgError(msg))
		case *pgproto3.CopyDone:
			return errors.New("cdc: the server ended the replication stream")
		}
		r.lastHeard = time.Now()
	}
}

// copyData handles one CopyData message and reports whether the server asked for a reply.
func (r *receiver) copyData(ctx context.Context, data []byte) (replyNow bool, err error) {
	if len(data) == 0 {
		return false, fmt.Errorf("%w: empty CopyData message", ErrProtocol)
	}
	switch data[0] {
	case pglogrepl.PrimaryKeepaliveMessageByteID:
		ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(data[1:])
		if err != nil {
			return false, fmt.Errorf("%w: keepalive: %v", ErrProtocol, err)
		}
		// The server sends transactions whole and in commit order, so when none is
		// open and every one received has been handled, nothing below the keepalive's
		// WAL end is owed to the handler: confirming it keeps an idle slot from
		// pinning WAL.
		confirmed := r.p.position()
		if !r.dec.InTransaction() {
			confirmed = r.p.idle(ka.ServerWALEnd)
		}
		r.s.update(func(st *Stats) {
			st.ReceivedLSN = max(st.ReceivedLSN, ka.ServerWALEnd)
			// The handler may have stored a later position first.
			st.ConfirmedLSN = max(st.ConfirmedLSN, confirmed)
		})
		return ka.ReplyRequested, nil

	case pglogrepl.XLogDataByteID:
		xld, err := pglogrepl.ParseXLogData(data[1:])
		if err != nil {
			return false, fmt.Errorf("%w: XLogData: %v", ErrProtocol, err)
		}
		r.s.update(func(st *Stats) { st.ReceivedLSN = max(st.ReceivedLSN, xld.ServerWALEnd) })
		tx, err := r.dec.Decode(xld.WALData)
		if r.lazy != nil {
			var wait time.Duration
			switch {
			case r.p.behind(r.dec.position()):
				wait = backlogReadWait
			case r.dec.changes() >= lazyAfterChanges:
				wait = lazyReadWait
			}
			r.lazy.setWait(wait)
		}
		if err != nil || tx == nil {
			return false, err
		}
		r.s.warnKeyless(tx)
		return false, r.queue(ctx, tx)
	}
	return false, nil
}

// queue hands tx to the handler's goroutine. While the queue is full it waits, and goes
// on reporting the confirmed position on schedule, so that the server, which times out
// a client it has not heard from for wal_sender_timeout, does not drop a connection
// whose handler is busy.
func (r *receiver) queue(ctx context.Context, tx *Tx) error {
	if r.p.put(tx) {
		return nil
	}
	t := time.NewTimer(time.Until(r.nextStatus))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-r.p.room:
			if r.p.put(tx) {
				// The server was not listened to while waiting; its silence meant nothing.
				r.lastHeard = time.Now()
				return nil
			}
		case <-t.C:
			// No reply asked for: it would wait unread behind the stream.
			if err := sendStatus(r.conn, r.p.position(), false); err != nil {
				return err
			}
			r.nextStatus = time.Now().Add(r.s.opts.StatusInterval)
			t.Reset(r.s.opts.StatusInterval)
		}
	}
}

// newDecoder returns a decoder told the primary keys and partitions the last session
// found in the catalog.
func (s *Stream) newDecoder() *Decoder {
	d := NewDecoder()
	for _, t := range s.catalog {
		d.SetPrimaryKey(t.schema, t.name, t.pk)
		if t.kind != "p" {
			continue
		}
		names := make([][2]string, len(t.partitions))
		for i, p := range t.partitions {
			names[i] = [2]string{p.schema, p.name}
			d.SetPrimaryKey(p.schema, p.name, p.pk)
		}
		d.SetPartitions(t.schema, t.name, names)
	}
	d.SetOthers(s.others)
	d.SetDomains(s.domains)
	d.SetMaxChanges(s.opts.MaxTxChanges)
	return d
}

// warnKeyless logs, once per relation, a change that came without a key.
func (s *Stream) warnKeyless(tx *Tx) {
	for _, c := range tx.Changes {
		if c.Key != nil || c.Kind == Truncate || s.warned[c.Relation.ID] {
			continue
		}
		s.warned[c.Relation.ID] = true
		why := "a primary-key column arrived null or as an unchanged TOAST value"
		if len(c.Relation.keyIdx) == 0 {
			why = "the table's primary key is not known: it has none, or it changed since the stream started, or the table is not one of Options.Tables and its replica identity is not DEFAULT"
		}
		s.log.Warn("cdc: a change came without a primary key, so the handler must treat it as touching the whole table",
			slog.String(logTable, pgx.Identifier{c.Relation.Schema, c.Relation.Name}.Sanitize()),
			slog.String(logReason, why), slog.Uint64(logXID, uint64(tx.XID)))
	}
}
