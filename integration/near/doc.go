// Package near holds the tests of the near cache (readthrough.ModelOptions.Near, the
// in-process tier kept coherent by Redis' client-side caching) against real Postgres
// and Redis: two caches standing in for two processes, every kind of Redis change,
// the fill race with its control, and the faults of the tracking connection. It has
// only tests.
package near
