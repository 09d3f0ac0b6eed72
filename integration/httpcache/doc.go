// Package httpcache tests package httpcache against real Postgres and Redis, and a
// running invalidator worker: cache hits, Vary, conditional GET, the safety rules,
// poisoning attempts, stampedes across two caches, dependencies on rows, lookups, lists
// and tables invalidated by library writes and by raw SQL through the worker, the
// render/invalidate race with its control, and the worker's purges.
package httpcache
