// Package torture runs the coherence torture test: cache processes reading and writing
// under every write policy (invalidate, write-through, write-back, and raw SQL followed
// by Invalidate), raw-SQL writers (one on a partitioned, REPLICA IDENTITY FULL table
// with an out-of-order composite char(6) key, TRUNCATEs of partitions included), the
// invalidation worker (which also flushes the write-back journal) killed with SIGKILL
// and restarted, Redis stopped or killed and restarted, Postgres killed with SIGKILL
// and started again (crash recovery), the write-back application killed and started
// again, soft deletes and revivals of a gorm.DeletedAt model, lookups by a unique code
// and by group (a has-many list) of rows whose codes a raw-SQL writer swaps and whose
// groups it moves, and a checker of every read and of the cache and Postgres at
// quiescence. The invalidate and write-through processes register their models (all but
// the write-back one, which refuses it) with a near cache (ModelOptions.Near), so their
// reads come from the in-process tier when it holds the row; the test reports their
// near hits and fails if they made none. Their reads are checked by the same rules:
// the near tier adds the notification delay (Redis' change to the near tier's drop,
// under a millisecond at p99 on loopback, a few milliseconds on a loaded machine:
// docs/BENCHMARKS.md), which the 3s margin covers hundreds of times over, and a Redis
// stop or SIGKILL resets the tracking connection, so the tier is emptied and bypassed
// within the downtime the checker already allows. It has only tests;
// PGCACHE_TORTURE_DURATION sets how long the chaos lasts with Postgres up (default
// 8s; Postgres outages are added, and it lasts until Postgres was killed once).
// PGCACHE_TORTURE_CONTROL=unchecked runs the lookups without their check on read
// (testhooks.Read.Unchecked) and expects the checker to find wrong answers.
package torture
