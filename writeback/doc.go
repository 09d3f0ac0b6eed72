// Package writeback is pgcache's write-back: the journal that a write-back Create,
// Save or Delete writes to (in Redis), and the Flusher that applies the journal to
// Postgres. A model is written back when its readthrough.ModelOptions.WritePolicy is
// writepolicy.WriteBack; its repository journals each write through a Journal (one
// per model, made by readthrough.Register), and a Flusher, made with NewFlusher and
// run in the application, in the worker (pgcache-worker -writeback) or both, applies
// it. The Flusher needs a *gorm.DB (it writes to Postgres through it) and a Redis
// client. Change is the journal's form of a write, written by the repository and
// read by the flusher.
//
// # Writes
//
// Save returns once the write is in Redis; a Flusher applies it to Postgres later. A
// write is one Lua script on Redis:
//
//   - XADD to the journal <prefix>:journal (a stream) an entry with the row's key and
//     the change (the whole row's columns, or the key of a deleted row); the entry's id
//     is the write's version;
//   - set the row's pending record <prefix>{row}:p (a hash in the row's hash slot) to
//     that version and the row's cache entry (a tombstone for a delete);
//   - set the row's value key to the entry, and delete its fence key, so that fills
//     that began before the write are refused.
//
// Being one script, a write is all there or not there: a Redis crash or a dropped
// connection never leaves a pending record without its journal entry or the reverse,
// and Save returns an error, having acknowledged nothing, when Redis is down.
//
// Reads see pending writes: a read that finds no value key takes a lease with a
// script that first looks for a pending record and returns its entry as if cached. So
// when the invalidator deletes the value key (it sees the flusher's commit, or another
// writer's), readers get the pending write, never the older row from Postgres. The
// invalidator deletes only value and fence keys, and invalidation patterns never
// match pending records.
//
// Versions are journal ids rather than a counter in the pending record: ids only
// grow, even after a pending record is deleted, so an old journal entry replayed after a
// crash never passes for a newer write of the row.
//
// A row has one value key and one pending record whatever the model's schema version
// (the key holds "_wb" where other models' keys hold their version), and each entry
// starts with the version that wrote it. So during a rolling deploy a reader of one
// build sees the other build's pending write: it cannot decode it, so it waits for a
// flusher to apply it and then reads Postgres, or fails with
// readthrough.ErrOtherVersionPending after its WaitTimeout; it never returns the older
// row. The lease script, given the reader's version, answers with the pending record
// whatever its version, and refills a value key another version wrote.
//
// A Delete of a model with gorm.DeletedAt is a soft delete: the change (op
// "softdelete") sets the column where it is NULL, as GORM's Delete does, one UPDATE
// per row. Its journal script builds the entry from the row's pending write, if any,
// and copies that write's change into the journal entry (field b): the soft delete
// supersedes the write when the flusher coalesces the row's writes, so the flusher
// applies the write first and then the soft delete. A pending delete makes it a no-op;
// a pending write of another schema version makes it fail (nothing is written).
//
// # Redis Cluster
//
// The journal is 16 streams, "<prefix>:journal{0..15}"; a row's writes go to the shard
// of its hash slot. On a single Redis (or Sentinel) a write is one script. On a Cluster
// the shard and the row are in different slots, so a write is two steps: the journal
// entry, then its landing, a script in the row's slot that makes it the row's pending
// record and sets the row's landing mark. A flusher applies an entry only once the
// row's pending record holds it; one not landed yet it holds, and after
// FlusherOptions.LandingTimeout it fences it, so that the landing is refused (Save
// fails with ErrLate, nothing written). A Ring client is refused: its nodes know
// nothing of each other. Keep write-back keys from eviction:
// pending records and the journal have no TTL, so maxmemory-policy noeviction or a
// volatile-* policy keeps them. Write-back models need their primary key set before
// Save (no serial ids: the row reaches Postgres later); Create is an upsert, like
// Save, and GORM hooks do not run. Fields with autoCreateTime and autoUpdateTime are
// set as GORM sets them; on a row that exists the upsert keeps Postgres' creation time.
// Writes inside a transaction are refused, and reads inside one go to Postgres, so
// they do not see pending writes. The cached value of a pending write is the struct
// the caller saved; once flushed and reloaded it is Postgres' rendering of the row
// (timestamps to the microsecond, defaults and triggers applied).
//
// # What "durable" means
//
// Save returns once Redis has executed the write. Whether the write then survives a
// crash of Redis depends on how Redis persists:
//
//   - no persistence (or RDB snapshots only): a Redis restart loses every write not
//     yet flushed (and the snapshot interval's worth with RDB);
//   - appendonly yes, appendfsync everysec (the usual setting): a crash of Redis or
//     its machine loses up to about a second of acknowledged writes; a crash of the
//     Redis process alone, with the machine up, loses nothing;
//   - appendonly yes, appendfsync always: every write is fsynced before Redis
//     replies, so every acknowledged write survives;
//   - WriteOptions.WaitAOF (readthrough.ModelOptions.WriteBack; Redis 7.2 and
//     later): Save waits for WAITAOF, sent on the connection that made the write, so
//     an acknowledged write is fsynced locally (and on WaitAOFReplicas replicas) even
//     with everysec, at the price of waiting for the next fsync, up to a second. On
//     older servers it is skipped with a warning.
//
// A crash of an application process never loses an acknowledged write: it is in Redis
// before Save returns. A Save that returns an error may or may not have happened, as
// with any remote call whose reply is lost.
//
// # The Flusher
//
// Flushers read the journal through a consumer group, so several can run (in the
// application, in the worker, or both). Each batch (BatchSize entries, or what came in
// FlushInterval) is applied in one transaction, which first takes the rows' advisory
// locks and then, holding them, reads the rows' pending records: the batch is
// coalesced to the latest write per row; rows whose pending record no longer holds
// that write's version are skipped (a newer write is journaled later, or the write was
// applied before a crash); the rest are upserted (INSERT ... ON CONFLICT (key) DO
// UPDATE) or deleted, and the transaction commits. Then the pending records that still
// hold the applied versions are deleted, and the entries acknowledged (on a single
// Redis in one round trip, by scripts of at most 100 rows each, so that Redis serves
// the application's reads between them). While a batch is applied the flusher reads the next one, whose
// transaction runs while the first batch's pending records are deleted and its entries
// acknowledged (a pending record is deleted only while it holds the applied version, so
// the next batch finds a later write of the row pending either way); after a failed
// batch it reads both again. A crash between
// any two steps leaves the entries pending; they are claimed (XAUTOCLAIM) by another
// flusher after ClaimAfter, and replaying them applies each row's latest write again
// or skips it: Postgres holds every acknowledged write, latest per row, once in effect.
//
// Failures are retried with capped, jittered backoff. A batch that fails because of a
// row's data (SQLSTATE classes 22 and 23, such as a CHECK or foreign-key violation, and
// errors raised by triggers) is applied row by row, so the other rows proceed; a row
// that fails MaxAttempts times goes to the dead-letter stream <prefix>:deadletter with
// the error, and its pending record and cached value are deleted (if no newer write of
// the row is pending), so readers see Postgres' row again rather than a write that
// will never be applied. Every other failure (Postgres or Redis down, deadlocks,
// missing tables, columns or privileges) is retried without limit and logged: the
// journal grows and the writes stay visible to readers until it is fixed.
//
// When Run's context ends, the flusher applies what it holds and returns; a wait for
// new entries lasts at most a quarter of a second. On a Redis Cluster, where one read
// cannot wait on the shards' streams, an idle flusher polls them, less often the longer
// nothing comes, up to every FlushInterval.
package writeback
