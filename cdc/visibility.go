package cdc

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/pgcache/pgcache/internal/retry"
	"github.com/pgcache/pgcache/internal/testhooks"
)

// A transaction's commit record is flushed to WAL, and so decoded and streamed, before
// the committing backend leaves the ProcArray (CommitTransaction: RecordTransactionCommit
// flushes the record and waits for synchronous standbys; only then does
// ProcArrayEndTransaction run). Until then a new snapshot still sees the transaction as
// running. A handler that invalidated a row in that window would let a reader that
// misses right then take a lease, load the old row and store it, with nothing left to
// fence it: the row stays stale until its TTL. The window is milliseconds under load;
// with a synchronous standby it is the standby's whole confirmation wait, on every
// commit. So the Stream hands a batch to the handler only once a snapshot taken after
// the batch was received sees every transaction of it as finished.

// Bounds of the wait between two looks at the server's snapshot. The first is short:
// a commit the worker received before its backend left the ProcArray usually ends
// within microseconds, and every change of the batch waits for the second look: the
// first wait adds to the invalidation lag of the commits that meet one.
const (
	visibleFirstWait = 250 * time.Microsecond
	visibleMaxWait   = 50 * time.Millisecond
	// visibleWarnAfter: a transaction still invisible this long is logged, once, since
	// invalidation waits for it (a synchronous standby that does not confirm, say).
	visibleWarnAfter = 5 * time.Second
)

// snapshot is a Postgres snapshot (pg_snapshot) as its text form spells it:
// "xmin:xmax:xip1,xip2,...", full 64-bit transaction ids (xid8). Transactions below xmin
// had ended when it was taken; those listed in xip, and those at or past xmax, were
// running.
type snapshot struct {
	xmin, xmax uint64
	xip        []uint64
}

// parseSnapshot parses the text of a pg_snapshot (pg_current_snapshot()::text).
func parseSnapshot(text string) (snapshot, error) {
	xmin, rest, ok1 := strings.Cut(text, ":")
	xmax, list, ok2 := strings.Cut(rest, ":")
	if !ok1 || !ok2 {
		return snapshot{}, fmt.Errorf("cdc: snapshot %q is not of the form xmin:xmax:xip1,xip2", text)
	}
	var snap snapshot
	var err error
	if snap.xmin, err = strconv.ParseUint(xmin, 10, 64); err != nil {
		return snapshot{}, fmt.Errorf("cdc: snapshot %q: xmin: %w", text, err)
	}
	if snap.xmax, err = strconv.ParseUint(xmax, 10, 64); err != nil {
		return snapshot{}, fmt.Errorf("cdc: snapshot %q: xmax: %w", text, err)
	}
	if snap.xmin > snap.xmax {
		return snapshot{}, fmt.Errorf("cdc: snapshot %q: xmin past xmax", text)
	}
	if list == "" {
		return snap, nil
	}
	for x := range strings.SplitSeq(list, ",") {
		xid, err := strconv.ParseUint(x, 10, 64)
		if err != nil {
			return snapshot{}, fmt.Errorf("cdc: snapshot %q: xip: %w", text, err)
		}
		if xid < snap.xmin || xid >= snap.xmax {
			return snapshot{}, fmt.Errorf("cdc: snapshot %q: xip %d outside [xmin, xmax)", text, xid)
		}
		snap.xip = append(snap.xip, xid)
	}
	return snap, nil
}

// running reports whether the snapshot sees the transaction xid as running. xid is a
// 32-bit transaction id, as pgoutput names transactions, of a transaction that began
// less than 2³¹ transactions before the snapshot (as every transaction not yet frozen
// did), so comparing it with the low 32 bits of the snapshot's ids, modulo 2³², as
// Postgres' TransactionIdPrecedes does, is exact. A transaction at or past xmax is
// running although xip leaves it out: a snapshot lists only the running transactions
// below its xmax, which is one past the latest transaction that had ended, and a
// commit that is in WAL but has not ended is often the latest.
func (snap snapshot) running(xid uint32) bool {
	if int32(xid-uint32(snap.xmax)) >= 0 {
		return true
	}
	for _, x := range snap.xip {
		if uint32(x) == xid {
			return true
		}
	}
	return false
}

// firstRunning returns the first of xids the snapshot sees as running.
func (snap snapshot) firstRunning(xids []uint32) (uint32, bool) {
	for _, xid := range xids {
		if snap.running(xid) {
			return xid, true
		}
	}
	return 0, false
}

// awaitVisible returns nil once a snapshot of the server, read on conn (a normal
// connection, not the replication one), sees every transaction of txs that has
// changes as ended, which is when new snapshots see its changes; it asks again, after
// a wait that doubles from 250µs up to 50ms (with jitter), until then. It returns ctx's error when ctx
// is done, and the error when the query fails: the session then ends and the
// transactions are delivered again, never handed over unwaited. Each look tells p the
// server's WAL end too.
func (s *Stream) awaitVisible(ctx context.Context, conn *pgx.Conn, p *pipeline, txs []*Tx) error {
	if testhooks.SkipVisibility(ctx) {
		return nil
	}
	xids := make([]uint32, 0, len(txs))
	for _, tx := range txs {
		if len(tx.Changes) > 0 {
			xids = append(xids, tx.XID)
		}
	}
	if len(xids) == 0 {
		return nil
	}
	start := time.Now()
	warned := false
	waits := retry.Backoff(visibleFirstWait, visibleMaxWait)
	for {
		snap, walEnd, err := currentSnapshot(ctx, conn)
		if err != nil {
			return err
		}
		p.sawServerEnd(walEnd)
		xid, running := snap.firstRunning(xids)
		if !running {
			return nil
		}
		testhooks.Invisible(ctx, xid)
		if !warned && time.Since(start) >= visibleWarnAfter {
			warned = true
			s.log.Warn("cdc: a transaction is committed in WAL but not yet visible; invalidation waits for it (is a synchronous standby not confirming?)",
				slog.Uint64(logXID, uint64(xid)), slog.Duration(logWaited, time.Since(start)))
		}
		if err := retry.Wait(ctx, waits); err != nil {
			return err
		}
	}
}

// currentSnapshot reads the server's current snapshot on conn, and its WAL end: how
// far WAL is flushed, or replayed on a standby.
func currentSnapshot(ctx context.Context, conn *pgx.Conn) (snapshot, LSN, error) {
	qctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	var text, end string
	err := conn.QueryRow(qctx, `SELECT pg_current_snapshot()::text,
		coalesce(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_flush_lsn() END, '0/0')::text`).Scan(&text, &end)
	if err != nil {
		if ctx.Err() != nil {
			return snapshot{}, 0, ctx.Err()
		}
		return snapshot{}, 0, classify("read the current snapshot to see whether transactions are visible", err)
	}
	snap, err := parseSnapshot(text)
	if err != nil {
		return snapshot{}, 0, err
	}
	walEnd, err := pglogrepl.ParseLSN(end)
	if err != nil {
		return snapshot{}, 0, fmt.Errorf("cdc: WAL end %q: %w", end, err)
	}
	return snap, walEnd, nil
}
