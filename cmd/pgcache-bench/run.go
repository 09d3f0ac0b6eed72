package main

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/pgcache/pgcache/cdc"
	"github.com/pgcache/pgcache/integration"
	"github.com/pgcache/pgcache/invalidator"
	"github.com/pgcache/pgcache/readthrough"
)

// Widget is the benchmark's model: a row of about 200 bytes encoded.
type Widget struct {
	ID          int64 `gorm:"primaryKey"`
	Name        string
	Description string
	Price       int
	Stock       int
}

const rows = 100_000

// bench holds the servers and clients of one run.
type bench struct {
	log   *slog.Logger
	opts  options
	dbURL string
	// reached says how the servers were reached (see integration.Reach).
	reached string
	db      *gorm.DB
	rdb     *redis.Client
	// redisAddr is where rdb connects, for the other libraries' clients.
	redisAddr string
	// queries counts widget SELECTs made through any pool opened by openDB.
	queries atomic.Int64
}

func run(ctx context.Context, log *slog.Logger, opts options) (*results, error) {
	b := &bench{log: log, opts: opts}
	redisAddr, stop, err := b.servers(ctx)
	if err != nil {
		return nil, err
	}
	defer stop()
	if b.db, err = b.openDB(); err != nil {
		return nil, err
	}
	b.redisAddr = redisAddr
	b.rdb = redis.NewClient(&redis.Options{Addr: redisAddr, ContextTimeoutEnabled: true, PoolSize: 32})
	defer b.rdb.Close()

	log.Info("loading rows", "rows", rows)
	if err := b.db.Migrator().DropTable(&Widget{}); err != nil {
		return nil, err
	}
	if err := b.db.AutoMigrate(&Widget{}); err != nil {
		return nil, err
	}
	if err := b.db.Exec(`INSERT INTO widgets SELECT g, 'widget ' || g, repeat('a fine widget, ', 8), g, 100 FROM generate_series(1, ?) g`, rows).Error; err != nil {
		return nil, err
	}
	if err := b.rdb.FlushDB(ctx).Err(); err != nil {
		return nil, err
	}
	repo, err := b.repo(b.db)
	if err != nil {
		return nil, err
	}

	// The worker runs for the whole benchmark; its gap flush comes first.
	w, err := invalidator.NewWorker(b.rdb, invalidator.WorkerOptions{
		Postgres:    b.dbURL,
		Stream:      cdc.Options{Slot: "pgcache_bench", Publication: "pgcache_bench", Tables: []string{"widgets"}, StatusInterval: time.Second},
		Invalidator: invalidator.Options{Prefix: "bench"},
	})
	if err != nil {
		return nil, err
	}
	wr := &workerRun{w: w, log: log}
	wr.start(ctx)
	defer wr.stop()
	if err := wr.ready(ctx); err != nil {
		return nil, err
	}

	r := &results{Reached: b.reached, Machine: fmt.Sprintf("%d CPUs, %s/%s, %s; postgres %s, redis %s", runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version(),
		imageOr(integration.EnvPostgresImage, integration.DefaultPostgresImage), imageOr(integration.EnvRedisImage, integration.DefaultRedisImage))}
	if err := b.readPath(ctx, repo, r); err != nil {
		return nil, err
	}
	if err := b.missPath(ctx, repo, r); err != nil {
		return nil, err
	}
	if err := b.multiGet(ctx, repo, r); err != nil {
		return nil, err
	}
	if err := b.stampede(ctx, r); err != nil {
		return nil, err
	}
	if err := b.lookups(ctx, r); err != nil {
		return nil, err
	}
	if err := b.lag(ctx, repo, r); err != nil {
		return nil, err
	}
	if err := b.throughput(ctx, w, r); err != nil {
		return nil, err
	}
	if err := b.backlog(ctx, wr, r); err != nil {
		return nil, err
	}
	if err := b.writeBack(ctx, r); err != nil {
		return nil, err
	}
	// Last, so that its connection and goroutines are gone before the others run.
	if err := b.nearBench(ctx, r); err != nil {
		return nil, err
	}
	if opts.varnish {
		if err := b.varnishBench(ctx, r); err != nil {
			return nil, err
		}
		if err := b.chainBench(ctx, r); err != nil {
			return nil, err
		}
	}
	return r, nil
}

func imageOr(env, def string) string {
	if v := os.Getenv(env); v != "" {
		return v
	}
	return def
}

func (b *bench) servers(ctx context.Context) (redisAddr string, stop func(), err error) {
	if url, addr := os.Getenv("PGCACHE_POSTGRES_URL"), os.Getenv("PGCACHE_REDIS_ADDR"); url != "" && addr != "" {
		b.dbURL = url
		b.reached = "existing servers (PGCACHE_POSTGRES_URL, PGCACHE_REDIS_ADDR)"
		return addr, func() {}, nil
	}
	// At the containers' own addresses where they answer: Docker's port proxy would
	// add its own round trip to every figure and to every baseline.
	b.log.Info("starting Postgres and Redis containers")
	pg, err := integration.StartPostgres(ctx, integration.PostgresOptions{Direct: true})
	if err != nil {
		return "", nil, err
	}
	rd, err := integration.StartRedis(ctx, integration.RedisOptions{Direct: true})
	if err != nil {
		_ = pg.Close(ctx)
		return "", nil, err
	}
	db, err := pg.CreateDatabase(ctx)
	if err != nil {
		_ = pg.Close(ctx)
		_ = rd.Close(ctx)
		return "", nil, err
	}
	b.dbURL = db.RoleURL
	b.reached = fmt.Sprintf("containers: postgres by %s, redis by %s", pg.Reach(), rd.Reach())
	return rd.Addr(), func() {
		ctx := context.WithoutCancel(ctx)
		_ = rd.Close(ctx)
		_ = pg.Close(ctx)
	}, nil
}

// openDB opens a pool standing for one process, counting its widget queries.
func (b *bench) openDB() (*gorm.DB, error) {
	db, err := gorm.Open(postgres.Open(b.dbURL), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		return nil, err
	}
	sqlDB, err := db.DB()
	if err != nil {
		return nil, err
	}
	sqlDB.SetMaxIdleConns(32)
	return db, db.Callback().Query().Before("gorm:query").Register("bench:count", func(tx *gorm.DB) {
		if tx.Statement.Table == "widgets" {
			b.queries.Add(1)
		}
	})
}

func (b *bench) repo(db *gorm.DB) (*readthrough.Repository[Widget], error) {
	c, err := readthrough.New(db, b.rdb, readthrough.Options{Prefix: "bench"})
	if err != nil {
		return nil, err
	}
	return readthrough.Register[Widget](c, readthrough.ModelOptions{TTL: time.Hour})
}

// latencies runs f in one goroutine for the configured duration.
func (b *bench) latencies(ctx context.Context, f func(i int) error) ([]time.Duration, error) {
	var out []time.Duration
	end := time.Now().Add(b.opts.duration)
	for i := 0; time.Now().Before(end); i++ {
		start := time.Now()
		if err := f(i); err != nil {
			return nil, err
		}
		out = append(out, time.Since(start))
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
	slices.Sort(out)
	return out, nil
}

// opsPerSec runs f in n goroutines for the configured duration.
func (b *bench) opsPerSec(ctx context.Context, n int, f func(i int) error) (float64, error) {
	return b.opsFor(ctx, n, b.opts.duration, f)
}

// opsFor runs f in n goroutines for d and returns its operations per second.
func (b *bench) opsFor(ctx context.Context, n int, d time.Duration, f func(i int) error) (float64, error) {
	var ops atomic.Int64
	var firstErr atomic.Value
	end := time.Now().Add(d)
	var wg sync.WaitGroup
	for g := range n {
		wg.Go(func() {
			for i := g; time.Now().Before(end) && ctx.Err() == nil; i += n {
				if err := f(i); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				ops.Add(1)
			}
		})
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return 0, err
	}
	return float64(ops.Load()) / d.Seconds(), nil
}

// measure is one of the operations sideBySide compares: f, and where to put its p50
// latency and, unless ops is nil, its operations per second at 16 goroutines.
type measure struct {
	f   func(i int) error
	p50 *float64
	ops *float64
}

// sideBySideRounds is how many turns each operation gets in sideBySide's throughput
// measurement.
const sideBySideRounds = 4

// sideBySide measures operations that are compared with each other under the same
// conditions: their latencies in one goroutine, one call of each in turn, for the
// configured duration per operation; then their throughput at 16 goroutines, each
// operation in turn for a quarter of the duration, four times. So a change of the
// machine's load while they run (another container's start-up, a checkpoint) falls on
// each of them alike, not on whichever ran at the time. Each round of latencies runs
// the operations in a new random order: what one of them leaves behind (a server that
// went idle during another's Postgres query and must be woken, cold caches) falls on
// each of them alike too, not on the one that always comes next (seen: a raw GET that
// always followed GORM's First took twice as long as the hit that followed the GET).
func (b *bench) sideBySide(ctx context.Context, ms []measure) error {
	lat := make([][]time.Duration, len(ms))
	order := make([]int, len(ms))
	for j := range order {
		order[j] = j
	}
	rng := rand.New(rand.NewPCG(1, 2))
	end := time.Now().Add(time.Duration(len(ms)) * b.opts.duration)
	for i := 0; time.Now().Before(end); i++ {
		rng.Shuffle(len(order), func(x, y int) { order[x], order[y] = order[y], order[x] })
		for _, j := range order {
			m := ms[j]
			start := time.Now()
			if err := m.f(i); err != nil {
				return err
			}
			lat[j] = append(lat[j], time.Since(start))
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	for j, m := range ms {
		slices.Sort(lat[j])
		*m.p50 = us(percentile(lat[j], 50))
	}
	turn := b.opts.duration / sideBySideRounds
	ops := make([]float64, len(ms))
	for range sideBySideRounds {
		for j, m := range ms {
			if m.ops == nil {
				continue
			}
			n, err := b.opsFor(ctx, 16, turn, m.f)
			if err != nil {
				return err
			}
			ops[j] += n
		}
	}
	for j, m := range ms {
		if m.ops != nil {
			*m.ops = ops[j] / sideBySideRounds
		}
	}
	return nil
}

// readPath measures hits against a raw GET of the same bytes and an uncached GORM First,
// and a hit's allocations against those of the raw GET and of a GET and decode of the
// same entry (getDecode).
func (b *bench) readPath(ctx context.Context, repo *readthrough.Repository[Widget], r *results) error {
	b.log.Info("read path")
	const hot = 1000
	ids := make([]any, hot)
	for i := range ids {
		ids[i] = int64(i + 1)
	}
	if _, err := repo.GetMany(ctx, ids...); err != nil {
		return err
	}
	keys := make([]string, hot)
	for i := range keys {
		keys[i], _ = repo.Key(int64(i + 1))
	}
	rawGet := func(i int) error { return b.rdb.Get(ctx, keys[i%hot]).Err() }
	hit := func(i int) error {
		_, ok, err := repo.Get(ctx, int64(i%hot+1))
		if err == nil && !ok {
			err = fmt.Errorf("row %d missing", i%hot+1)
		}
		return err
	}
	first := func(i int) error { var w Widget; return b.db.WithContext(ctx).First(&w, int64(i%hot+1)).Error }
	ap, err := b.rdb.AutoPipeline()
	if err != nil {
		return err
	}
	defer ap.Close()
	rawPiped := func(i int) error { return ap.Get(ctx, keys[i%hot]).Err() }

	var rawPipedP50 float64 // a lone GET through the pipeliner: not reported
	err = b.sideBySide(ctx, []measure{{rawGet, &r.RawRedisGetP50us, &r.RawRedisGetOpsS16}, {rawPiped, &rawPipedP50, &r.RawRedisGetPipelinedOpsS16},
		{hit, &r.CachedHitP50us, &r.CachedHitOpsS16}, {first, &r.GormFirstP50us, &r.GormFirstOpsS16}})
	if err != nil {
		return err
	}
	r.HitVsRawPipelinedOpsRatio16 = r.CachedHitOpsS16 / r.RawRedisGetPipelinedOpsS16
	r.HitOverheadRatio = r.CachedHitP50us / r.RawRedisGetP50us
	r.ThroughputRatio16 = r.CachedHitOpsS16 / r.GormFirstOpsS16
	r.HitVsRawOpsRatio16 = r.CachedHitOpsS16 / r.RawRedisGetOpsS16
	r.HitAllocs = allocsPerRun(1000, func() { _ = hit(7) })
	r.RawGetAllocs = allocsPerRun(1000, func() { _ = rawGet(7) })
	decode, err := getDecode(ctx, b.rdb, b.db)
	if err != nil {
		return err
	}
	// The baseline must decode what the hit returns, or it measures something else.
	got, err := decode(keys[7])
	if err != nil {
		return fmt.Errorf("GET and decode baseline: %w", err)
	}
	if want, _, err := repo.Get(ctx, int64(8)); err != nil || got != want {
		return fmt.Errorf("GET and decode baseline: decoded %+v, a hit returns %+v (%v)", got, want, err)
	}
	r.GetDecodeAllocs = allocsPerRun(1000, func() { _, _ = decode(keys[7]) })
	return nil
}

// multiGet compares a cold GetMany of 100 rows with 100 cold Gets.
func (b *bench) multiGet(ctx context.Context, repo *readthrough.Repository[Widget], r *results) error {
	b.log.Info("multi-get")
	var single, many []time.Duration
	for round := range 7 {
		ids := make([]any, 100)
		for i := range ids {
			ids[i] = int64(2000 + round*100 + i)
		}
		if err := repo.Invalidate(ctx, ids...); err != nil {
			return err
		}
		start := time.Now()
		for _, id := range ids {
			if _, _, err := repo.Get(ctx, id); err != nil {
				return err
			}
		}
		single = append(single, time.Since(start))
		if err := repo.Invalidate(ctx, ids...); err != nil {
			return err
		}
		start = time.Now()
		if _, err := repo.GetMany(ctx, ids...); err != nil {
			return err
		}
		many = append(many, time.Since(start))
	}
	slices.Sort(single)
	slices.Sort(many)
	r.MultiGet100Speedup = float64(percentile(single, 50)) / float64(percentile(many, 50))
	return nil
}

// stampede counts database queries for 1000 concurrent misses of one key across four
// instances standing for four processes.
func (b *bench) stampede(ctx context.Context, r *results) error {
	b.log.Info("stampede")
	var repos []*readthrough.Repository[Widget]
	for range 4 {
		db, err := b.openDB()
		if err != nil {
			return err
		}
		repo, err := b.repo(db)
		if err != nil {
			return err
		}
		repos = append(repos, repo)
	}
	if err := repos[0].Invalidate(ctx, int64(77)); err != nil {
		return err
	}
	before := b.queries.Load()
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range 1000 {
		wg.Go(func() {
			<-start
			_, _, _ = repos[i%4].Get(ctx, int64(77))
		})
	}
	close(start)
	wg.Wait()
	r.StampedeDBQueries = int(b.queries.Load() - before)
	var st readthrough.Stats
	for _, repo := range repos {
		s := repo.Stats()
		st.Loads += s.Loads
		st.StampedeWaits += s.StampedeWaits
		st.Errors += s.Errors
		st.Hits += s.Hits
	}
	b.log.Info("stampede done", "db_queries", r.StampedeDBQueries, "loads", st.Loads, "waits", st.StampedeWaits, "redis_errors", st.Errors, "hits", st.Hits)
	return nil
}

// lag measures commit → key deleted at a fixed commit rate, watching deletions through
// Redis keyspace notifications.
func (b *bench) lag(ctx context.Context, repo *readthrough.Repository[Widget], r *results) error {
	b.log.Info("invalidation lag", "commits_per_s", b.opts.commitRate)
	n := int(float64(b.opts.commitRate) * b.opts.duration.Seconds())
	n = min(n, rows-10_000)
	base := 10_000
	ids := make([]any, n)
	keyOf := make(map[string]int, n)
	for i := range ids {
		ids[i] = int64(base + i)
		k, _ := repo.Key(int64(base + i))
		keyOf[k] = i
	}
	for i := 0; i < n; i += 500 {
		if _, err := repo.GetMany(ctx, ids[i:min(i+500, n)]...); err != nil {
			return err
		}
	}
	if err := b.rdb.ConfigSet(ctx, "notify-keyspace-events", "Eg").Err(); err != nil {
		return err
	}
	sub := b.rdb.PSubscribe(ctx, "__keyevent@*__:del")
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		return err
	}
	deleted := make([]time.Time, n)
	done := make(chan struct{})
	go func() {
		defer close(done)
		seen := 0
		for msg := range sub.Channel() {
			if i, ok := keyOf[msg.Payload]; ok && deleted[i].IsZero() {
				deleted[i] = time.Now()
				if seen++; seen == n {
					return
				}
			}
		}
	}()

	committed := make([]time.Time, n)
	interval := time.Second / time.Duration(b.opts.commitRate)
	start := time.Now()
	for i := range n {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d) // pacing the writer, not synchronising
		}
		if err := b.db.WithContext(ctx).Exec(`UPDATE widgets SET stock = stock + 1 WHERE id = ?`, base+i).Error; err != nil {
			return err
		}
		committed[i] = time.Now()
	}
	r.InvalidationCommitsS = float64(n) / time.Since(start).Seconds()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		return fmt.Errorf("only some of %d invalidations arrived", n)
	}
	lags := make([]time.Duration, n)
	for i := range lags {
		lags[i] = max(0, deleted[i].Sub(committed[i]))
	}
	slices.Sort(lags)
	r.InvalidationLagP50ms = ms(percentile(lags, 50))
	r.InvalidationLagP99ms = ms(percentile(lags, 99))
	r.lagHistogram = lags
	return nil
}

// throughput times the invalidation of one UPDATE of every row.
func (b *bench) throughput(ctx context.Context, w *invalidator.Worker, r *results) error {
	b.log.Info("invalidation throughput", "rows", rows)
	before := w.Stats().Changes
	if err := b.db.WithContext(ctx).Exec(`UPDATE widgets SET price = price + 1`).Error; err != nil {
		return err
	}
	start := time.Now()
	for w.Stats().Changes < before+rows {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
	r.InvalidationRowsS = rows / time.Since(start).Seconds()
	return nil
}
