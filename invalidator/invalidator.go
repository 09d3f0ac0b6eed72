// Package invalidator deletes the cached entries of rows that changed in Postgres, from
// the change stream of package cdc, so that rows written by anyone (raw SQL, other
// services, migrations) are served stale for at most the invalidation lag.
//
// # How the worker and the applications agree on keys
//
// The worker has no Go types. It learns each changed row's table, primary-key columns
// and their types from the change stream's relation messages, and the key prefix from
// its own options (it must equal readthrough.Options.Prefix). Schema versions come from
// the registry in Redis (the hash [keys.Prefix.Registry] names), to which every
// application adds its (table, version) before it first caches a row of the table; the
// invalidator reads it for every transaction and deletes the row's keys under every
// version it lists. A row cached under a version the registry does not list cannot
// exist.
//
// # Lookups
//
// Applications cache lookups by other columns too: by a unique column (an entry maps the
// values to the primary key of the row that holds them, or to "none") and by a column
// such as a foreign key (an entry lists the primary keys of the rows that hold them).
// They announce each (table, version, lookup) in the lookup registry
// ([keys.Prefix.Lookups]) with every lease, as versions are announced, and the
// invalidator reads both registries in one round trip. Readers check every row an
// entry names against the values asked for, so a row that leaves an entry (its value
// changed, it was deleted) needs nothing from the invalidator; a row that enters one
// (an insert, an update to the value, an undelete) is what the invalidator covers:
// for every INSERT and UPDATE of a table with announced lookups it deletes the entries
// the new row's values name ([keys.Space.LookupKey], values canonicalised by their
// column type as the primary key's are), under every version that announced the
// lookup, with the row keys and in the same acknowledgement; and those the old row's
// values name where the message carries them (REPLICA IDENTITY FULL). A NULL names no
// entry. A lookup column whose new value the message lacks (an unchanged TOASTed
// value, or one longer than cdc.MaxValueLen) makes it flush the table.
//
// # Acknowledgement
//
// Handle (and HandleBatch, for several transactions) returns only after Redis has
// acknowledged the deletions of the whole transaction; the stream confirms the
// transaction to Postgres only then. A Redis failure is retried for a while, then
// returned: the stream reconnects and delivers the transaction again. Deleting twice
// is harmless.
//
// # CDN purges
//
// With Options.Purger, the tags of the deleted keys are purged too, at least once:
// at once, for at most PurgeTimeout, and what that did not purge is appended to the
// prefix's purge stream (keys.Prefix.Purges) before the acknowledgement, for RunPurges
// to retry until the purger succeeds. Every purge is repeated RepurgeAfter later, for
// responses rendered from the old row that reached the CDN after the first purge. See
// purge.go.
package invalidator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"

	"github.com/pgcache/pgcache/cdc"
	"github.com/pgcache/pgcache/internal/retry"
	"github.com/pgcache/pgcache/internal/store"
	"github.com/pgcache/pgcache/internal/testhooks"
	"github.com/pgcache/pgcache/keys"
)

// Options configure an Invalidator. The zero value gives the defaults.
type Options struct {
	// Prefix is the applications' key prefix (readthrough.Options.Prefix). Default "pgc".
	Prefix string
	// RedisTimeout bounds each Redis operation. Default 1s.
	RedisTimeout time.Duration
	// RetryFor is how long Handle and Gap retry a failing Redis operation (reading the
	// registry, deleting a batch of keys, flushing a table) before returning the error
	// (the stream then reconnects and redelivers). Default 5s.
	RetryFor time.Duration
	// Logger receives warnings. Nil discards them.
	Logger *slog.Logger
	// Purger, when set, is told the tags of the rows (and tables) invalidated, for a
	// CDN or an HTTP cache in front of package httpcache's responses, at least once
	// (see purge.go). Run RunPurges (Worker.Run does) for purges to be retried.
	Purger Purger
	// PurgeTimeout bounds how long purging may hold a batch's acknowledgement,
	// retries included; a purge not done by then is counted (Stats.PurgeErrors) and
	// kept in the purge stream (keys.Prefix.Purges) for RunPurges to retry, and the
	// batch acknowledged. Default 2s.
	PurgeTimeout time.Duration
	// RepurgeAfter is how long after a batch's purge its tags are purged again: a
	// response rendered from the old row that reached the CDN after the first purge
	// (which overtook it) is dropped then, if it arrived within RepurgeAfter of the
	// invalidation. Default 2s; negative turns the second purge off.
	RepurgeAfter time.Duration
}

// Stats counts what an Invalidator did.
type Stats struct {
	Transactions uint64 // transactions handled
	Changes      uint64 // row changes seen
	KeysDeleted  uint64 // row keys deleted (value and lease, under every version)
	// LookupKeysDeleted counts lookup entries deleted (value and lease, under every
	// version that announced the lookup).
	LookupKeysDeleted uint64
	TablesFlushed     uint64 // whole-table invalidations (TRUNCATE, keyless changes, gaps)
	Errors            uint64 // failed Redis attempts
	// RegistryMissing counts batches handled while the registry was missing: their
	// tables flushed whole, or refused (ErrWrongPrefix).
	RegistryMissing uint64
	// ServerChanges counts the times the Redis servers changed (a failover, a
	// restart) and the tables were flushed (see CheckServers).
	ServerChanges uint64
	Purged        uint64 // tags the Purger purged (second purges and retries included)
	// PurgeErrors counts purges that failed or outlasted PurgeTimeout: at once (their
	// tags then go to the purge stream) or retried from the purge stream.
	PurgeErrors uint64
	// PurgesPending is the number of entries in the purge stream (purges to retry and
	// second purges, up to 256 tags each) and PurgeDelay how long past its due time
	// its most overdue entry was, as RunPurges last read them: a delay that grows
	// means purges fail.
	PurgesPending int64
	PurgeDelay    time.Duration
}

// Invalidator is a cdc.Handler that deletes cached rows. It is safe for concurrent use.
type Invalidator struct {
	store    *store.Store
	prefix   string
	retryFor time.Duration
	log      *slog.Logger

	mu     sync.Mutex
	spaces map[[2]string]keys.Space // (table, version) → space
	// known: every version the registry and every lookup the lookup registry has
	// listed, as of the last read.
	known announced
	// lostWarned is set while the registry lacks versions it listed, warned about once.
	lostWarned bool
	// registries: every prefix's registry as last read, at registriesAt.
	registries   map[string][]string
	registriesAt time.Time

	missingWarn rate.Sometimes // the missing-registry log: once per registriesTTL

	transactions, changes, keysDeleted, tablesFlushed, errors atomic.Uint64
	lookupKeysDeleted, registryMissingCount, serverChanges    atomic.Uint64

	*purging // purge.go
}

var _ cdc.BatchHandler = (*Invalidator)(nil)

// New returns an Invalidator deleting keys in rdb.
func New(rdb redis.UniversalClient, opts Options) (*Invalidator, error) {
	if rdb == nil {
		return nil, fmt.Errorf("invalidator: New needs a Redis client")
	}
	if opts.Prefix == "" {
		opts.Prefix = "pgc"
	}
	if _, err := keys.NewSpace(opts.Prefix, "t", "v"); err != nil {
		return nil, fmt.Errorf("invalidator: Options.Prefix: %w", err)
	}
	if opts.RedisTimeout <= 0 {
		opts.RedisTimeout = time.Second
	}
	if opts.RetryFor <= 0 {
		opts.RetryFor = 5 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	st := store.New(rdb, opts.RedisTimeout, "invalidator")
	return &Invalidator{
		store:    st,
		prefix:   opts.Prefix,
		retryFor: opts.RetryFor,
		log:      opts.Logger,
		spaces:   make(map[[2]string]keys.Space),

		missingWarn: rate.Sometimes{Interval: registriesTTL},
		purging:     newPurging(opts, st),
	}, nil
}

// Stats returns a snapshot of the counters.
func (v *Invalidator) Stats() Stats {
	return Stats{
		Transactions:      v.transactions.Load(),
		Changes:           v.changes.Load(),
		KeysDeleted:       v.keysDeleted.Load(),
		LookupKeysDeleted: v.lookupKeysDeleted.Load(),
		TablesFlushed:     v.tablesFlushed.Load(),
		Errors:            v.errors.Load(),
		RegistryMissing:   v.registryMissingCount.Load(),
		ServerChanges:     v.serverChanges.Load(),
		Purged:            v.purged.Load(),
		PurgeErrors:       v.purgeErrors.Load(),
		PurgesPending:     v.pending.Load(),
		PurgeDelay:        time.Duration(v.delayMs.Load()) * time.Millisecond,
	}
}

// Handle deletes the keys of every row the transaction changed, under every announced
// version of its table; TRUNCATE, and changes to tables without a key (REPLICA IDENTITY
// NOTHING), invalidate the whole table.
//
// The registry is read once per call, after the commit (Handle runs after it). To spare
// a round trip, the keys under the versions the previous call read are deleted while the
// registry is read, and then those under any version the read adds. Versions the
// registry listed once are kept: if it loses them, rows cached under them are still
// invalidated. Row keys are deleted in pipelines of at most deleteBatch rows, up to
// deletesInFlight at once, each bounded by RedisTimeout and retried on its own, so that
// a transaction of any size makes progress; Handle returns once all of them are done.
func (v *Invalidator) Handle(ctx context.Context, tx *cdc.Tx) error {
	return v.HandleBatch(ctx, []*cdc.Tx{tx})
}

// HandleBatch handles transactions as Handle does one, in one go: the registry is read
// once for all of them (after their commits), and the keys of their rows share
// pipelines, so that a backlog of small transactions costs a Redis round trip per
// batch rather than one per transaction. The stream calls it with every transaction it
// received and had not handled (cdc.BatchHandler). It returns nil only once every key
// is deleted.
func (v *Invalidator) HandleBatch(ctx context.Context, txs []*cdc.Tx) error {
	if len(txs) == 0 {
		return nil
	}
	v.mu.Lock()
	known := v.known
	v.mu.Unlock()

	// Tags are worked out only for a Purger: a digest per key costs as much as the
	// rest of the plan.
	var tags *tagSet
	if v.purger != nil {
		tags = &tagSet{}
	}
	read, err := v.applyReading(ctx, v.plan(txs, known), tags)
	if err == nil && len(read.versions) == 0 {
		// No registry: nothing is cached under the prefix, or the registry was lost
		// while rows stayed cached, or no application uses the prefix.
		err = v.registryMissing(ctx, txs)
	}
	if err == nil {
		err = v.apply(ctx, txs, v.learn(known, read), tags)
	}
	if err != nil {
		first, last := txs[0], txs[len(txs)-1]
		if len(txs) == 1 {
			return fmt.Errorf("invalidator: transaction %d ending at %v: %w", last.XID, last.EndLSN, err)
		}
		return fmt.Errorf("invalidator: %d transactions from %d (commit %v) to %d (ending at %v): %w",
			len(txs), first.XID, first.CommitLSN, last.XID, last.EndLSN, err)
	}
	if err := v.purge(ctx, tags.list()); err != nil {
		return fmt.Errorf("invalidator: %d transactions ending at %v: %w", len(txs), txs[len(txs)-1].EndLSN, err)
	}
	v.transactions.Add(uint64(len(txs)))
	for _, tx := range txs {
		v.changes.Add(uint64(len(tx.Changes)))
	}
	return nil
}

// applyReading applies p, the plan under the versions and lookups already known, and
// reads the registries meanwhile: what they list now is compared with what was known
// (learn), and the keys under what is new deleted next. A plan whose keys fit in one
// pipeline is sent in the registries' read, so that a transaction of a few rows costs
// one round trip; a larger one is applied while the read is under way.
func (v *Invalidator) applyReading(ctx context.Context, p plan, tags *tagSet) (announced, error) {
	var read announced
	readAll := func(ctx context.Context, ks []keys.Key) error {
		a, err := v.store.InvalidateAnnounced(ctx, v.prefix, ks)
		read = announced{versions: a.Versions, lookups: a.Lookups}
		return err
	}
	if len(p.keys) <= deleteBatch {
		if err := v.retry(ctx, func(ctx context.Context) error { return readAll(ctx, p.keys) }); err != nil {
			return read, err
		}
		v.deleted(p, 0, len(p.keys))
		tags.addKeys(p.keys)
		return read, v.flushTables(ctx, p)
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	readErr := make(chan error, 1)
	go func() {
		readErr <- v.retry(rctx, func(ctx context.Context) error { return readAll(ctx, nil) })
	}()
	err := v.applyPlan(ctx, p, tags)
	if err != nil {
		cancel()
	}
	if rerr := <-readErr; err == nil {
		err = rerr
	}
	return read, err
}

// learn adds what read lists and known does not to the versions and lookups known, and
// returns it: the versions and lookups announced since the last read, whose keys are
// still to delete. Versions the registry no longer lists are warned about, once, and
// kept.
func (v *Invalidator) learn(known, read announced) announced {
	fresh := announced{versions: added(read.versions, known.versions), lookups: added(read.lookups, known.lookups)}
	lost := added(known.versions, read.versions)
	v.mu.Lock()
	if fresh.versions != nil || fresh.lookups != nil {
		v.known = announced{versions: union(known.versions, fresh.versions), lookups: union(known.lookups, fresh.lookups)}
	}
	warn := lost != nil && !v.lostWarned
	v.lostWarned = lost != nil
	v.mu.Unlock()
	if warn {
		// The registry lost versions (a Redis restart without persistence, a Cluster
		// node replaced, someone deleted it) while rows cached under them may remain:
		// keep deleting under them.
		v.log.Warn("the version registry no longer lists versions it listed; still invalidating under them",
			slog.String("registry", keys.Prefix(v.prefix).Registry()), slog.Any("versions", lost))
	}
	return fresh
}

// announced is what the registries list: versions by table, and lookups (each under a
// version) by table.
type announced struct {
	versions map[string][]string
	lookups  map[string][]store.VersionLookup
}

// apply deletes the keys of the rows txs changed under the given versions, and the
// lookup entries their values name under the given lookups, and flushes the tables
// they truncated.
func (v *Invalidator) apply(ctx context.Context, txs []*cdc.Tx, a announced, tags *tagSet) error {
	return v.applyPlan(ctx, v.plan(txs, a), tags)
}

// applyPlan deletes p's keys and flushes its tables.
func (v *Invalidator) applyPlan(ctx context.Context, p plan, tags *tagSet) error {
	if err := v.deleteKeys(ctx, p); err != nil {
		return err
	}
	tags.addKeys(p.keys)
	return v.flushTables(ctx, p)
}

// flushTables flushes the tables p truncated.
func (v *Invalidator) flushTables(ctx context.Context, p plan) error {
	for _, sp := range p.flush {
		if err := v.flushTable(ctx, sp); err != nil {
			return err
		}
	}
	return nil
}

// deleteKeys deletes p's keys in pipelines of at most deleteBatch rows, up to
// deletesInFlight of them at once, each bounded by RedisTimeout and retried on its own.
// It returns once every pipeline has succeeded, or one has failed (after its retries)
// and the others have stopped: nil means every key is deleted.
func (v *Invalidator) deleteKeys(ctx context.Context, p plan) error {
	if len(p.keys) <= deleteBatch {
		return v.deleteBatch(ctx, p, 0, len(p.keys))
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(deletesInFlight)
	for lo := 0; lo < len(p.keys); lo += deleteBatch {
		hi := min(lo+deleteBatch, len(p.keys))
		g.Go(func() error { return v.deleteBatch(gctx, p, lo, hi) })
	}
	if testhooks.DeletesUnwaited(ctx) {
		return nil // the control of TestDeletesBeforeAck: the pipelines in flight go on alone
	}
	return g.Wait()
}

// deleteBatch deletes p.keys[lo:hi], retrying.
func (v *Invalidator) deleteBatch(ctx context.Context, p plan, lo, hi int) error {
	if lo == hi {
		return nil
	}
	batch := p.keys[lo:hi]
	if err := v.retry(ctx, func(ctx context.Context) error { return v.store.Invalidate(ctx, batch...) }); err != nil {
		return err
	}
	v.deleted(p, lo, hi)
	return nil
}

// deleted counts p.keys[lo:hi] as deleted.
func (v *Invalidator) deleted(p plan, lo, hi int) {
	lookups := p.lookupKeys(lo, hi)
	v.keysDeleted.Add(uint64(hi - lo - lookups))
	v.lookupKeysDeleted.Add(uint64(lookups))
}

// flushTable invalidates every cached row of sp's table, under every version. It walks
// the table's index, not the keyspace: the index lists every row of every version leased
// or cached before the commit, fills under way included (see store.FlushTable).
func (v *Invalidator) flushTable(ctx context.Context, sp keys.Space) error {
	err := v.retry(ctx, func(ctx context.Context) error {
		_, err := v.store.FlushTable(ctx, sp)
		return err
	})
	if err != nil {
		return err
	}
	v.tablesFlushed.Add(1)
	return v.purge(ctx, []string{sp.TableTag()})
}

// ErrWrongPrefix: the invalidator's registry is missing while another prefix's lists a
// table whose rows changed: applications cache it under that prefix, and the
// invalidator's Prefix is not theirs. HandleBatch returns it without confirming
// anything (the stream retries), so nothing is lost once the prefix is put right.
var ErrWrongPrefix = errors.New("invalidator: no application caches under this prefix")

// registriesTTL is how long the list of other prefixes' registries is reused.
const registriesTTL = 10 * time.Second

// registryMissing handles txs when the registry is missing. It refuses them when
// applications cache a changed table under another prefix (ErrWrongPrefix). Otherwise
// it flushes the changed tables: rows cached under versions the lost registry listed
// can only be found that way, and with nothing cached the flush finds nothing.
func (v *Invalidator) registryMissing(ctx context.Context, txs []*cdc.Tx) error {
	var tables []string
	for _, tx := range txs {
		for _, ch := range tx.Changes {
			if t := keys.QualifiedTable(ch.Relation.Schema, ch.Relation.Name); !slices.Contains(tables, t) {
				tables = append(tables, t)
			}
		}
	}
	others, err := v.otherRegistries(ctx)
	if err != nil {
		return err
	}
	for _, table := range tables {
		for prefix, listed := range others {
			if prefix != v.prefix && slices.Contains(listed, table) {
				v.registryMissingCount.Add(1)
				return fmt.Errorf("%w: registry %s is missing, but applications cache table %s under prefix %q (registry %s): set this worker's prefix to the applications' readthrough.Options.Prefix; changes are not confirmed until then",
					ErrWrongPrefix, keys.Prefix(v.prefix).Registry(), table, prefix, keys.Prefix(prefix).Registry())
			}
		}
	}
	v.registryMissingCount.Add(1)
	v.missingWarn.Do(func() {
		v.log.Error("the version registry is missing: no application has cached a row under this prefix yet, or the registry was lost; invalidating changed tables whole. If applications run, check that the prefix equals their readthrough.Options.Prefix",
			slog.String("registry", keys.Prefix(v.prefix).Registry()), slog.Any("tables", tables))
	})
	for _, table := range tables {
		sp, err := keys.NewSpace(v.prefix, table, "any") // every version shares the index
		if err != nil {
			return err
		}
		if err := v.flushTable(ctx, sp); err != nil {
			return err
		}
	}
	return nil
}

// otherRegistries returns every prefix's registry, read at most every registriesTTL.
func (v *Invalidator) otherRegistries(ctx context.Context) (map[string][]string, error) {
	v.mu.Lock()
	if time.Since(v.registriesAt) < registriesTTL {
		r := v.registries
		v.mu.Unlock()
		return r, nil
	}
	v.mu.Unlock()
	var r map[string][]string
	err := v.retry(ctx, func(ctx context.Context) (err error) {
		r, err = v.store.Registries(ctx)
		return err
	})
	if err != nil {
		return nil, err
	}
	v.mu.Lock()
	v.registries, v.registriesAt = r, time.Now()
	v.mu.Unlock()
	return r, nil
}

// added returns the versions (or lookups) listed in now and not in before.
func added[T comparable](now, before map[string][]T) map[string][]T {
	var out map[string][]T
	for table, vs := range now {
		for _, ver := range vs {
			if !slices.Contains(before[table], ver) {
				if out == nil {
					out = make(map[string][]T)
				}
				out[table] = append(out[table], ver)
			}
		}
	}
	return out
}

// union returns the versions (or lookups) listed in a or b, in a new map.
func union[T any](a, b map[string][]T) map[string][]T {
	out := make(map[string][]T, len(a)+len(b))
	for table, vs := range a {
		out[table] = slices.Clone(vs)
	}
	for table, vs := range b {
		out[table] = append(out[table], vs...)
	}
	return out
}

func (v *Invalidator) space(table, version string) keys.Space {
	v.mu.Lock()
	defer v.mu.Unlock()
	k := [2]string{table, version}
	sp, ok := v.spaces[k]
	if !ok {
		// The registry holds only what applications built with NewSpace, and the
		// prefix was checked in New; an error here leaves the zero Space, whose keys are
		// empty and match nothing.
		sp, _ = keys.NewSpace(v.prefix, table, version)
		v.spaces[k] = sp
	}
	return sp
}

// retry runs f until it succeeds, ctx ends or RetryFor passes, waiting between attempts
// from 10ms doubling up to 1s, each wait drawn from [d/2, d] so that workers that failed
// together do not retry together.
func (v *Invalidator) retry(ctx context.Context, f func(context.Context) error) error {
	waits := retry.Backoff(10*time.Millisecond, time.Second)
	_, err := backoff.Retry(ctx, func() (struct{}, error) {
		err := f(ctx)
		if err != nil {
			v.errors.Add(1)
		}
		return struct{}{}, err
	},
		backoff.WithBackOff(waits),
		backoff.WithMaxElapsedTime(v.retryFor),
		backoff.WithNotify(func(err error, wait time.Duration) {
			v.log.Warn("redis failed; retrying", slog.Any("error", err), slog.Duration("in", wait))
		}))
	return err
}

// kindOf returns the Kind of col's values: that of its base type for a domain (which
// Postgres names in the relation message, while it prints values as the base type
// does, and the application side reads the base type from the catalog). An enum's is
// Text.
func kindOf(col cdc.Column) keys.Kind {
	if col.BaseTypeOID != 0 {
		return keys.KindOf(col.BaseTypeOID)
	}
	return keys.KindOf(col.TypeOID)
}
