package invalidator

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/pgcache/pgcache/keys"
)

// CheckServers flushes tables (schema.name, as Gap takes them) when the Redis servers
// are not those it last flushed them for, under slot's record (keys.Prefix.Servers),
// and reports whether it flushed.
//
// Redis acknowledges a deletion before its replicas have it and, unless appendfsync is
// always, before it is on disk. A failover that promotes a replica, or a restart from
// the AOF, can so lose deletions the invalidator acknowledged to Postgres long ago,
// and the rows they deleted would be served until their TTL. Either event gives the
// master a new run id. The record is written after the flush, so a worker that dies in
// between flushes again; the first check of a slot, with no record, flushes too.
func (v *Invalidator) CheckServers(ctx context.Context, slot string, tables []string) (bool, error) {
	key := keys.Prefix(v.prefix).Servers(slot)
	var ids, seen string
	err := v.retry(ctx, func(ctx context.Context) (err error) {
		if ids, err = v.store.ServerIDs(ctx); err != nil {
			return err
		}
		seen, err = v.store.SeenServers(ctx, key)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("invalidator: check the Redis servers: %w", err)
	}
	if ids == seen {
		return false, nil
	}
	if seen != "" {
		v.log.Warn("the Redis servers changed (a failover or a restart), which may have lost acknowledged deletions; invalidating whole tables",
			slog.String("run_ids", ids), slog.String("before", seen), slog.Any("tables", tables))
	}
	reason := "the Redis servers changed"
	if seen == "" {
		reason = "no record of the Redis servers the tables were last flushed for"
	}
	if err := v.Gap(ctx, tables, reason); err != nil {
		return false, err
	}
	err = v.retry(ctx, func(ctx context.Context) error { return v.store.SetSeenServers(ctx, key, ids) })
	if err != nil {
		return false, fmt.Errorf("invalidator: record the Redis servers: %w", err)
	}
	if seen != "" {
		v.serverChanges.Add(1)
	}
	return true, nil
}

// watchServers calls CheckServers for the stream's tables as soon as a session has
// resolved them, then every interval until ctx ends. The worker is Ready only once the
// first check is done, so that a flush it causes comes before anything a caller fills.
// A failed check is logged and tried again at the next tick: the stream itself waits
// out a Redis that does not answer.
func (w *Worker) watchServers(ctx context.Context, interval time.Duration) error {
	const poll = 10 * time.Millisecond // while no session has resolved the tables
	t := time.NewTimer(poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		tables := w.stream.Tables()
		if tables == nil {
			t.Reset(poll)
			continue
		}
		if _, err := w.inv.CheckServers(ctx, w.slot, tables); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			w.inv.log.Warn("could not check the Redis servers; trying again", slog.Any("error", err))
		} else {
			w.checked.Store(true)
		}
		t.Reset(interval)
	}
}
