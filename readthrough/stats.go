package readthrough

import "sync/atomic"

// Stats counts what a repository did. Counters only grow.
type Stats struct {
	Hits          uint64 // reads answered from Redis with a row
	NegativeHits  uint64 // reads answered from Redis with "no such row" (a soft-deleted row, in the default scope, included)
	Misses        uint64 // reads that found nothing usable in Redis
	Loads         uint64 // database queries made on misses
	Fills         uint64 // entries stored after a load
	FillsRefused  uint64 // fills refused because the row was invalidated during the load
	StampedeWaits uint64 // reads that waited for another reader's fill
	DecodeErrors  uint64 // cached entries that could not be decoded (deleted, treated as misses)
	Uncacheable   uint64 // rows loaded from Postgres that the cache cannot hold exactly (their column record would not come back as it is): returned as loaded, not cached; logged at most once a minute
	RedisSkipped  uint64 // Redis reads skipped while the circuit breaker was open (Options.Breaker): served from Postgres, nothing filled
	Errors        uint64 // Redis failures: a read went to Postgres instead, or a committed write left its stale entry to the invalidator and the TTL, or a write-back write failed
	Invalidations uint64 // rows invalidated through the repository (by Invalidate or after a write)
	Writes        uint64 // writes through the repository that committed (in a transaction: counted at its commit; write-back: that Redis acknowledged)
	// Unique and List count the lookups by unique values (By) and by list (ListBy).
	// Their loads, fills and the row reads they make are also counted above.
	Unique, List LookupStats

	// The near cache (ModelOptions.Near).
	NearHits          uint64 // reads answered in process
	NearMisses        uint64 // reads of a near-cached model that went on to Redis (tracking down included)
	NearEvictions     uint64 // entries evicted by the model's near-cache bound
	NearInvalidations uint64 // keys Redis reported changed to this process (Cache.Stats only: the tier is shared)
	NearFlushes       uint64 // times the near tier was emptied: tracking lost, or FLUSHDB (Cache.Stats only)
}

// LookupStats counts the reads of one kind of lookup.
type LookupStats struct {
	Hits    uint64 // reads whose entry was cached (its rows may still be misses)
	Misses  uint64 // reads that found no entry and filled it (or read Postgres)
	Stale   uint64 // entries found stale by the check on read (a named row gone, hidden, or holding other values): deleted and filled again
	OverCap uint64 // lists longer than ModelOptions.ListCap, read from Postgres and not cached
}

func (s LookupStats) add(o LookupStats) LookupStats {
	return LookupStats{Hits: s.Hits + o.Hits, Misses: s.Misses + o.Misses, Stale: s.Stale + o.Stale, OverCap: s.OverCap + o.OverCap}
}

type lookupCounters struct{ hits, misses, stale, overCap atomic.Uint64 }

func (c *lookupCounters) snapshot() LookupStats {
	return LookupStats{Hits: c.hits.Load(), Misses: c.misses.Load(), Stale: c.stale.Load(), OverCap: c.overCap.Load()}
}

func (s Stats) add(o Stats) Stats {
	return Stats{
		Hits:          s.Hits + o.Hits,
		NegativeHits:  s.NegativeHits + o.NegativeHits,
		Misses:        s.Misses + o.Misses,
		Loads:         s.Loads + o.Loads,
		Fills:         s.Fills + o.Fills,
		FillsRefused:  s.FillsRefused + o.FillsRefused,
		StampedeWaits: s.StampedeWaits + o.StampedeWaits,
		DecodeErrors:  s.DecodeErrors + o.DecodeErrors,
		Uncacheable:   s.Uncacheable + o.Uncacheable,
		RedisSkipped:  s.RedisSkipped + o.RedisSkipped,
		Errors:        s.Errors + o.Errors,
		Invalidations: s.Invalidations + o.Invalidations,
		Writes:        s.Writes + o.Writes,
		Unique:        s.Unique.add(o.Unique),
		List:          s.List.add(o.List),

		NearHits:          s.NearHits + o.NearHits,
		NearMisses:        s.NearMisses + o.NearMisses,
		NearEvictions:     s.NearEvictions + o.NearEvictions,
		NearInvalidations: s.NearInvalidations + o.NearInvalidations,
		NearFlushes:       s.NearFlushes + o.NearFlushes,
	}
}

type counters struct {
	hits, negativeHits, misses, loads, fills, fillsRefused atomic.Uint64
	stampedeWaits, decodeErrors, errors, invalidations     atomic.Uint64
	writes, uncacheable, redisSkipped                      atomic.Uint64
	unique, list                                           lookupCounters
}

func (c *counters) snapshot() Stats {
	return Stats{
		Hits:          c.hits.Load(),
		NegativeHits:  c.negativeHits.Load(),
		Misses:        c.misses.Load(),
		Loads:         c.loads.Load(),
		Fills:         c.fills.Load(),
		FillsRefused:  c.fillsRefused.Load(),
		StampedeWaits: c.stampedeWaits.Load(),
		DecodeErrors:  c.decodeErrors.Load(),
		Uncacheable:   c.uncacheable.Load(),
		RedisSkipped:  c.redisSkipped.Load(),
		Errors:        c.errors.Load(),
		Invalidations: c.invalidations.Load(),
		Writes:        c.writes.Load(),
		Unique:        c.unique.snapshot(),
		List:          c.list.snapshot(),
	}
}
