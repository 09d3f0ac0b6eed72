// Package torture runs the coherence torture test: readers and writers in several cache
// instances, raw-SQL writers, the invalidation worker killed with SIGKILL and restarted,
// Redis restarted, and a checker of every read and of the cache at quiescence. It has
// only tests; PGCACHE_TORTURE_DURATION sets how long the chaos lasts (default 8s).
package torture
