// Package modelstats is what the Prometheus and OpenTelemetry exporters of module extra
// share: the per-model counters of readthrough.Stats they both export (one table, so
// that the two never disagree on what a counter means), the default latency buckets,
// and a per-model table read without locking on the hit path.
package modelstats

import (
	"maps"
	"sync"
	"sync/atomic"

	"github.com/pgcache/pgcache/readthrough"
)

// Counter is a per-model counter of readthrough.Stats. Its Name is in snake case,
// without namespace or unit: Prometheus exports it as pgcache_cache_<Name>_total,
// OpenTelemetry as pgcache.cache.<Name>.
type Counter struct {
	Name  string
	Help  string
	Value func(readthrough.Stats) uint64
}

// LookupCounter is a counter of readthrough.LookupStats, exported once for each kind
// of lookup (unique: By; list: ListBy) as pgcache_cache_lookup_<Name>_total and
// pgcache.cache.lookup.<Name>, labelled by kind.
type LookupCounter struct {
	Name  string
	Help  string
	Value func(readthrough.LookupStats) uint64
}

// Lookup kinds: the values of the lookup counters' kind label.
const (
	KindUnique = "unique" // By
	KindList   = "list"   // ListBy
)

// Kinds returns the lookup kinds in the order their counters are exported.
func Kinds() [2]string { return [2]string{KindUnique, KindList} }

// ValueOf returns the counter's value for the lookups of kind in s.
func (c LookupCounter) ValueOf(s readthrough.Stats, kind string) uint64 {
	if kind == KindList {
		return c.Value(s.List)
	}
	return c.Value(s.Unique)
}

// Counters returns the per-model counters, in the order they are exported.
func Counters() []Counter {
	return []Counter{
		{"hits", "Reads answered from Redis with a row.", func(s readthrough.Stats) uint64 { return s.Hits }},
		{"negative_hits", `Reads answered from Redis with "no such row" (soft-deleted rows in the default scope included).`,
			func(s readthrough.Stats) uint64 { return s.NegativeHits }},
		{"misses", "Reads that found nothing usable in Redis.", func(s readthrough.Stats) uint64 { return s.Misses }},
		{"loads", "Database queries made by misses and by reads that bypass the cache.", func(s readthrough.Stats) uint64 { return s.Loads }},
		{"fills", "Entries stored after a load.", func(s readthrough.Stats) uint64 { return s.Fills }},
		{"fills_refused", "Fills refused because the row was invalidated during the load.",
			func(s readthrough.Stats) uint64 { return s.FillsRefused }},
		{"stampede_waits", "Reads that waited for another reader's fill of the same row.",
			func(s readthrough.Stats) uint64 { return s.StampedeWaits }},
		{"decode_errors", "Cached entries that could not be decoded (deleted, read as misses).",
			func(s readthrough.Stats) uint64 { return s.DecodeErrors }},
		{"uncacheable", "Rows loaded that the cache cannot hold exactly (returned, not cached).",
			func(s readthrough.Stats) uint64 { return s.Uncacheable }},
		{"redis_errors", "Redis failures: reads that went to Postgres instead, committed writes whose entry was left to the invalidator, failed write-back writes.",
			func(s readthrough.Stats) uint64 { return s.Errors }},
		{"invalidations", "Rows invalidated through the repository (Invalidate, or after a write).",
			func(s readthrough.Stats) uint64 { return s.Invalidations }},
		{"writes", "Writes through the repository that committed (write-back: that Redis acknowledged).",
			func(s readthrough.Stats) uint64 { return s.Writes }},
		{"near_hits", "Reads answered by the near cache, in process.", func(s readthrough.Stats) uint64 { return s.NearHits }},
		{"near_misses", "Reads of a near-cached model that went on to Redis.", func(s readthrough.Stats) uint64 { return s.NearMisses }},
		{"near_evictions", "Near-cache entries evicted by the model's bound.", func(s readthrough.Stats) uint64 { return s.NearEvictions }},
	}
}

// LookupCounters returns the lookup counters, in the order they are exported.
func LookupCounters() []LookupCounter {
	return []LookupCounter{
		{"hits", "Lookups (kind unique: By; list: ListBy) whose entry was cached.", func(s readthrough.LookupStats) uint64 { return s.Hits }},
		{"misses", "Lookups that found no entry.", func(s readthrough.LookupStats) uint64 { return s.Misses }},
		{"stale", "Lookup entries found stale by the check on read, deleted and filled again.",
			func(s readthrough.LookupStats) uint64 { return s.Stale }},
		{"over_cap", "Lists longer than ListCap, read from Postgres and not cached.",
			func(s readthrough.LookupStats) uint64 { return s.OverCap }},
	}
}

// WriteBackPendingHelp describes the write-back journal's length, a gauge.
const WriteBackPendingHelp = "Entries in the write-back journal the cache's write-back models write to (shared by them): writes not yet applied to Postgres, and applied ones behind an unacknowledged one. Present only when the cache has write-back models."

// DefaultBuckets returns the latency histograms' default upper bounds, in seconds: 14
// from 10µs (a near-cache hit) to 1.5s, each 2.5 times the last.
func DefaultBuckets() []float64 {
	b := make([]float64, 14)
	for i, v := 0, 10e-6; i < len(b); i, v = i+1, v*2.5 {
		b[i] = v
	}
	return b
}

// PerModel is a table of T by model name, made on first use of a model by its make
// func and read afterwards without locking or allocating (copy on write: models are
// few and added once). The zero value is not ready; use NewPerModel.
type PerModel[T any] struct {
	make   func(model string) T
	models atomic.Pointer[map[string]T]
	mu     sync.Mutex // serializes adding a model
}

// NewPerModel returns an empty table whose entries make makes.
func NewPerModel[T any](make func(model string) T) *PerModel[T] {
	p := &PerModel[T]{make: make}
	p.models.Store(&map[string]T{})
	return p
}

// Get returns model's entry, made on first use.
func (p *PerModel[T]) Get(model string) T {
	if v, ok := (*p.models.Load())[model]; ok {
		return v
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	old := *p.models.Load()
	if v, ok := old[model]; ok {
		return v
	}
	v := p.make(model)
	models := maps.Clone(old)
	models[model] = v
	p.models.Store(&models)
	return v
}
