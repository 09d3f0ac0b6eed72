package invalidator_test

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/pgcache/pgcache/cdc"
	"github.com/pgcache/pgcache/integration/fixture"
	"github.com/pgcache/pgcache/invalidator"
	"github.com/pgcache/pgcache/readthrough"
)

// benchEnv is a widgets table of n rows, a Redis prefix with the widgets' version
// announced, and a worker streaming from a slot of its own: what both benchmarks need.
type benchEnv struct {
	sql    *sql.DB
	rdb    *redis.Client
	repo   *readthrough.Repository[fixture.Widget]
	pgURL  string
	stream cdc.Options
	worker *invalidator.Worker
	stop   func() // stops the worker
	prefix string
}

func newBenchEnv(b *testing.B, n int) *benchEnv {
	b.Helper()
	pg := servers.Postgres(b).NewDatabase(b)
	rd := servers.Redis(b)
	be := &benchEnv{rdb: rd.Client(b), prefix: rd.Prefix(b)}
	prefix := be.prefix
	db, err := gorm.Open(postgres.Open(pg.RoleURL), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		b.Fatal(err)
	}
	be.sql, _ = db.DB()
	be.sql.SetMaxOpenConns(32)
	be.sql.SetMaxIdleConns(32)
	b.Cleanup(func() { be.sql.Close() })
	if err := db.AutoMigrate(&fixture.Widget{}); err != nil {
		b.Fatal(err)
	}
	if _, err := be.sql.Exec(`INSERT INTO widgets (id, name) SELECT g, 'v0' FROM generate_series(1, $1::int) g`, n); err != nil {
		b.Fatal(err)
	}
	cache, err := readthrough.New(db, be.rdb, readthrough.Options{Prefix: prefix, RedisTimeout: 2 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	if be.repo, err = readthrough.Register[fixture.Widget](cache, readthrough.ModelOptions{}); err != nil {
		b.Fatal(err)
	}
	// The first read announces the model's version, without which the worker has no
	// key to delete.
	if _, _, err := be.repo.Get(context.Background(), int64(1)); err != nil {
		b.Fatal(err)
	}
	be.pgURL = pg.RoleURL
	// MaxTxChanges above BenchmarkThroughput's 200,000 rows in one transaction, which
	// would otherwise be handed over as one whole-table change.
	be.stream = cdc.Options{Slot: "slot_" + pg.Name, Publication: "pgcache", Tables: []string{"widgets"}, MaxTxChanges: 1 << 20}
	be.worker, err = invalidator.NewWorker(be.rdb, invalidator.WorkerOptions{
		Postgres:    be.pgURL,
		Stream:      be.stream,
		Invalidator: invalidator.Options{Prefix: prefix},
	})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- be.worker.Run(ctx) }()
	var once sync.Once
	be.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				b.Errorf("worker: %v", err)
			}
		})
	}
	b.Cleanup(be.stop)
	deadline := time.Now().Add(30 * time.Second)
	for !be.worker.Ready() {
		if time.Now().After(deadline) {
			b.Fatal("the worker did not start streaming")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return be
}

// BenchmarkCommitToDeleteLag measures how long a row changed by raw SQL stays cached:
// from the moment the writer's COMMIT returns to the moment Redis deletes the row's key,
// as Redis reports it through a keyspace notification. Writers commit single-row
// UPDATEs at a fixed rate of 1000 a second, one per iteration, each to a row of its own
// whose key exists. It reports the median, 99th percentile and maximum lag, and the
// commit rate reached.
//
// It sets notify-keyspace-events on the Redis it runs against, and restores it.
func BenchmarkCommitToDeleteLag(b *testing.B) {
	const (
		rate    = 1000 // commits per second
		rows    = 30000
		writers = 4 // connections: a slow commit does not hold the schedule up
	)
	be := newBenchEnv(b, rows)
	ctx := context.Background()

	// Every row's key exists, so that its deletion is notified.
	names := make(map[string]int, rows) // value key → row index
	keyOf := make([]string, rows)
	for i := range rows {
		k, err := be.repo.Key(int64(i + 1))
		if err != nil {
			b.Fatal(err)
		}
		keyOf[i], names[k] = k, i
	}
	for lo := 0; lo < rows; lo += 1000 {
		_, err := be.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, k := range keyOf[lo:min(lo+1000, rows)] {
				p.Set(ctx, k, "x", 10*time.Minute)
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}

	old, err := be.rdb.ConfigGet(ctx, "notify-keyspace-events").Result()
	if err != nil {
		b.Fatal(err)
	}
	if err := be.rdb.ConfigSet(ctx, "notify-keyspace-events", "Eg").Err(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		be.rdb.ConfigSet(context.Background(), "notify-keyspace-events", old["notify-keyspace-events"])
	})
	sub := be.rdb.Subscribe(ctx, "__keyevent@0__:del")
	if _, err := sub.Receive(ctx); err != nil { // the subscription's confirmation
		b.Fatal(err)
	}
	deleted := make([]time.Time, rows)
	var (
		mu       sync.Mutex
		nDeleted int
	)
	received := make(chan struct{})
	go func() {
		defer close(received)
		for {
			msg, err := sub.ReceiveMessage(ctx)
			now := time.Now()
			if err != nil {
				return // closed
			}
			if i, ok := names[msg.Payload]; ok {
				mu.Lock()
				if deleted[i].IsZero() {
					deleted[i] = now
					nDeleted++
				}
				mu.Unlock()
			}
		}
	}()
	defer func() {
		sub.Close()
		<-received
	}()

	committed := make([]time.Time, rows)
	jobs := make(chan int, rows)
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			for i := range jobs {
				if _, err := be.sql.Exec(`UPDATE widgets SET name = 'changed' WHERE id = $1`, i+1); err != nil {
					b.Error(err)
					return
				}
				committed[i] = time.Now()
			}
		})
	}
	n := 0
	start := time.Now()
	for b.Loop() {
		if n == rows {
			b.Fatalf("more than %d iterations: lower -benchtime", rows)
		}
		if d := time.Until(start.Add(time.Duration(n) * time.Second / rate)); d > 0 {
			time.Sleep(d) // pacing the writers
		}
		jobs <- n
		n++
	}
	close(jobs)
	wg.Wait()
	elapsed := time.Since(start)

	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		all := nDeleted >= n
		mu.Unlock()
		if all {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d keys deleted within 30s of the last commit", nDeleted, n)
		}
		time.Sleep(time.Millisecond)
	}
	mu.Lock()
	lags := make([]time.Duration, n)
	for i := range n {
		// The worker may delete the key before the writer has seen its COMMIT return:
		// the lag is then zero.
		lags[i] = max(0, deleted[i].Sub(committed[i]))
	}
	mu.Unlock()
	slices.Sort(lags)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(lags[n/2]), "lag_p50_ms")
	b.ReportMetric(ms(lags[min(n-1, n*99/100)]), "lag_p99_ms")
	b.ReportMetric(ms(lags[n-1]), "lag_max_ms")
	b.ReportMetric(float64(n)/elapsed.Seconds(), "commits/s")
}

// BenchmarkThroughput measures how many row changes a second the worker turns into key
// deletions, over 200,000 row changes per iteration. Keys are deleted whether or not
// they exist, so none is filled.
//
//   - live: one UPDATE of all 200,000 rows in one transaction while the worker runs,
//     timed from the moment COMMIT returns until the invalidator has handled every
//     change (Postgres decodes the transaction as it is written and sends it at commit).
//   - backlog: 200 transactions of 1,000 rows (and 2,000 of 100) committed while the
//     worker is stopped, then the worker started and timed from its start (connection
//     and setup included) until it has handled them all: the rate at which it drains a
//     backlog.
//
// The handler=none variants are the baseline, in the same run: the same stream into a
// handler that only counts, which is what Postgres and package cdc deliver before the
// invalidator does anything. The invalidator takes every transaction waiting at once
// (cdc.BatchHandler); the handler=unbatched variants hand it one transaction at a
// time, which is what batching gains over. The rtt=1ms variants delay every Redis
// call of the invalidator by a millisecond, as a Redis on another host would: the
// latency that the stream's reading ahead of the handler, and batching, can hide. The
// rcvbuf=32KiB variants set the replication socket's receive buffer
// (cdc.Options.ReceiveBuffer) instead of leaving it to the kernel.
func BenchmarkThroughput(b *testing.B) {
	const rows = 200000
	all, pair := []string{"invalidator", "unbatched", "none"}, []string{"invalidator", "none"}
	for _, c := range []struct {
		mode     string
		txs      int
		rtt      time.Duration
		rcvbuf   int
		handlers []string
	}{
		{"live", 1, 0, 0, pair},
		{"live", 1, 0, 32 << 10, pair},
		{"backlog", 200, 0, 0, pair},
		{"backlog", 2000, 0, 0, all},
		{"backlog", 2000, 0, 32 << 10, pair},
		{"backlog", 2000, time.Millisecond, 0, all[:2]},
	} {
		name := fmt.Sprintf("%s/tx=%dx%d", c.mode, c.txs, rows/c.txs)
		if c.rtt > 0 {
			name += "/rtt=" + c.rtt.String()
		}
		if c.rcvbuf > 0 {
			name += fmt.Sprintf("/rcvbuf=%dKiB", c.rcvbuf>>10)
		}
		for _, handler := range c.handlers {
			b.Run(name+"/handler="+handler, func(b *testing.B) {
				benchThroughput(b, rows, c.txs, c.mode == "backlog", handler, c.rtt, c.rcvbuf)
			})
		}
	}
}

// unbatched is the Invalidator without its HandleBatch: the stream hands it one
// transaction at a time.
type unbatched struct{ inv *invalidator.Invalidator }

func (h unbatched) Gap(ctx context.Context, tables []string, reason string) error {
	return h.inv.Gap(ctx, tables, reason)
}
func (h unbatched) Handle(ctx context.Context, tx *cdc.Tx) error { return h.inv.Handle(ctx, tx) }

// delay is a go-redis hook that delays every command and pipeline.
type delay time.Duration

func (d delay) DialHook(next redis.DialHook) redis.DialHook { return next }
func (d delay) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		time.Sleep(time.Duration(d))
		return next(ctx, cmd)
	}
}
func (d delay) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		time.Sleep(time.Duration(d))
		return next(ctx, cmds)
	}
}

// counter is a cdc.Handler that counts the changes it is given.
type counter struct{ changes atomic.Uint64 }

func (c *counter) Gap(context.Context, []string, string) error { return nil }
func (c *counter) Handle(_ context.Context, tx *cdc.Tx) error {
	c.changes.Add(uint64(len(tx.Changes)))
	return nil
}

func benchThroughput(b *testing.B, rows, txs int, backlog bool, handler string, rtt time.Duration, rcvbuf int) {
	be := newBenchEnv(b, rows)
	run, handled := be.worker.Run, func() uint64 { return be.worker.Stats().Changes }
	if handler != "invalidator" || rtt > 0 || rcvbuf > 0 {
		be.stop()
		rdb := be.rdb
		if rtt > 0 {
			rdb = redis.NewClient(be.rdb.Options())
			rdb.AddHook(delay(rtt))
			b.Cleanup(func() { rdb.Close() })
		}
		var h cdc.Handler
		switch handler {
		case "none":
			c := &counter{}
			h, handled = c, c.changes.Load
		case "invalidator", "unbatched":
			inv, err := invalidator.New(rdb, invalidator.Options{Prefix: be.prefix})
			if err != nil {
				b.Fatal(err)
			}
			h, handled = inv, func() uint64 { return inv.Stats().Changes }
			if handler == "unbatched" {
				h = unbatched{inv}
			}
		default:
			b.Fatalf("no handler %q", handler)
		}
		opts := be.stream
		opts.ReceiveBuffer = rcvbuf
		s, err := cdc.NewStream(be.pgURL, opts, h)
		if err != nil {
			b.Fatal(err)
		}
		run = s.Run
		if !backlog {
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- s.Run(ctx) }()
			b.Cleanup(func() {
				cancel()
				if err := <-done; err != nil {
					b.Error(err)
				}
			})
			for !s.Stats().Connected {
				time.Sleep(time.Millisecond)
			}
		}
	} else if backlog {
		be.stop() // started again for each iteration
	}

	var (
		total, cpu time.Duration
		changes    uint64
	)
	for n := 0; b.Loop(); n++ {
		b.StopTimer()
		base := handled()
		per := rows / txs
		for i := range txs {
			_, err := be.sql.Exec(`UPDATE widgets SET name = $1 WHERE id > $2 AND id <= $3`,
				fmt.Sprint("v", n), i*per, (i+1)*per)
			if err != nil {
				b.Fatal(err)
			}
		}
		start, cpuStart := time.Now(), processCPU(b)
		b.StartTimer()
		var stop func()
		if backlog {
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- run(ctx) }()
			stop = func() {
				cancel()
				if err := <-done; err != nil {
					b.Fatal(err)
				}
			}
		}
		deadline := start.Add(2 * time.Minute)
		for handled() < base+uint64(rows) {
			if time.Now().After(deadline) {
				b.Fatalf("%d of %d changes handled within 2 minutes", handled()-base, rows)
			}
			// Not more often: the polls' CPU counts in cpu-ns/row.
			time.Sleep(time.Millisecond)
		}
		total += time.Since(start)
		cpu += processCPU(b) - cpuStart
		changes += handled() - base
		if stop != nil {
			stop()
		}
	}
	b.ReportMetric(float64(changes)/total.Seconds(), "rows/s")
	// The worker shares the CPUs with Postgres and Redis, whose work rows/s includes:
	// the CPU this process (the worker, and the loop that polls it) spent per row is
	// the worker's own cost.
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(changes), "cpu-ns/row")
}

// processCPU returns the CPU time (user and system) this process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
