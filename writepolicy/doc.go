// Package writepolicy names the write policies of pgcache's repositories: what
// Create, Save and Delete do to the cache. A model's policy is set in
// readthrough.ModelOptions.WritePolicy and carried out by its repository. The
// package holds only the choice (Policy, its names, ParsePolicy); write-back's
// journal and its flusher are in package writeback.
//
// # Invalidate (the default)
//
// The write goes to Postgres; after the commit the row's value and fence keys are
// deleted, which also voids the leases of fills in progress, so no reader can store
// the row it loaded before the commit. The next read loads the row. When Redis fails
// at that point the write still succeeds (it committed): the error is counted and
// logged, and the stale entry is left to the invalidator (which sees the commit in
// Postgres' change stream) and to the entry's TTL.
//
// # Write-through
//
// The write goes to Postgres; after the commit the row's keys are deleted as above,
// and then the row is filled again the way a read fills it: take a lease, read the row
// from Postgres, store it if the lease survived. The value the caller passed is never
// stored. Two writers A and B of one row may commit v1 then v2 and run their
// after-commit steps in the other order; storing values would leave v1, the older,
// in the cache. There is no cheap version to guard such a store with: commit order is
// not transaction-id order, and the row may carry no version column. Reading the row
// after invalidating under a lease always stores what Postgres has at that moment, and
// a later commit's invalidation voids it: the cache ends with the last commit's value
// or nothing. Redis failures are handled as under Invalidate.
//
// # Write-back
//
// Save returns once the write is in Redis, journaled; a flusher applies it to
// Postgres later. Package writeback documents how a write is journaled, what
// "durable" means, and how the flusher applies writes.
package writepolicy
