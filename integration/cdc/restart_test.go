package cdc_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgcache/pgcache/cdc"
	"github.com/pgcache/pgcache/integration"
	"github.com/pgcache/pgcache/internal/testhooks"
)

// restartLSN returns the slot's restart_lsn.
func restartLSN(t *testing.T, conn *pgx.Conn, slot string) cdc.LSN {
	t.Helper()
	return slotLSN(t, conn, slot, "restart_lsn")
}

// restartFollows streams items as the least-privilege role with the given
// StandbySnapshotInterval and the default StatusInterval (10s), commits a row every
// 50ms for up to within, and reports whether the slot's restart_lsn passed the WAL
// position of the first of them meanwhile.
func restartFollows(t *testing.T, every, within time.Duration, revoke bool, logs *integration.LogBuffer) bool {
	t.Helper()
	db := servers.Postgres(t).NewDatabase(t)
	admin := connect(t, db.URL)
	if revoke {
		exec(t, admin, `REVOKE EXECUTE ON FUNCTION pg_log_standby_snapshot() FROM pgcache_repl`)
	}
	role := connect(t, db.RoleURL)
	exec(t, role, `CREATE TABLE items (id bigint PRIMARY KEY)`)
	slot := slotName(db, "restart")
	opts := fastOptions(t, slot, "items")
	opts.StatusInterval, opts.StandbySnapshotInterval = 0, every
	if logs != nil {
		opts.Logger = slog.New(slog.NewTextHandler(logs, nil))
	}
	h := new(rowCounter)
	r := start(t, db.RoleURL, opts, h)
	r.waitConnected(t)

	mark := currentLSN(t, admin)
	deadline := time.Now().Add(within)
	for id := 1; time.Now().Before(deadline); id++ {
		exec(t, role, fmt.Sprintf(`INSERT INTO items VALUES (%d)`, id))
		if restartLSN(t, admin, slot) > mark {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	if h.txs.Load() == 0 {
		t.Fatal("no transaction handled: the stream did not stream")
	}
	return false
}

// TestRestartLSNFollows: while transactions arrive, the stream logs running-transactions
// records and reports its position past each at once, so the slot's restart_lsn (where
// a restarted stream's server decodes from) follows it within a second or so, where it
// would otherwise wait for the background writer's record (every 15s) and the next
// status update (every 10s): a restart then decodes little WAL it had already
// confirmed. The role is the least-privilege one, granted EXECUTE on
// pg_log_standby_snapshot as the README says.
func TestRestartLSNFollows(t *testing.T) {
	t.Parallel()
	if !restartFollows(t, 200*time.Millisecond, 20*time.Second, false, nil) {
		t.Error("restart_lsn did not pass the first commit's position within 20s of commits")
	}
}

// TestRestartLSNFollowsControl: without the records (StandbySnapshotInterval
// negative), restart_lsn stays behind for 2s of commits. The background writer may log
// a record of its own in that window, followed by a status update; such a coincidence
// is retried, up to three times.
func TestRestartLSNFollowsControl(t *testing.T) {
	t.Parallel()
	for range 3 {
		if !restartFollows(t, -1, 2*time.Second, false, nil) {
			return
		}
	}
	t.Error("restart_lsn passed the first commit's position within 2s three times without the stream's records: the test cannot tell them")
}

// TestRestartLSNRefused: a role without EXECUTE on pg_log_standby_snapshot streams all
// the same; the refusal is logged once, saying what to grant.
func TestRestartLSNRefused(t *testing.T) {
	t.Parallel()
	logs := new(integration.LogBuffer)
	restartFollows(t, 100*time.Millisecond, time.Second, true, logs)
	if n := strings.Count(logs.String(), "GRANT EXECUTE ON FUNCTION pg_log_standby_snapshot()"); n != 1 {
		t.Errorf("the refusal was logged %d times, want once; logs:\n%s", n, logs.String())
	}
}

// restartAfterStop streams items as the least-privilege role, commits one
// transaction of 20,000 rows, stops the stream as soon as it has logged a
// running-transactions record after it, and reports whether the slot's restart_lsn
// then lies past the transaction. The server is one no other test uses: restart_lsn
// cannot pass the start of the oldest transaction running anywhere on the server.
func restartAfterStop(t *testing.T, pg *integration.Postgres, noLinger bool) bool {
	t.Helper()
	db := pg.NewDatabase(t)
	admin := connect(t, db.URL)
	role := connect(t, db.RoleURL)
	exec(t, role, `CREATE TABLE items (id bigint PRIMARY KEY)`)
	slot := slotName(db, "stop")
	opts := fastOptions(t, slot, "items")
	opts.StatusInterval = 0 // the default, 10s
	logged := make(chan uint64, 16)
	hooks := &testhooks.CDC{NoLinger: noLinger, SnapshotLogged: func(lsn uint64) { logged <- lsn }}
	r := startHooked(t, db.RoleURL, opts, new(rowCounter), hooks)
	r.waitConnected(t)

	exec(t, role, `INSERT INTO items SELECT g FROM generate_series(1, 20000) g`)
	end := currentLSN(t, admin)
	for {
		select {
		case lsn := <-logged:
			if cdc.LSN(lsn) < end {
				continue // a record before the transaction
			}
		case <-time.After(wait):
			t.Fatal("no running-transactions record logged after the transaction")
		}
		break
	}
	stopping := time.Now()
	if err := r.stop(t); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v", err)
	}
	restart := restartLSN(t, admin, slot)
	t.Logf("stopped in %v; restart_lsn %s, the transaction ends at %s, confirmed %s", time.Since(stopping), restart, end, confirmedFlush(t, admin, slot))
	return restart >= end
}

// TestRestartLSNAfterStop: a stream stopped right after a large transaction, having
// logged a running-transactions record past it, waits for the server to pass the
// record and reports its position as it stops: the slot's restart_lsn is past the
// transaction, so a restart does not decode it again.
func TestRestartLSNAfterStop(t *testing.T) {
	t.Parallel()
	if !restartAfterStop(t, integration.NewPostgres(t, integration.PostgresOptions{}), false) {
		t.Error("restart_lsn is before the transaction the stream handled before it stopped")
	}
}

// TestRestartLSNAfterStopControl: without that wait (testhooks.CDC.NoLinger),
// restart_lsn stays before the transaction. A status update may still slip in
// between the record and the stop; such a coincidence is retried, up to three times.
func TestRestartLSNAfterStopControl(t *testing.T) {
	t.Parallel()
	pg := integration.NewPostgres(t, integration.PostgresOptions{})
	for range 3 {
		if !restartAfterStop(t, pg, true) {
			return
		}
	}
	t.Error("restart_lsn passed the transaction three times without the stopping stream's wait: the test cannot tell it")
}
