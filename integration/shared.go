package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"
)

// Shared starts one Postgres and one Redis on first use and hands them to every test of
// a package. They are reached at their containers' own addresses where those answer
// (PostgresOptions.Direct), not through Docker's userland port proxy, which would add
// its own round trip and CPU to every command and to every benchmark of the package;
// no test stops or restarts them (those start servers of their own). Declare one in
// the test package and close it in TestMain:
//
//	var servers integration.Shared
//
//	func TestMain(m *testing.M) { os.Exit(servers.Run(m)) }
//
// The zero value is ready to use. It is safe for concurrent use.
type Shared struct {
	mu    sync.Mutex
	pg    *Postgres
	pgErr error
	rd    *Redis
	rdErr error
	cl    *RedisCluster
	clErr error
}

// Postgres returns the package's Postgres, starting it on first use: the server named by
// PGCACHE_TEST_POSTGRES_URL, or a container. A failure to start is reported to every
// test that asks, and Docker missing skips them (fails them in CI).
func (s *Shared) Postgres(tb testing.TB) *Postgres {
	tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pg == nil && s.pgErr == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if url := os.Getenv(EnvPostgresURL); url != "" {
			s.pg, s.pgErr = ExistingPostgres(ctx, url)
		} else {
			requireDocker(tb)
			s.pg, s.pgErr = StartPostgres(ctx, PostgresOptions{Direct: true})
		}
	}
	if s.pgErr != nil {
		tb.Fatal(s.pgErr)
	}
	return s.pg
}

// Redis returns the package's Redis, starting it on first use: the server named by
// PGCACHE_TEST_REDIS_ADDR, or a container.
func (s *Shared) Redis(tb testing.TB) *Redis {
	tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rd == nil && s.rdErr == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if addr := os.Getenv(EnvRedisAddr); addr != "" {
			s.rd, s.rdErr = ExistingRedis(ctx, addr)
		} else {
			requireDocker(tb)
			s.rd, s.rdErr = StartRedis(ctx, RedisOptions{Direct: true})
		}
	}
	if s.rdErr != nil {
		tb.Fatal(s.rdErr)
	}
	return s.rd
}

// Cluster returns the package's three-master Redis Cluster, starting it on first use.
// Tests share it: each keeps to a key prefix of its own (ClusterPrefix).
func (s *Shared) Cluster(tb testing.TB) *RedisCluster {
	tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cl == nil && s.clErr == nil {
		if os.Getenv(EnvRedisAddr) != "" {
			tb.Skipf("integration: this test needs a Redis Cluster container; %s names an existing server", EnvRedisAddr)
		}
		requireDocker(tb)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		s.cl, s.clErr = StartRedisCluster(ctx, RedisOptions{})
	}
	if s.clErr != nil {
		tb.Fatal(s.clErr)
	}
	return s.cl
}

// Close terminates the containers that were started.
func (s *Shared) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var errs []error
	if s.pg != nil {
		errs = append(errs, s.pg.Close(ctx))
	}
	if s.rd != nil {
		errs = append(errs, s.rd.Close(ctx))
	}
	if s.cl != nil {
		errs = append(errs, s.cl.Close(ctx))
	}
	s.pg, s.rd, s.cl = nil, nil, nil
	return errors.Join(errs...)
}

// Run runs the package's tests and then closes the servers, reporting a failure to close
// them on stderr. Use it as TestMain's body: os.Exit(servers.Run(m)).
func (s *Shared) Run(m *testing.M) int {
	code := m.Run()
	if err := s.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	return code
}

// Eventually polls cond every 10ms until it holds, and fails the test naming what it
// waited for if it does not within 20s.
func Eventually(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
