// Package gormcache holds the tests of pgcache's GORM plugin (package gormcache) against
// real Postgres and Redis: each query form's answer compared with GORM's uncached
// answer, writes invalidating after their commit across processes, the fill-commit race,
// and a randomized workload with the plugin on and off. It has only tests.
package gormcache
