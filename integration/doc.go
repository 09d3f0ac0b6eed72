// Package integration starts the real servers that pgcache's tests need, Postgres with
// logical replication and Redis, and hands out isolated pieces of them: a fresh database
// per test and a distinct Redis key prefix per test. Users may call it from their own
// tests in the same way.
//
// # Where the servers come from
//
// By default each server runs in a container started with testcontainers-go, from the
// official images (postgres:17, redis:7.4). PGCACHE_POSTGRES_IMAGE and
// PGCACHE_REDIS_IMAGE select other images; scripts/build-images.sh builds equivalent ones
// from Debian packages for machines that cannot reach a registry.
//
// When PGCACHE_TEST_POSTGRES_URL (a superuser connection string of a server with
// wal_level=logical) and PGCACHE_TEST_REDIS_ADDR (host:port) are set, those servers are
// used instead and no container is started; tests that stop or pause a server need a
// container of their own and are skipped, naming the reason.
//
// # Docker missing
//
// Without a reachable Docker engine the tests that need a container are skipped with the
// reason, except when CI=true, where they fail: a CI run must not pass by skipping.
//
// # Sharing
//
// Starting a server takes seconds, so the tests of a package share one of each through
// a [Shared] value declared in the test package and closed in TestMain. Tests that
// inject faults start their own with [NewPostgres] and [NewRedis].
//
// # Varnish
//
// [NewVarnish] starts Varnish (with vmod xkey) running deploy/varnish/pgcache.vcl in
// Docker's host network, in front of a backend in the test process;
// PGCACHE_VARNISH_IMAGE selects the image (default varnish:7.7).
package integration
