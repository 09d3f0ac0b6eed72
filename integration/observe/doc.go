// Package observe holds the tests of pgcache's metrics and traces against real
// Postgres and Redis: the Prometheus collector and observer of package
// extra/pgcacheprom, the OpenTelemetry observer of extra/pgcacheotel, and the cost of
// a hit with and without them.
package observe
