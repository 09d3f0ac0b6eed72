// Package readthrough is pgcache's cached repository of a GORM model: reads by primary
// key served from Redis and filled from Postgres under a lease (Get, GetMany), and
// writes (Create, Save, Delete) that keep the cache coherent under the model's write
// policy (package writepolicy). It needs a *gorm.DB on Postgres and a go-redis client.
//
// # Reads
//
// A miss takes a lease on the row before it reads Postgres and stores the row only if
// the lease survived, so a fill that overlapped a write is refused. Concurrent misses
// share one load per process and one across processes. Redis failures fall back to
// Postgres and are counted, not returned.
//
// # Lookups
//
// A model may register lookups by unique columns (ModelOptions.Unique, read with
// By) and has-many lists (ModelOptions.Lists, read with ListBy). Their entries hold
// primary keys only; the rows come through the primary-key path and are checked
// against the values asked for, so an entry a row has left is found stale, deleted
// and filled again, never returned. Fills are fenced as rows' are; writes through the
// library delete the entries the written row's values name (see lookup.go).
//
// # What is cached
//
// A row is cached as its column record: for each column GORM maps (schema.DBNames,
// embedded structs included, json tags ignored) the field's value as the database
// stores it (through its driver.Valuer, if any), encoded by the model's Codec. A hit
// sets the fields back through GORM's own setters, as a load does, so Scanner types,
// serializers, pointers and NULLs come back as an uncached First returns them, and a
// read-modify-write Save writes back what the row held. A row whose record would not
// come back as it is (a uint64 past 1<<63-1, a Valuer its Scan cannot read back) is
// served from Postgres uncached and counted in Stats.Uncacheable; GORM's AfterFind
// hooks run on loads only, so their effects are cached with the row.
//
// # Writes
//
// Writes go to Postgres and, after the commit, invalidate the row's entry (the
// default) or fill it again from Postgres under a lease (write-through); or they go to
// Redis only, journaled and pending, for a writeback.Flusher to apply (write-back;
// writeback.NewFlusher makes one). After a write returns, readers in every process
// see it.
//
// # Soft deletes
//
// A model with a gorm.DeletedAt field is cached as Postgres holds it, soft-deleted rows
// included, and read in the scope of the repository's *gorm.DB: the default scope
// finds no soft-deleted row, WithDB(db.Unscoped()) finds it with its deleted_at, both
// from the same entry. Delete soft-deletes under every write policy (see Delete).
//
// # Transactions
//
// Reads inside a transaction go to Postgres and are never cached. The cache effects of
// writes inside a transaction wait for its commit and are dropped on rollback: run it
// with Transaction and bind repositories to it with In, or wrap a transaction you
// manage with WrapTx and call AfterCommit after committing it.
//
// # Metrics and traces
//
// Stats (per repository) and Cache.ModelStats (per model) are counters kept anyway,
// for exporters to read when scraped. An Observer in Options.Observer is told how long
// each read took and how it was answered, and of each miss, fill and write, for
// latency histograms and spans; without one a hit does no extra work. Packages
// extra/pgcacheprom and extra/pgcacheotel, in module github.com/pgcache/pgcache/extra,
// export both to Prometheus and OpenTelemetry (see observe.go).
package readthrough
