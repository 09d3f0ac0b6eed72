// Package writeback holds the tests of pgcache's writeback package that need real
// Postgres and Redis (started by the harness, package integration), kept in this module
// so that the library's own module does not require the harness' dependencies. It has
// only tests.
package writeback
