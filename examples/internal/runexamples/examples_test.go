// Package runexamples_test runs every program under examples/ against real Postgres and
// Redis, as a user would run it, and checks that it exits 0 and prints what it
// demonstrates. The examples check their own behaviour and exit 1 when it did not
// happen, so this is an integration test of the library as much as of the examples.
package runexamples_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgcache/pgcache/integration"
)

var servers integration.Shared

func TestMain(m *testing.M) { os.Exit(servers.Run(m)) }

type example struct {
	name string   // its directory under examples/
	want []string // what its standard output must contain
}

// examples lists every program under examples/.
var examples = []example{
	// Only what does not depend on timing: the quickstart's reads fall back to Postgres
	// when Redis takes longer than 100ms, as a stampede of 200 readers on a loaded
	// machine can make it.
	{"quickstart", []string{
		"product 7 now costs 1",
		"negative hits: 1",
		"after the flush Postgres holds cart 1 with 3 items",
		"Summary",
	}},
	{"readthrough", []string{
		"user 1 read twice: misses 1, hits 1, database queries 1",
		"user 404 read twice: not found; negative hits 1, database queries 2",
		"expires in",
	}},
	{"writethrough", []string{
		"1. Save(150), then Get: 150, a cache hit",
		"2. Save(200) in a transaction: others read 150 until the commit, then 200, a cache hit",
		"3. Save(999) in a transaction that rolled back: cache and Postgres still 200",
		"4. Delete, then Get: no row",
	}},
	{"writeback", []string{
		"readers see 3 items; rows in Postgres: 0; backlog: 1",
		"2. flusher: backlog 0; Postgres has basket 1 with 3 items",
		"3. dead letter:",
		"check constraint",
	}},
	{"multiget", []string{
		"cold: 100 orders",
		"SQL queries 1)",
		"warm: 100 orders",
		"(hits 100, misses 0, SQL queries 0)",
	}},
	{"gorm-plugin", []string{
		"1. db.First(&u, 1) twice: misses 1, hits 1, database queries 1; user 404: record not found",
		"2. after process a's updates, process b reads Grace, 37",
		"3. after a rolled-back delete, process b reads Grace",
		"4. Pluck and Select went to Postgres: served 0, passed 2",
	}},
	{"nearcache", []string{
		"1. both processes answer product 1 in process",
		"2. process A saved price 120 and its next read returns 120",
		"3. process B dropped its copy when Redis told it, and reads 120",
	}},
	{"embedded-worker", []string{"worker handled "}},
	{"worker-binary", []string{
		"1. worker ready",
		`Get now returns "final"`,
		"pgcache_keys_deleted_total 1",
		"4. SIGTERM: worker exited 0",
	}},
	{"cluster", []string{"300 items cached across 3 masters"}},
	{"http-api", []string{
		"1. GET /authors/1 from the API itself, as Varnish will ask it:",
		"(MISS: rendered, stored in Redis)",
		"Cache-Control: public, max-age=0, s-maxage=600, stale-while-revalidate=60",
		"xkey: pgc-",
		"2. GET /authors/1 through Varnish twice:",
		"MISS (the API answered from Redis, nothing rendered) then HIT (Age: ",
		"the API did not see the second request",
		"304 Not Modified (HIT), no body",
		`Varnish serves {"id":1,"name":"Augusta"} after the worker's purge, then from its cache (HIT)`,
		`the API renders again (MISS) and shows "Sketches, 2nd ed." at once`,
		"Varnish serves it after the worker's purge, then from its cache (HIT)",
	}},
	{"metrics", []string{
		`pgcache_cache_hits_total{model="Product"} 4`,
		`pgcache_cache_negative_hits_total{model="Product"} 2`,
		`pgcache_cache_misses_total{model="Product"} 3`,
		`pgcache_cache_writes_total{model="Product"} 1`,
		`pgcache_cache_read_duration_seconds_count{model="Product",outcome="hit"} 4`,
		`pgcache_cache_read_duration_seconds_count{model="Product",outcome="miss"} 3`,
	}},
	{"lookups", []string{
		"user7@example.com is user 7",
		"user7@example.com is now user 8, seven@example.com user 7, user8@example.com nobody; stale entries dropped: 1",
		"order 1 has 20 items",
		"item 500 last and item 3 gone",
		"not found, at once",
	}},
}

// root is the examples directory, seen from this package's.
const root = "../.."

func TestExamples(t *testing.T) {
	mains, err := filepath.Glob(filepath.Join(root, "*", "main.go"))
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for _, m := range mains {
		dir := filepath.Base(filepath.Dir(m))
		if !slices.ContainsFunc(examples, func(e example) bool { return e.name == dir }) {
			t.Errorf("example %s is missing from the table in examples_test.go: add it, with what it must print", dir)
		}
		dirs = append(dirs, "./"+dir)
	}

	// One go build for all: the packages share most of their dependencies. The worker
	// is built too, so that worker-binary's own go build of it finds it in the cache.
	// It takes longest, so the servers start meanwhile.
	bin := t.TempDir()
	build := exec.CommandContext(t.Context(), "go", append([]string{"build", "-o", bin + string(filepath.Separator)}, append(dirs, "github.com/pgcache/pgcache/cmd/pgcache-worker")...)...)
	build.Dir = root
	built := make(chan error, 1)
	go func() {
		out, err := build.CombinedOutput()
		if err != nil {
			err = fmt.Errorf("go build: %w\n%s", err, out)
		}
		built <- err
	}()
	pg, rd := servers.Postgres(t), servers.Redis(t)
	var cluster *integration.RedisCluster
	if os.Getenv(integration.EnvRedisAddr) == "" { // else the harness starts no container
		cluster = integration.NewRedisCluster(t)
	}
	if err := <-built; err != nil {
		t.Fatal(err)
	}

	for _, ex := range examples {
		// One at a time: on a small machine, examples run side by side (one of them runs
		// go build) slow Redis beyond the read timeout, and reads fall back to Postgres.
		t.Run(ex.name, func(t *testing.T) {
			env := []string{"PGCACHE_POSTGRES_URL=" + pg.NewDatabase(t).RoleURL}
			if ex.name == "http-api" && os.Getenv("PGCACHE_VARNISH_URL") == "" {
				// It starts a Varnish container of its own.
				if err := integration.DockerAvailable(t.Context()); err != nil {
					t.Skipf("needs Docker for its Varnish container, or PGCACHE_VARNISH_URL: %v", err)
				}
			}
			if ex.name == "cluster" {
				// Write-back aside, the examples take a single Redis; this one a cluster.
				if cluster == nil {
					t.Skipf("needs a Redis Cluster container; %s names an existing server", integration.EnvRedisAddr)
				}
				env = append(env, "PGCACHE_REDIS_CLUSTER="+strings.Join(cluster.Addrs(), ","))
			} else {
				// One Redis for all: each example has a key prefix of its own.
				env = append(env, "PGCACHE_REDIS_ADDR="+rd.Addr())
			}
			stdout := runExample(t, filepath.Join(bin, ex.name), env)
			for _, w := range ex.want {
				if !strings.Contains(stdout, w) {
					t.Errorf("output lacks %q", w)
				}
			}
		})
	}
}

// runExample runs the program with env added to the test's environment and returns its
// standard output; it fails the test unless the program exits 0 within a minute.
func runExample(t *testing.T, path string, env []string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, path)
	// SIGTERM first: worker-binary stops its own child process before it exits.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 15 * time.Second
	cmd.Env = append(os.Environ(), env...) // later entries win
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	t.Logf("%s ran %v; output:\n%s", filepath.Base(path), time.Since(start).Round(time.Millisecond), stdout.String())
	if ctx.Err() != nil {
		err = fmt.Errorf("still running after a minute, stopped: %w", err)
	}
	if err != nil {
		t.Fatalf("%s: %v\nstderr:\n%s", filepath.Base(path), err, stderr.String())
	}
	return stdout.String()
}
