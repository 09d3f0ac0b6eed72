package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgcache/pgcache/cdc"
	"github.com/pgcache/pgcache/internal/store"
	"github.com/pgcache/pgcache/keys"
)

// Exit codes of the status command, besides exitConfig and exitNoRedis.
const (
	// exitAttention: something needs an operator: the slot is missing, streamed by
	// nobody or losing WAL, a table applications cache is published by no publication,
	// gaps are recorded, writes are dead-lettered, or Postgres does not answer.
	exitAttention = 1
)

// report is what the status command found.
type report struct {
	slot     cdc.SlotHealth
	slotErr  error // Postgres could not be read: slot nor publications
	versions map[string][]string
	// published holds, for each table of the registry that Postgres has, the
	// publications that publish it; a table Postgres does not have is missing.
	published  map[string][]string
	gaps       map[string]string
	journal    int64
	deadLetter int64
	purges     int64
}

// status prints the slot's health, the registry, recorded gaps, the write-back
// journal and the purge stream, and returns 0 when all is well, exitAttention when something needs an
// operator (each such line starts with "!"), exitConfig or exitNoRedis.
func status(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	cfg, err := parse(args, getenv, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "pgcache-worker status:", err)
		return exitConfig
	}
	rdb, err := cfg.redis.client()
	if err != nil {
		fmt.Fprintln(stderr, "pgcache-worker status:", err)
		return exitConfig
	}
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st := store.New(rdb, 5*time.Second, "status")
	prefix := keys.Prefix(cfg.prefix)
	var r report
	if r.versions, err = st.Versions(ctx, cfg.prefix); err == nil {
		if r.gaps, err = st.RecordedGaps(ctx, cfg.prefix); err == nil {
			var streams []string
			if streams, err = st.JournalStreams(ctx, prefix); err == nil {
				r.journal, err = st.JournalLen(ctx, streams...)
			}
			if err == nil {
				if r.deadLetter, err = st.JournalLen(ctx, prefix.DeadLetter()); err == nil {
					r.purges, err = st.JournalLen(ctx, prefix.Purges())
				}
			}
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "pgcache-worker status: redis %s: %v\n", cfg.redis.display(), err)
		return exitNoRedis
	}
	r.slotErr = r.readPostgres(ctx, cfg.postgres, cfg.slot)
	return r.print(stdout, cfg)
}

// readPostgres reads the slot's health and the publications of the registry's tables.
func (r *report) readPostgres(ctx context.Context, url, slot string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if r.slot, err = cdc.ReadSlot(ctx, conn, slot); err != nil {
		return err
	}
	r.published = make(map[string][]string)
	for table := range r.versions {
		pubs, ok, err := cdc.Publications(ctx, conn, table)
		if err != nil {
			return err
		}
		if ok {
			r.published[table] = pubs
		}
	}
	return nil
}

// print writes the report and returns the exit code it calls for.
func (r report) print(w io.Writer, cfg config) int {
	code := exitOK
	line := func(bad bool, format string, a ...any) {
		mark := " "
		if bad {
			mark, code = "!", exitAttention
		}
		fmt.Fprintf(w, "%s %s\n", mark, fmt.Sprintf(format, a...))
	}
	switch s := r.slot; {
	case r.slotErr != nil:
		line(true, "slot %s: cannot read it from Postgres: %v", cfg.slot, r.slotErr)
	case !s.Exists:
		line(true, "slot %s: missing (the worker creates it, and flushes its tables first)", cfg.slot)
	default:
		line(!s.Active, "slot %s: %s", cfg.slot, map[bool]string{true: "streamed", false: "streamed by nobody: is a worker running?"}[s.Active])
		line(s.WALStatus == "lost" || s.WALStatus == "unreserved", "slot %s: wal_status %s, WAL retained %s, confirmed lag %s",
			cfg.slot, s.WALStatus, bytesText(s.RetainedBytes), bytesText(s.ConfirmedLagBytes))
	}
	tables := slices.Sorted(maps.Keys(r.versions))
	if len(tables) == 0 {
		line(false, "registry %s: empty (no application has cached a row under prefix %q yet)", keys.Prefix(cfg.prefix).Registry(), cfg.prefix)
	}
	for _, t := range tables {
		vs := strings.Join(r.versions[t], ", ")
		pubs, ok := r.published[t]
		switch {
		case r.slotErr != nil:
			line(false, "registry: table %s cached under versions %s", t, vs)
		case !ok:
			line(false, "registry: table %s cached under versions %s; Postgres has no such table (dropped or renamed: its entries expire with their TTL)", t, vs)
		case len(pubs) == 0:
			// Nothing streams its changes: rows changed by anyone but the library stay
			// stale until they expire. Often a worker whose search_path resolves an
			// unqualified -tables entry to another schema's table of that name.
			line(true, "registry: table %s cached under versions %s, but no publication publishes it: no worker invalidates it (give a worker -tables %s, schema-qualified)", t, vs, t)
		default:
			line(false, "registry: table %s cached under versions %s, published by %s", t, vs, strings.Join(pubs, ", "))
		}
	}
	gapped := slices.Sorted(maps.Keys(r.gaps))
	line(len(gapped) > 0, "gaps recorded: %s", orNone(gapped))
	line(false, "write-back journal: %d writes not yet applied", r.journal)
	line(r.deadLetter > 0, "write-back dead letters: %d", r.deadLetter)
	line(false, "purge stream: %d CDN purges pending (retries and second purges; see pgcache_purge_delay_seconds)", r.purges)
	return code
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

func bytesText(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
