package readthrough

import (
	"context"
	"fmt"
	"time"

	"github.com/pgcache/pgcache/keys"
	"github.com/pgcache/pgcache/writepolicy"
)

// Metrics and traces.
//
// Counters are kept by the repositories whatever happens (Stats, ModelStats); an
// exporter reads them when it is scraped, so counting costs nothing extra. What
// counters cannot give, the time a read took and the spans of misses, fills and
// writes, goes to an Observer set in Options. Without one (the default) the hit path
// does one nil check more: no clock read, no allocation. Packages
// github.com/pgcache/pgcache/extra/pgcacheprom and extra/pgcacheotel provide
// Observers for Prometheus and OpenTelemetry, in a module of their own so that the
// library does not depend on either.

// Observer is told how reads went and when misses, fills and writes begin and end.
// Set it in Options.Observer; several are combined with Observers. Its methods are
// called from the goroutines that read and write, so it must be safe for concurrent
// use, and they should return quickly: ObserveRead is on the hit path.
type Observer interface {
	// ObserveRead is told of each Get and GetMany of a repository outside a
	// transaction, once it returns: the model's name (its Go type's, as in logs), how
	// it was answered and how long it took. A GetMany reports one read: OutcomeError
	// when Redis failed, else OutcomeMiss when any id missed, else OutcomeNearHit when
	// the near cache answered every id, else OutcomeHit. Lookups (By, ListBy) are
	// reported through the row reads they make.
	ObserveRead(ctx context.Context, model string, outcome Outcome, d time.Duration)
	// StartOp is told that op begins for model, and returns the context the op runs
	// in (a tracer puts its span there, so that spans of the database queries it
	// makes, and the fill of a miss, are its children) and a function the op calls
	// once, when it ends, with its outcome and its error (nil unless the op failed).
	StartOp(ctx context.Context, op Op, model string) (context.Context, func(Outcome, error))
}

// Op names what StartOp is told of.
type Op uint8

const (
	// OpMiss is a read by primary key (Get, GetMany) that found nothing usable in
	// Redis, from then until it has its row: ends with OutcomeFound, OutcomeNotFound
	// or OutcomeError. Concurrent misses of one key in a process share one fill,
	// which is a child of the miss that started it. A GetMany's misses are one OpMiss
	// (OutcomeFound when any of them has a row). Lookups report their fills only.
	OpMiss Op = iota + 1
	// OpFill is a fill under a lease: the database load and the store of the entry,
	// for a miss or a write-through write. A GetMany fills its misses in one OpFill.
	// Ends with OutcomeStored, OutcomeRefused (a write invalidated the row during the
	// load), OutcomeUncached (not cached: negative caching off, or a row the codec
	// cannot hold) or OutcomeError.
	OpFill
	// OpCreate, OpSave and OpDelete are writes through the repository (Create, Save,
	// Delete), their cache effects included: end with OutcomeOK or OutcomeError.
	OpCreate
	OpSave
	OpDelete
)

var opNames = [...]string{"", "miss", "fill", "create", "save", "delete"}

// String returns the op's name: "miss", "fill", "create", "save" or "delete".
func (o Op) String() string {
	if int(o) < len(opNames) && o != 0 {
		return opNames[o]
	}
	return "unknown"
}

// Write reports whether o is a write (OpCreate, OpSave, OpDelete).
func (o Op) Write() bool { return o >= OpCreate && o <= OpDelete }

// Outcome says how a read or an op went. Its String is the label or attribute
// exporters use, a short snake_case word.
type Outcome uint8

const (
	// Reads (ObserveRead).
	OutcomeHit         Outcome = iota + 1 // answered from Redis with a row
	OutcomeNegativeHit                    // answered from Redis with "no such row" (a soft-deleted row in the default scope included)
	OutcomeNearHit                        // answered from the near cache, in process
	OutcomeMiss                           // nothing usable cached: read through a miss (OpMiss)
	OutcomeError                          // Redis failed (the read went to Postgres, or failed for a write-back model); for ops: the op failed

	// Misses (OpMiss).
	OutcomeFound    // the row exists (in the reader's scope)
	OutcomeNotFound // it does not

	// Fills (OpFill).
	OutcomeStored   // the entry was stored
	OutcomeRefused  // the store was refused: the row was written during the load
	OutcomeUncached // loaded and not cached

	// Writes (OpCreate, OpSave, OpDelete).
	OutcomeOK // the write committed (or was journaled, under write-back)
)

var outcomeNames = [...]string{"", "hit", "negative_hit", "near_hit", "miss", "error", "found", "not_found", "stored", "refused", "uncached", "ok"}

// String returns the outcome's name: "hit", "negative_hit", "near_hit", "miss",
// "error", "found", "not_found", "stored", "refused", "uncached" or "ok".
func (o Outcome) String() string {
	if int(o) < len(outcomeNames) && o != 0 {
		return outcomeNames[o]
	}
	return "unknown"
}

// Observers returns an Observer telling each of obs, in order (nil ones left out):
// for example Prometheus histograms and OpenTelemetry spans at once. It returns nil
// when none is left, which turns observing off.
func Observers(obs ...Observer) Observer {
	var m multiObserver
	for _, o := range obs {
		if o != nil {
			m = append(m, o)
		}
	}
	switch len(m) {
	case 0:
		return nil
	case 1:
		return m[0]
	}
	return m
}

type multiObserver []Observer

func (m multiObserver) ObserveRead(ctx context.Context, model string, outcome Outcome, d time.Duration) {
	for _, o := range m {
		o.ObserveRead(ctx, model, outcome, d)
	}
}

func (m multiObserver) StartOp(ctx context.Context, op Op, model string) (context.Context, func(Outcome, error)) {
	ends := make([]func(Outcome, error), len(m))
	for i, o := range m {
		ctx, ends[i] = o.StartOp(ctx, op, model)
	}
	return ctx, func(outcome Outcome, err error) {
		// The last started ends first, as nested spans do.
		for i := len(ends) - 1; i >= 0; i-- {
			ends[i](outcome, err)
		}
	}
}

// noEnd is the end of an op nobody observes.
func noEnd(Outcome, error) {}

// readStart returns the time a read begins, or the zero time when no one observes
// reads: the hit path reads no clock then.
func (r *Repository[T]) readStart() time.Time {
	if r.cache.opts.Observer == nil {
		return time.Time{}
	}
	return time.Now()
}

// observeRead tells the observer, if any, how a read begun at start went.
func (r *Repository[T]) observeRead(ctx context.Context, start time.Time, outcome Outcome) {
	if o := r.cache.opts.Observer; o != nil {
		o.ObserveRead(ctx, r.model.schema.Name, outcome, time.Since(start))
	}
}

// startOp tells the observer, if any, that op begins (see Observer.StartOp).
func (r *Repository[T]) startOp(ctx context.Context, op Op) (context.Context, func(Outcome, error)) {
	if o := r.cache.opts.Observer; o != nil {
		return o.StartOp(ctx, op, r.model.schema.Name)
	}
	return ctx, noEnd
}

// hitOutcome is the outcome of a read answered from Redis.
func hitOutcome(ok bool) Outcome {
	if ok {
		return OutcomeHit
	}
	return OutcomeNegativeHit
}

// missOutcome is the outcome of a miss that returned ok and err.
func missOutcome(ok bool, err error) Outcome {
	switch {
	case err != nil:
		return OutcomeError
	case ok:
		return OutcomeFound
	}
	return OutcomeNotFound
}

// writeOutcome is the outcome of a write that returned err.
func writeOutcome(err error) Outcome {
	if err != nil {
		return OutcomeError
	}
	return OutcomeOK
}

// observed returns the Op of a write.
func (o op) observed() Op {
	switch o {
	case opCreate:
		return OpCreate
	case opSave:
		return OpSave
	}
	return OpDelete
}

// ModelStats returns the statistics of each registered model, by model name (its Go
// type's, as Observer and the logs name it); models of one name from different
// packages are added up. Exporters read it when scraped: per-model counters with no
// counting of their own. The near tier's Cache-wide counters (NearInvalidations,
// NearFlushes) are in Stats only.
func (c *Cache) ModelStats() map[string]Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]Stats, len(c.models))
	for _, m := range c.models {
		name := m.(observed).modelName()
		out[name] = out[name].add(m.Stats())
	}
	return out
}

// WriteBackBacklog returns the number of entries in the write-back journal that the
// Cache's write-back models write to (one journal per key prefix, shared by those
// models): writes not yet applied to Postgres, plus applied ones kept behind an
// older unacknowledged entry, as writeback.Flusher.Backlog counts them. It is one
// Redis call (XLEN), bounded by ctx and RedisTimeout. ok is false, and nothing is
// asked of Redis, when no write-back model is registered. The journal is not split
// by model: counting one model's entries would mean reading the whole journal.
func (c *Cache) WriteBackBacklog(ctx context.Context) (n int64, ok bool, err error) {
	c.mu.Lock()
	for _, m := range c.models {
		ok = ok || m.(observed).writeBack()
	}
	c.mu.Unlock()
	if !ok {
		return 0, false, nil
	}
	streams, err := c.store.JournalStreams(ctx, keys.Prefix(c.opts.Prefix))
	if err == nil {
		n, err = c.store.JournalLen(ctx, streams...)
	}
	if err != nil {
		return 0, true, fmt.Errorf("readthrough: write-back backlog: %w", err)
	}
	return n, true, nil
}

// observed is what ModelStats and WriteBackBacklog ask of a registered repository.
type observed interface {
	modelName() string
	writeBack() bool
}

func (r *Repository[T]) modelName() string { return r.model.schema.Name }

func (r *Repository[T]) writeBack() bool { return r.opts.WritePolicy == writepolicy.WriteBack }

// outcome is the outcome of a GetMany whose ids were all answered from the cache:
// OutcomeNearHit when the near tier answered every one.
func (nf *nearFetch) outcome() Outcome {
	if nf == nil {
		return OutcomeHit
	}
	for _, hit := range nf.hits {
		if !hit {
			return OutcomeHit
		}
	}
	return OutcomeNearHit
}

// fillManyOutcome is the outcome of a GetMany's fill: OutcomeRefused when any store
// was refused, OutcomeStored when any was stored, else OutcomeUncached.
func fillManyOutcome(stored []bool, err error) Outcome {
	if err != nil {
		return OutcomeError
	}
	outcome := OutcomeUncached
	for _, ok := range stored {
		if !ok {
			return OutcomeRefused
		}
		outcome = OutcomeStored
	}
	return outcome
}

// missManyOutcome is the outcome of a GetMany's misses: OutcomeFound when any of
// them has a row.
func missManyOutcome[T any](rows []*T, missing []int, err error) Outcome {
	for _, i := range missing {
		if rows[i] != nil {
			return missOutcome(true, err)
		}
	}
	return missOutcome(false, err)
}
