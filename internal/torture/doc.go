// Package torture runs the coherence torture test: cache processes reading and writing
// under every write policy (invalidate, write-through, write-back, and raw SQL followed
// by Invalidate), a raw-SQL writer, the invalidation worker (which also flushes the
// write-back journal) killed with SIGKILL and restarted, Redis restarted, and a checker
// of every read and of the cache and Postgres at quiescence. It has only tests;
// PGCACHE_TORTURE_DURATION sets how long the chaos lasts (default 8s).
package torture
