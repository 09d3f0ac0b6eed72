package cdc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgcache/pgcache/internal/testhooks"
)

// Restart points. A logical slot's restart_lsn, where the server starts decoding when
// a client connects, moves only when the walsender decodes a running-transactions
// record (it saves its snapshot there) and the client then confirms a position past
// it; the background writer logs such a record every 15s at most, and a new one
// counts only once the last one was confirmed. So a stream that confirms every
// StatusInterval (10s) and is restarted leaves the server to decode again the WAL of
// up to about half a minute that it had confirmed, before any change it had not seen:
// after a busy spell, most of a restarted worker's catching up (measured: 37 MB of WAL
// decoded for nothing, 0.6s of a backlog's 1.9s). While transactions arrive, the
// stream logs a record itself every Options.StandbySnapshotInterval and reports its
// position as soon as it passed the record, so that restart_lsn follows within about
// that interval; and a stream that stops right after a burst waits for the keepalive
// past its last record (linger). A record the server decodes while an earlier one is
// still unconfirmed does not count (Postgres keeps one candidate at a time), so
// restart_lsn may stay one record behind.

// logSnapshot logs a running-transactions record on conn if StandbySnapshotInterval
// has passed since the last one (at *last, which it updates), and has p report the position at once when it passes
// the record. A server that refuses (no EXECUTE on the function, a Postgres before 16,
// a standby) is not asked again by this Stream; the refusal is logged once.
func (s *Stream) logSnapshot(ctx context.Context, conn *pgx.Conn, p *pipeline, last *time.Time) error {
	every := s.opts.StandbySnapshotInterval
	if every < 0 || s.snapshotsRefused.Load() || time.Since(*last) < every {
		return nil
	}
	*last = time.Now()
	qctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	var text string
	err := conn.QueryRow(qctx, `SELECT pg_log_standby_snapshot()::text`).Scan(&text)
	var pgErr *pgconn.PgError
	switch {
	case errors.As(err, &pgErr):
		s.snapshotsRefused.Store(true)
		s.log.Info("cdc: the server does not log running transactions for the stream, so a restart decodes again the WAL confirmed since the last record Postgres logged itself (up to half a minute's); to restart from near where it stopped, GRANT EXECUTE ON FUNCTION pg_log_standby_snapshot() TO the role (Postgres 16 and later, streaming from the primary)",
			slog.String(logSlot, s.opts.Slot), slog.String("code", pgErr.Code), slog.String("error", pgErr.Message))
		return nil
	case err != nil:
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return classify("log the running transactions (pg_log_standby_snapshot)", err)
	}
	lsn, err := pglogrepl.ParseLSN(text)
	if err != nil {
		return fmt.Errorf("cdc: pg_log_standby_snapshot returned %q: %w", text, err)
	}
	p.reportPast(lsn)
	testhooks.SnapshotLogged(ctx, uint64(lsn))
	return nil
}

// restartPointWait bounds how long a stopping stream waits for the server to pass the
// running-transactions record it logged last (linger).
const restartPointWait = 2 * time.Second

// linger is the receiver's last act when the stream stops with every transaction
// received handled and none half received, while the position has not reached the
// record the stream logged last: a stop right after a burst would otherwise leave the
// burst's WAL to be decoded again at the next start. It reads keepalives, for at most
// restartPointWait, until one confirms the position past the record (the session then
// reports it as it stops); any other message ends it, as the handler has stopped.
func (r *receiver) linger(ctx context.Context) {
	if testhooks.NoLinger(ctx) || !r.p.reportAsked() || r.dec.InTransaction() || r.p.pendingCount() > 0 {
		return
	}
	if err := r.conn.Conn().SetReadDeadline(time.Now().Add(restartPointWait)); err != nil {
		return
	}
	for !r.p.reportDue() {
		msg, err := r.conn.ReceiveMessage(context.Background())
		if err != nil {
			return
		}
		cd, ok := msg.(*pgproto3.CopyData)
		if !ok || len(cd.Data) == 0 || cd.Data[0] != pglogrepl.PrimaryKeepaliveMessageByteID {
			return
		}
		if _, err := r.copyData(context.Background(), cd.Data); err != nil {
			return
		}
	}
}
