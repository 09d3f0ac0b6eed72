// Package audit is pgcache's coherence auditor: it measures, in production, whether
// the cache holds rows Postgres no longer has, as Meta's Polaris does for its caches.
//
// An Auditor samples cached rows at a fixed rate (a random member of a random cached
// table's index, keys.Space.TableIndex, via ZRANDMEMBER), decodes the entry without
// the model's Go type, reads the same columns of the row from Postgres by primary key,
// and compares the two, canonicalised (see equalValue). A mismatch is not yet an
// error: the row may have changed a moment ago and its invalidation still be on its
// way. So a mismatch is re-read after Options.Recheck, longer than the invalidation
// lag is expected to be, and confirmed only when Redis still holds the same bytes and
// they still differ from Postgres. A confirmed inconsistency is counted per table
// (Stats.Inconsistent) and logged as a warning with the key and the columns that
// differ (not their values).
//
// Decoding needs the entry's shape: its codec and the columns of its record, in order,
// which the applications announce in the shape registry (keys.Prefix.Shapes) with
// their leases, at most once a minute per model. Entries of a version with no shape
// yet, of a codec the Auditor does not know (give it in Options.Codecs), lookup
// entries, and rows with a pending write-back write (which Postgres does not have
// yet, by design) are skipped and counted in Stats.Skipped.
//
// What it needs: a Redis client (the cache's), and a *sql.DB on Postgres (the pgx
// stdlib driver, as GORM's postgres driver uses, so that values come back as the
// applications loaded them) with SELECT on the cached tables.
//
// What it cannot see: a recheck confirms only an entry whose bytes stayed the same;
// a row whose value changed and changed back within Options.Recheck, with its entry
// refilled to the same bytes in between, can in theory be reported although each
// entry was fresh when stored. Keep Recheck well above the worker's lag
// (pgcache_lag_seconds) and below the TTL.
package audit

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/time/rate"

	"github.com/pgcache/pgcache/internal/store"
	"github.com/pgcache/pgcache/keys"
	"github.com/pgcache/pgcache/readthrough"
)

// Options configures an Auditor. Zero values mean the defaults.
type Options struct {
	// Prefix is the applications' key prefix (readthrough.Options.Prefix). Default "pgc".
	Prefix string
	// Rate is how many cached entries to sample per second. Required: > 0.
	Rate float64
	// Recheck is how long after a mismatch the entry and the row are read again: a
	// mismatch still there, with the same bytes in Redis, is an inconsistency.
	// Default 5s. Keep it above the invalidation lag you expect.
	Recheck time.Duration
	// MaxRechecks bounds the mismatches waiting for their recheck; more are skipped.
	// Default 1000.
	MaxRechecks int
	// Codecs decode the entries of models with a codec of their own; the built-in
	// codecs (readthrough.Binary, JSON, Msgpack) are always known.
	Codecs []readthrough.Codec
	// RedisTimeout and QueryTimeout bound each Redis operation and each query.
	// Default 5s each.
	RedisTimeout, QueryTimeout time.Duration
	// RefreshEvery is how often the registries (tables, versions, shapes) and the
	// tables' columns are read again. Default 10s.
	RefreshEvery time.Duration
	// Logger receives the confirmed inconsistencies (Warn) and failures. Default
	// slog.Default().
	Logger *slog.Logger
}

func (o Options) withDefaults() (Options, error) {
	if o.Rate <= 0 {
		return o, fmt.Errorf("audit: Rate %v: want a positive number of samples per second", o.Rate)
	}
	if o.Prefix == "" {
		o.Prefix = "pgc"
	}
	if o.Recheck <= 0 {
		o.Recheck = 5 * time.Second
	}
	if o.MaxRechecks <= 0 {
		o.MaxRechecks = 1000
	}
	if o.RedisTimeout <= 0 {
		o.RedisTimeout = 5 * time.Second
	}
	if o.QueryTimeout <= 0 {
		o.QueryTimeout = 5 * time.Second
	}
	if o.RefreshEvery <= 0 {
		o.RefreshEvery = 10 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o, nil
}

// Stats counts what an Auditor did. Counters only grow.
type Stats struct {
	// Checked: entries compared with Postgres (each sample once, rechecks not again).
	Checked uint64
	// Rechecks: mismatches read again after Options.Recheck.
	Rechecks uint64
	// Skipped: samples not compared (no entry, pending write-back write, no shape,
	// unknown codec, lookup entry, recheck queue full).
	Skipped uint64
	// Errors: failed reads of Redis or Postgres.
	Errors uint64
	// Inconsistent: confirmed inconsistencies, by table (as keys name it).
	Inconsistent map[string]uint64
}

// Auditor samples cached entries and compares them with Postgres. Make it with New and
// run it with Run; Stats is safe for concurrent use.
type Auditor struct {
	opts   Options
	store  *store.Store
	db     *sql.DB
	log    *slog.Logger
	codecs map[string]readthrough.Codec
	warn   rate.Sometimes

	checked, rechecks, skipped, errs atomic.Uint64
	mu                               sync.Mutex
	inconsistent                     map[string]uint64

	// Owned by Run's goroutine.
	tables    []string               // announced tables
	shapes    map[string]store.Shape // by registry field
	relations map[string]*relation   // by table
	refreshed time.Time
}

// New returns an Auditor of the entries under opts.Prefix in rdb against db.
func New(rdb redis.UniversalClient, db *sql.DB, opts Options) (*Auditor, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if rdb == nil || db == nil {
		return nil, errors.New("audit: New needs a Redis client and a *sql.DB")
	}
	codecs := map[string]readthrough.Codec{}
	for _, c := range append([]readthrough.Codec{readthrough.Binary{}, readthrough.JSON{}, readthrough.Msgpack{}}, opts.Codecs...) {
		codecs[c.Name()] = c
	}
	return &Auditor{opts: opts, store: store.New(rdb, opts.RedisTimeout, "audit"), db: db, log: opts.Logger,
		codecs: codecs, warn: rate.Sometimes{Interval: time.Minute}, inconsistent: map[string]uint64{},
		relations: map[string]*relation{}}, nil
}

// Stats returns a snapshot of the Auditor's counters.
func (a *Auditor) Stats() Stats {
	a.mu.Lock()
	defer a.mu.Unlock()
	return Stats{Checked: a.checked.Load(), Rechecks: a.rechecks.Load(), Skipped: a.skipped.Load(),
		Errors: a.errs.Load(), Inconsistent: maps.Clone(a.inconsistent)}
}

// mismatch is a sample that differed from Postgres, waiting for its recheck.
type mismatch struct {
	key   keys.Key
	table string
	entry []byte
	due   time.Time
}

// Run samples at Options.Rate and rechecks mismatches until ctx ends; it returns nil
// then. Failures are counted and logged, never returned: the auditor observes, it
// must not stop the worker.
func (a *Auditor) Run(ctx context.Context) error {
	interval := time.Duration(float64(time.Second) / a.opts.Rate)
	var queue []mismatch // in due order: every recheck waits the same time
	next := time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		}
		now := time.Now()
		for len(queue) > 0 && !queue[0].due.After(now) {
			a.recheck(ctx, queue[0])
			queue = queue[1:]
		}
		if !now.Before(next) {
			next = next.Add(interval)
			if next.Before(now) {
				next = now.Add(interval) // fell behind: do not burst to catch up
			}
			if m, ok := a.sample(ctx); ok {
				if len(queue) >= a.opts.MaxRechecks {
					a.skipped.Add(1)
				} else {
					m.due = time.Now().Add(a.opts.Recheck)
					queue = append(queue, m)
				}
			}
		}
		wake := next
		if len(queue) > 0 && queue[0].due.Before(wake) {
			wake = queue[0].due
		}
		timer.Reset(max(time.Until(wake), 0))
	}
}

// sample checks one random cached entry; it returns the mismatch to recheck, if any.
func (a *Auditor) sample(ctx context.Context) (mismatch, bool) {
	if time.Since(a.refreshed) >= a.opts.RefreshEvery {
		a.refresh(ctx)
	}
	if len(a.tables) == 0 {
		return mismatch{}, false
	}
	table := a.tables[rand.IntN(len(a.tables))]
	space, err := keys.NewSpace(a.opts.Prefix, table, "x")
	if err != nil {
		a.skipped.Add(1)
		return mismatch{}, false
	}
	picked, err := a.store.SampleIndex(ctx, space.TableIndex(), 1)
	if err != nil {
		a.failed("sample a table's index", err, slog.String("table", table))
		return mismatch{}, false
	}
	if len(picked) == 0 {
		return mismatch{}, false
	}
	k, ok := keys.KeyOfValue(picked[0])
	if !ok {
		a.skipped.Add(1)
		return mismatch{}, false
	}
	cached, err := a.store.ReadCached(ctx, k)
	if err != nil {
		a.failed("read an entry", err, slog.String("key", k.Value()))
		return mismatch{}, false
	}
	if !cached.Found || cached.Pending {
		a.skipped.Add(1)
		return mismatch{}, false
	}
	diff, ok := a.compare(ctx, k, cached.Value)
	if !ok {
		return mismatch{}, false
	}
	a.checked.Add(1)
	if len(diff) == 0 {
		return mismatch{}, false
	}
	return mismatch{key: k, table: table, entry: cached.Value}, true
}

// recheck reads a mismatch again and counts it as an inconsistency if Redis holds the
// same bytes and they still differ from Postgres.
func (a *Auditor) recheck(ctx context.Context, m mismatch) {
	a.rechecks.Add(1)
	cached, err := a.store.ReadCached(ctx, m.key)
	if err != nil {
		a.failed("read an entry", err, slog.String("key", m.key.Value()))
		return
	}
	if !cached.Found || cached.Pending || !bytes.Equal(cached.Value, m.entry) {
		return // invalidated, refilled or written since: it was lag
	}
	diff, ok := a.compare(ctx, m.key, cached.Value)
	if !ok || len(diff) == 0 {
		return
	}
	a.mu.Lock()
	a.inconsistent[m.table]++
	a.mu.Unlock()
	a.log.LogAttrs(ctx, slog.LevelWarn, "audit: cached entry differs from postgres past the recheck delay",
		slog.String("key", m.key.Value()), slog.String("table", m.table), slog.Any("columns", diff),
		slog.Duration("recheck", a.opts.Recheck))
}

// compare decodes entry (the value of k) and compares it with Postgres' row. It
// returns the names of the columns that differ ("(row)" when one side has no row),
// and false when the sample cannot be compared (counted as skipped or an error).
func (a *Auditor) compare(ctx context.Context, k keys.Key, entry []byte) ([]string, bool) {
	space, pk, err := keys.ParseKey(k.Value())
	if err != nil {
		a.skipped.Add(1) // a lookup entry, or not a row key
		return nil, false
	}
	version := space.Version()
	if inner, ok := bytes.CutPrefix(entry, []byte("@")); ok {
		// A write-back model's entry: "@<version>:" names the version that wrote it.
		v, rest, ok := bytes.Cut(inner, []byte(":"))
		if !ok {
			a.skipped.Add(1)
			return nil, false
		}
		version, entry = string(v), rest
	}
	sh, ok := a.shapes[space.Table()+"|"+version]
	if !ok || len(sh.Key) != len(pk) || len(entry) == 0 {
		a.skipped.Add(1)
		return nil, false
	}
	codec, ok := a.codecs[sh.Codec]
	if !ok {
		a.skipped.Add(1)
		a.warn.Do(func() {
			a.log.Warn("audit: entries of an unknown codec skipped: give it in Options.Codecs", slog.String("codec", sh.Codec))
		})
		return nil, false
	}
	var cols []any
	switch entry[0] {
	case 'n': // the row does not exist
	case 'v':
		dv := make([]driverValue, len(sh.Columns))
		if err := codec.DecodeColumns(entry[1:], dv); err != nil {
			a.skipped.Add(1)
			return nil, false
		}
		cols = make([]any, len(dv))
		for i, v := range dv {
			cols[i] = v
		}
	default: // a soft delete pending, or an entry this auditor does not know
		a.skipped.Add(1)
		return nil, false
	}
	row, found, err := a.load(ctx, space.Table(), sh, pk)
	if err != nil {
		a.failed("read the row from postgres", err, slog.String("table", space.Table()))
		return nil, false
	}
	switch {
	case cols == nil && !found:
		return nil, true
	case cols == nil || !found:
		return []string{"(row)"}, true
	}
	var diff []string
	for i, c := range sh.Columns {
		if !equalValue(cols[i], row[i]) {
			diff = append(diff, c)
		}
	}
	return diff, true
}

// refresh reads the registries and forgets the tables' columns.
func (a *Auditor) refresh(ctx context.Context) {
	a.refreshed = time.Now()
	ann, err := a.store.Announced(ctx, a.opts.Prefix)
	if err != nil {
		a.failed("read the registry", err)
		return
	}
	shapes, err := a.store.Shapes(ctx, a.opts.Prefix)
	if err != nil {
		a.failed("read the shape registry", err)
		return
	}
	a.tables = slices.Sorted(maps.Keys(ann.Versions))
	a.shapes = shapes
	clear(a.relations)
}

func (a *Auditor) failed(what string, err error, attrs ...slog.Attr) {
	a.errs.Add(1)
	a.warn.Do(func() {
		a.log.LogAttrs(context.Background(), slog.LevelWarn, "audit: cannot "+what, append(attrs, slog.Any("error", err))...)
	})
}
