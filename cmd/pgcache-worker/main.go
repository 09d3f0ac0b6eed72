// Command pgcache-worker deletes the cached entries of rows that change in Postgres,
// whoever changed them. It tails a logical replication slot (pgoutput) and deletes the
// changed rows' keys in Redis, confirming a position to Postgres only after Redis has
// acknowledged the deletions.
//
// Usage:
//
//	pgcache-worker -postgres URL -redis HOST:PORT -tables users,orders [flags]
//	pgcache-worker status -postgres URL -redis HOST:PORT [-prefix P] [-slot S]
//
// With -writeback it also runs a write-back flusher (writeback.Flusher) for the
// applications under -prefix, applying their journaled writes to Postgres; give each
// replica a stable -writeback-consumer so that a restarted worker takes its pending
// entries back at once instead of after -writeback-claim-after.
//
// With -audit-rate N it also runs the coherence auditor (package audit): N cached rows a
// second compared with Postgres, a mismatch read again after -audit-recheck and counted
// in pgcache_audit_inconsistent_total{table} only if still there with the same bytes.
//
// Every flag can also be set through the environment variable named in its help.
// It serves /healthz, /readyz and /metrics (Prometheus) on -listen, logs JSON to stderr,
// and on SIGTERM or SIGINT finishes the transaction at hand, confirms it and exits 0.
// /readyz answers 200 while the worker streams from its slot, any gap already flushed;
// it does not wait for a backlog to drain: pgcache_lag_seconds and pgcache_lag_bytes
// say how far behind the worker is. A standby waiting for the slot answers 503.
//
// The status command prints the slot's health (streamed or not, wal_status, WAL
// retained, confirmed lag), the registry of cached tables, recorded gaps and the
// write-back journal and dead letters, and exits 0 when all is well, 1 when a line
// (marked "!") needs an operator, 2 on bad flags, 6 when Redis does not answer.
//
// The deadletter command lists the write-back writes given up on (dead letters), applies
// them again once their cause is fixed, or drops them:
//
//	pgcache-worker deadletter list  [flags] [-json]
//	pgcache-worker deadletter retry [flags] (-all | ID...)
//	pgcache-worker deadletter drop  [flags] (-all | ID...)
//
// list prints a table (id, table, key, failed at, attempts, error) or, with -json, a
// JSON array with each write's change; retry applies each write to Postgres as it was
// written (refused while a newer write of the row is pending), deletes the row's
// cached value and removes the letter; drop removes letters unapplied. Flags come
// before the ids. Exit codes: 0 done; 1 some letters could not be retried or were not
// found (each named on stderr); 2 bad flags; 6 Redis does not answer.
//
// Exit codes: 0 stopped by a signal; 1 other failure; 2 bad flags or configuration;
// 3 wal_level is not logical; 4 the role lacks a privilege; 5 a table does not exist;
// 6 Redis unreachable at start.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if len(os.Args) > 1 && os.Args[1] == "status" {
		os.Exit(status(ctx, os.Args[2:], os.Getenv, os.Stdout, os.Stderr))
	}
	if len(os.Args) > 1 && os.Args[1] == "deadletter" {
		os.Exit(deadletter(ctx, os.Args[2:], os.Getenv, os.Stdout, os.Stderr))
	}
	os.Exit(run(ctx, os.Args[1:], os.Getenv, os.Stderr))
}
