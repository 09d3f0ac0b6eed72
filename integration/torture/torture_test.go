package torture

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/pgcache/pgcache/integration"
	"github.com/pgcache/pgcache/readthrough"
	"github.com/pgcache/pgcache/writeback"
	"github.com/pgcache/pgcache/writepolicy"
)

var servers integration.Shared

func TestMain(m *testing.M) {
	if os.Getenv(envRole) != "" {
		// Re-executed by startCache as a cache process.
		os.Exit(cacheProcess(os.Getenv, os.Stdin, os.Stdout))
	}
	os.Exit(servers.Run(m))
}

// margin is how stale a read of a row written outside write-back may be beyond the
// downtime of the worker, Redis or Postgres within the read's window: the invalidation
// lag with reconnect backoff included, and for the near processes the notification
// delay on top of it (under a millisecond at p99: see the package doc).
const margin = 3 * time.Second

// pgKillEvery is the least time between two Postgres kills after the first: a tenth of
// the run, at least 5s.
func pgKillEvery(duration time.Duration) time.Duration { return max(duration/10, 5*time.Second) }

// quiescence bounds how long after the chaos the journal must be flushed and every
// cached row equal Postgres.
const quiescence = 90 * time.Second

func TestTorture(t *testing.T) {
	duration := 8 * time.Second
	if v := os.Getenv("PGCACHE_TORTURE_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("PGCACHE_TORTURE_DURATION: %v", err)
		}
		duration = d
	}
	bin := buildWorker(t)
	// A Postgres of the test's own: the chaos SIGKILLs it.
	pgServer := integration.NewPostgres(t, integration.PostgresOptions{})
	pg := pgServer.NewDatabase(t)
	// Write-back writes are acknowledged once in Redis: they survive its restarts only
	// with fsynced persistence.
	rd := integration.NewRedis(t, integration.RedisOptions{Persistence: integration.PersistAOFAlways})
	const prefix = "torture"
	// The chaos lasts duration plus the Postgres outages (see below): allow for them.
	ctx, cancel := context.WithTimeout(context.Background(), 2*duration+5*time.Minute)
	defer cancel()

	setup, err := gorm.Open(postgres.Open(pg.RoleURL), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		t.Fatal(err)
	}
	if err := setup.AutoMigrate(&Item{}, &BackItem{}, &SoftItem{}, &KeyedItem{}); err != nil {
		t.Fatal(err)
	}
	for table, n := range map[string]int{"items": nItems, "back_items": nBackItems, "soft_items": nSoftItems} {
		if err := setup.Exec(`INSERT INTO `+table+` SELECT g, 1, 0 FROM generate_series(1, ?) g`, n).Error; err != nil {
			t.Fatal(err)
		}
	}
	for _, sql := range oddSchema {
		if err := setup.Exec(sql).Error; err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	h := newHistory()
	start := time.Now()
	for shard := range int32(nOddShards) {
		for n := 1; n <= nOddCodes; n++ {
			h.committed(row{"odd_items", oddID(shard, n)}, 1, start)
		}
	}
	for id := int64(1); id <= nItems; id++ {
		h.committed(row{"items", id}, 1, start)
	}
	for id := int64(1); id <= nBackItems; id++ {
		h.committed(row{"back_items", id}, 1, start)
	}
	for id := int64(1); id <= nSoftItems; id++ {
		h.committed(row{"soft_items", id}, 1, start)
	}
	if err := keyedSeed(setup, h, start); err != nil {
		t.Fatal(err)
	}
	// The test expects wrong lookups in the control: see envControl.
	control := os.Getenv(envControl) == "unchecked"

	// The worker, as a process of its own; it flushes the write-back journal too.
	var down downtime
	worker := startWorker(t, bin, pg.RoleURL, rd.Addr(), prefix, "slot_"+pg.Name)
	worker.waitReady(t)

	// The cache processes, one per way of writing; each reads both tables.
	var (
		procs    []*cacheProc
		procsMu  sync.Mutex
		backProc *cacheProc // the write-back process running now
	)
	// Cache processes run until the test closes their stdin, at the end of the chaos;
	// their own time limit is only a backstop.
	end, _ := ctx.Deadline()
	for _, role := range []string{roleInvalidate, roleWriteThrough, roleRaw, roleWriteBack} {
		p := startCache(t, role, pg.RoleURL, rd.Addr(), prefix, time.Until(end), 0, h)
		procs = append(procs, p)
		if role == roleWriteBack {
			backProc = p
		}
	}

	var (
		sqlWrites, truncates, workerKills, redisRestarts, redisKills, appKills atomic.Int64
		pgKills, pgRefused                                                     atomic.Int64
		pgOutage                                                               atomic.Int64 // nanoseconds Postgres was down
		wg                                                                     sync.WaitGroup
	)
	chaos, stopChaos := context.WithCancel(ctx)
	defer stopChaos()
	// The chaos lasts duration with Postgres up: a Postgres outage (seconds, on a loaded
	// machine up to most of a short run) is added to it, and it lasts until Postgres
	// was killed once (the second fault, however slow the first), so that every run
	// does work and has every kind of fault.
	chaosStart := time.Now()
	var lastPgKill time.Time // only the chaos goroutine uses it
	wg.Go(func() {
		for chaos.Err() == nil {
			if time.Since(chaosStart) >= duration+time.Duration(pgOutage.Load()) && pgKills.Load() > 0 {
				stopChaos()
				return
			}
			sleep(chaos, 50*time.Millisecond)
		}
	})
	errs := make(chan error, 8)
	fail := func(err error) {
		select {
		case errs <- err:
		default:
		}
	}
	// A raw-SQL writer, as another service would be.
	wg.Go(func() {
		for chaos.Err() == nil {
			id := rand.Int64N(nItems) + 1
			var ver int64
			if err := setup.WithContext(ctx).Raw(`UPDATE items SET ver = ver + 1, val = ? WHERE id = ? RETURNING ver`, rand.Int64(), id).Scan(&ver).Error; err != nil {
				if pgUnavailable(err) {
					// Postgres is down: the write may or may not have committed, so it
					// is not recorded.
					pgRefused.Add(1)
					sleep(chaos, 20*time.Millisecond)
					continue
				}
				fail(err)
				return
			}
			h.committed(row{"items", id}, ver, time.Now())
			sqlWrites.Add(1)
			sleep(chaos, time.Duration(rand.Int64N(int64(3*time.Millisecond))))
		}
	})
	// A raw-SQL writer of the odd items: updates, and now and then a TRUNCATE of a
	// partition with its rows written again, at their next versions, in the same
	// transaction.
	wg.Go(func() {
		for chaos.Err() == nil {
			shard := rand.Int32N(nOddShards)
			if rand.IntN(40) > 0 {
				n := rand.IntN(nOddCodes) + 1
				var ver int64
				err := setup.WithContext(ctx).Raw(`UPDATE odd_items SET ver = ver + 1, val = ? WHERE shard = ? AND code = ? RETURNING ver`,
					rand.Int64(), shard, fmt.Sprintf("c%d", n)).Scan(&ver).Error
				if err != nil && pgUnavailable(err) {
					pgRefused.Add(1)
					sleep(chaos, 20*time.Millisecond)
					continue
				}
				if err != nil {
					fail(err)
					return
				}
				h.committed(row{"odd_items", oddID(shard, n)}, ver, time.Now())
			} else {
				var rows []OddItem
				err := setup.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
					if err := tx.Raw(`SELECT * FROM odd_items WHERE shard = ? ORDER BY code FOR UPDATE`, shard).Scan(&rows).Error; err != nil {
						return err
					}
					for _, sql := range []string{
						fmt.Sprintf(`CREATE TEMP TABLE odd_copy ON COMMIT DROP AS SELECT * FROM odd_items_%d`, shard),
						fmt.Sprintf(`TRUNCATE odd_items_%d`, shard),
						`INSERT INTO odd_items SELECT code, ver + 1, val, shard FROM odd_copy`,
					} {
						if err := tx.Exec(sql).Error; err != nil {
							return err
						}
					}
					return nil
				})
				if err != nil && pgUnavailable(err) {
					pgRefused.Add(1)
					sleep(chaos, 20*time.Millisecond)
					continue
				}
				if err != nil {
					fail(err)
					return
				}
				at := time.Now()
				for _, r := range rows {
					var n int
					fmt.Sscanf(r.Code, "c%d", &n)
					h.committed(row{"odd_items", oddID(shard, n)}, r.Ver+1, at)
				}
				truncates.Add(1)
			}
			sqlWrites.Add(1)
			sleep(chaos, time.Duration(rand.Int64N(int64(5*time.Millisecond))))
		}
	})
	// A raw-SQL writer of keyed items: code swaps, group moves and value writes.
	kw := newKeyedWriter(setup, h)
	wg.Go(func() {
		for chaos.Err() == nil {
			err := kw.step(ctx)
			if err != nil && pgUnavailable(err) {
				pgRefused.Add(1)
				sleep(chaos, 20*time.Millisecond)
				continue
			}
			if err != nil {
				fail(fmt.Errorf("keyed items: %w", err))
				return
			}
			sqlWrites.Add(1)
			sleep(chaos, time.Duration(rand.Int64N(int64(5*time.Millisecond))))
		}
	})
	// Chaos: kill the worker with SIGKILL and restart it; restart Redis; SIGKILL
	// Postgres and start it again. The second fault is a Postgres kill if there was
	// none yet, so every run has one (it takes seconds: the first fault is another).
	wg.Go(func() {
		for n := 0; chaos.Err() == nil; n++ {
			sleep(chaos, 500*time.Millisecond+time.Duration(rand.Int64N(int64(time.Second))))
			if chaos.Err() != nil {
				return
			}
			from := time.Now()
			// Postgres is killed as the second fault, then at most once per pgKillEvery:
			// each kill costs seconds of recovery, which the chaos makes up for, so
			// kills as frequent as the other faults would stretch a long run without
			// end.
			if (n == 1 && pgKills.Load() == 0) || (n > 0 && rand.IntN(5) == 0 && time.Since(lastPgKill) >= pgKillEvery(duration)) {
				lastPgKill = time.Now()
				// A crash: Postgres does crash recovery on start; the replication slot
				// survives, perhaps at an older confirmed position (which redelivers).
				// The downtime lasts until the worker streams again.
				if err := pgServer.Kill(ctx); err != nil {
					fail(err)
					return
				}
				sleep(ctx, 200*time.Millisecond+time.Duration(rand.Int64N(int64(500*time.Millisecond))))
				if err := pgServer.Start(ctx); err != nil {
					fail(err)
					return
				}
				pgKills.Add(1)
				if err := worker.awaitReady(ctx); err != nil {
					fail(fmt.Errorf("the worker after a Postgres kill: %w", err))
					return
				}
				down.add(from, time.Now())
				pgOutage.Add(int64(time.Since(from)))
				continue
			}
			if rand.IntN(4) == 0 {
				// The write-back application SIGKILLed mid-write and started again for
				// the rest of the time: every write it acknowledged must reach Postgres.
				// Not downtime: the other processes read and write on.
				backProc.kill()
				p := startCache(t, roleWriteBack, pg.RoleURL, rd.Addr(), prefix, time.Until(end), (appKills.Add(1))*1_000_000_000, h)
				procsMu.Lock()
				procs, backProc = append(procs, p), p
				procsMu.Unlock()
				continue
			}
			if rand.IntN(3) == 0 {
				// A graceful stop or a crash: under appendfsync always, every write
				// Redis acknowledged survives both.
				stop := rd.Stop
				if rand.IntN(2) == 0 {
					stop = rd.Kill
					redisKills.Add(1)
				}
				if err := stop(ctx); err != nil {
					fail(err)
					return
				}
				sleep(chaos, 200*time.Millisecond)
				if err := rd.Start(ctx); err != nil {
					fail(err)
					return
				}
				redisRestarts.Add(1)
			} else {
				worker.kill()
				worker = startWorker(t, bin, pg.RoleURL, rd.Addr(), prefix, "slot_"+pg.Name)
				if err := worker.awaitReady(ctx); err != nil {
					fail(err)
					return
				}
				workerKills.Add(1)
			}
			down.add(from, time.Now())
		}
	})
	wg.Wait()
	procsMu.Lock()
	defer procsMu.Unlock()
	for _, p := range procs {
		p.stop()
	}
	for _, p := range procs {
		if err := p.wait(); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}

	// Quiescence: the worker catches up and flushes the journal. The checks use a
	// pool of their own: setup's may hold connections the last Postgres kill cut.
	worker.waitReady(t)
	check, err := gorm.Open(postgres.Open(pg.RoleURL), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		t.Fatal(err)
	}
	rdb := rd.Client(t)
	checker, err := readthrough.New(check, rdb, readthrough.Options{Prefix: prefix, RedisTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	items, err := readthrough.Register[Item](checker, readthrough.ModelOptions{})
	if err != nil {
		t.Fatal(err)
	}
	backs, err := readthrough.Register[BackItem](checker, readthrough.ModelOptions{WritePolicy: writepolicy.WriteBack})
	if err != nil {
		t.Fatal(err)
	}
	flusher, err := writeback.NewFlusher(check, rdb, writeback.FlusherOptions{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	// Quiescence is bounded generously: a flusher in backoff after Redis restarts, on a
	// loaded two-core machine, is slow, not wrong; a journal that never drains fails.
	quiet := time.Now().Add(quiescence)
	for {
		n, err := flusher.Backlog(ctx)
		if err == nil && n == 0 {
			break
		}
		if time.Now().After(quiet) {
			t.Fatalf("the write-back journal still holds %d writes (err %v) %v after the chaos ended", n, err, quiescence)
		}
		sleep(ctx, 50*time.Millisecond)
	}
	if dl, err := flusher.DeadLetters(ctx, 10); err != nil || len(dl) > 0 {
		t.Fatalf("dead letters: %+v, %v", dl, err)
	}

	// Every row: Postgres has the last acknowledged write-back version (or a later
	// one whose Save failed but happened), and the cache holds the database's row or
	// nothing.
	var dbItems []Item
	var dbBacks []BackItem
	if err := check.Order("id").Find(&dbItems).Error; err != nil {
		t.Fatal(err)
	}
	if err := check.Order("id").Find(&dbBacks).Error; err != nil {
		t.Fatal(err)
	}
	for _, b := range dbBacks {
		if acked := h.last(row{"back_items", b.ID}); b.Ver < acked {
			t.Errorf("back item %d: Postgres has version %d, but version %d was acknowledged: a write-back write was lost", b.ID, b.Ver, acked)
		}
	}
	deadline := time.Now().Add(quiescence)
	for _, it := range dbItems {
		awaitCoherent(t, ctx, rdb, deadline, "item", it.ID, it.Ver, items.Key, func() (int64, error) {
			got, _, err := items.Get(ctx, it.ID)
			return got.Ver, err
		})
	}
	for _, b := range dbBacks {
		awaitCoherent(t, ctx, rdb, deadline, "back item", b.ID, b.Ver, backs.Key, func() (int64, error) {
			got, _, err := backs.Get(ctx, b.ID)
			return got.Ver, err
		})
	}
	odds, err := readthrough.Register[OddItem](checker, readthrough.ModelOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var dbOdds []OddItem
	if err := check.Order("shard, code").Find(&dbOdds).Error; err != nil {
		t.Fatal(err)
	}
	if len(dbOdds) != nOddShards*nOddCodes {
		t.Fatalf("%d odd items in Postgres, want %d", len(dbOdds), nOddShards*nOddCodes)
	}
	for _, o := range dbOdds {
		var n int
		fmt.Sscanf(o.Code, "c%d", &n)
		id := oddID(o.Shard, n)
		awaitCoherent(t, ctx, rdb, deadline, "odd item", id, o.Ver, func(any) (string, error) { return odds.Key(oddKey(id)) }, func() (int64, error) {
			got, _, err := odds.Get(ctx, oddKey(id))
			return got.Ver, err
		})
	}

	// Soft items: the cache entry, read in either scope, gives what the uncached GORM
	// reads give; the final version of each row is recorded if its commit result was
	// lost (Postgres killed) and no later write recorded it.
	softs, err := readthrough.Register[SoftItem](checker, readthrough.ModelOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var dbSofts []SoftItem
	if err := check.Unscoped().Order("id").Find(&dbSofts).Error; err != nil {
		t.Fatal(err)
	}
	if len(dbSofts) != nSoftItems {
		t.Fatalf("%d soft items in Postgres, want %d", len(dbSofts), nSoftItems)
	}
	softDeleted := 0
	for _, s := range dbSofts {
		if s.Ver > h.last(row{"soft_items", s.ID}) {
			h.committedState(row{"soft_items", s.ID}, s.Ver, s.DeletedAt.Valid, time.Now())
		}
		if s.DeletedAt.Valid {
			softDeleted++
		}
		awaitSoftCoherent(t, ctx, check, softs, deadline, s.ID)
	}

	// Keyed items: every row by id, every code and every group read through the cache
	// equal Postgres; versions whose commit result was lost are recorded first.
	keyed, err := readthrough.Register[KeyedItem](checker, keyedOptions())
	if err != nil {
		t.Fatal(err)
	}
	var dbKeyed []KeyedItem
	if err := check.Order("id").Find(&dbKeyed).Error; err != nil {
		t.Fatal(err)
	}
	if len(dbKeyed) != nKeyed {
		t.Fatalf("%d keyed items in Postgres, want %d", len(dbKeyed), nKeyed)
	}
	kw.recover(dbKeyed)
	for _, k := range dbKeyed {
		awaitCoherent(t, ctx, rdb, deadline, "keyed item", k.ID, k.Ver, keyed.Key, func() (int64, error) {
			got, _, err := keyed.Get(ctx, k.ID)
			return got.Ver, err
		})
	}
	awaitLookupsCoherent(t, ctx, keyed, dbKeyed, deadline)

	// Every read. Rows written outside write-back: stale by no more than the margin
	// beyond the downtime of the worker, Redis or Postgres in the read's window; soft
	// items also never in a state no version had. Write-back rows: never older than a write
	// acknowledged before the read began.
	h.sort()
	// A read may be stale by the margin plus the downtime within its window (from the
	// commit it missed to its start): an outage elsewhere in the run excuses nothing.
	// (Postgres takes seconds to come back from a kill: a bound of the longest downtime
	// for every read would let a broken invalidation pass.)
	var worst, worstBack, worstExcess time.Duration
	var over, overBack int
	var wrong int
	h.mu.Lock()
	for _, r := range h.reads {
		if why := h.wrongState(r); why != "" {
			wrong++
			if wrong <= 5 {
				t.Errorf("%s %d: a read that began at %s returned %s", r.row.table, r.row.id, r.start.Format("15:04:05.000000"), why)
			}
			continue
		}
		s := h.staleness(r)
		if r.row.table == "back_items" {
			worstBack = max(worstBack, s)
			if s > 0 {
				overBack++
				if overBack <= 5 {
					t.Errorf("back item %d: a read that began at %s returned version %d, %v after a newer one was acknowledged",
						r.row.id, r.start.Format("15:04:05.000000"), r.ver, s)
				}
			}
			continue
		}
		worst = max(worst, s)
		excess := s - down.overlap(r.start.Add(-s), r.start)
		worstExcess = max(worstExcess, excess)
		if excess > margin {
			over++
			if over <= 5 {
				what := fmt.Sprintf("version %d", r.ver)
				if r.absent {
					what = "no row"
				}
				t.Errorf("%s %d: a read that began at %s returned %s, %v stale, %v beyond the downtime in that window (margin %v)",
					r.row.table, r.row.id, r.start.Format("15:04:05.000000"), what, s, excess, margin)
			}
		}
	}
	nReads := len(h.reads) + len(h.lookups)
	var lookupWrong, codeWrong, codeReads, groupReads, members int
	for _, l := range h.lookups {
		if l.byCode {
			codeReads++
		} else {
			groupReads++
			members += len(l.rows)
		}
		why := h.lookupViolation(l, &down)
		if why == "" {
			continue
		}
		lookupWrong++
		if l.byCode {
			codeWrong++
		}
		if lookupWrong <= 5 {
			what := fmt.Sprintf("by group %d", l.grp)
			if l.byCode {
				what = "by code " + l.code
			}
			report := t.Errorf
			if control {
				report = t.Logf
			}
			report("a lookup %s that began at %s returned %s", what, l.start.Format("15:04:05.000000"), why)
		}
	}
	var softReads, softAbsent int
	for _, r := range h.reads {
		if r.row.table == "soft_items" {
			softReads++
			if r.absent {
				softAbsent++
			}
		}
	}
	softDeletes := 0
	for r, cs := range h.commits {
		if r.table == "soft_items" {
			for _, c := range cs {
				if c.deleted {
					softDeletes++
				}
			}
		}
	}
	h.mu.Unlock()

	counts := map[string]map[string]int64{}
	var libWrites int64
	for _, p := range procs {
		if counts[p.role] == nil {
			counts[p.role] = map[string]int64{}
		}
		for k, n := range p.counts { // a role's processes, the killed ones included
			counts[p.role][k] += n
		}
		libWrites += p.counts["writes"]
	}
	t.Logf("torture %v, %d cache processes: %d reads, %d library writes, %d raw-SQL writes (%d partition TRUNCATEs, %d refused with Postgres down), %d worker kills, %d Redis restarts (%d of them SIGKILLs), %d Postgres SIGKILLs, %d write-back processes SIGKILLed; %d soft deletes, %d soft-item reads (%d found no row), %d of %d rows soft-deleted at the end; worst staleness %v (longest downtime %v), worst beyond the downtime in its window %v (margin %v), write-back rows %v (bound 0)",
		duration, len(procs), nReads, libWrites, sqlWrites.Load(), truncates.Load(), pgRefused.Load(), workerKills.Load(), redisRestarts.Load(), redisKills.Load(), pgKills.Load(), appKills.Load(),
		softDeletes, softReads, softAbsent, softDeleted, nSoftItems,
		worst.Round(time.Millisecond), down.longest().Round(time.Millisecond), worstExcess.Round(time.Millisecond), margin, worstBack)
	t.Logf("keyed items: %d lookups by code, %d by group (%d rows returned); %d code swaps, %d group moves, %d value writes by raw SQL; %d lookups wrong (%d by code, %d by group)",
		codeReads, groupReads, members, kw.swaps, kw.moves, kw.writes, lookupWrong, codeWrong, lookupWrong-codeWrong)
	for role, c := range counts {
		t.Logf("  %-13s %v", role, c)
	}
	// The near processes' reads are checked as every other read; a run in which their
	// near tier answered none would check nothing of it.
	var nearHits, nearFlushes int64
	for role, c := range counts {
		if nearRole(role) {
			nearHits += c["nearhits"]
			nearFlushes += c["nearflushes"]
		}
	}
	t.Logf("near cache (%s and %s processes): %d near hits, %d near-tier flushes", roleInvalidate, roleWriteThrough, nearHits, nearFlushes)
	if nearHits == 0 {
		t.Errorf("the near processes (%s, %s) made no near hit: their near tier was never used", roleInvalidate, roleWriteThrough)
	}
	switch {
	case control && lookupWrong == 0:
		t.Errorf("control (%s=unchecked): lookups without the check on read, yet the checker found none wrong", envControl)
	case control:
		t.Logf("control (%s=unchecked): the checker found %d lookups wrong, as it must", envControl, lookupWrong)
	case lookupWrong > 0:
		t.Errorf("%d lookups by code or by group returned a wrong answer", lookupWrong)
	}
	if over > 0 {
		t.Errorf("%d reads returned a row stale by more than %v beyond the downtime in their window", over, margin)
	}
	if wrong > 0 {
		t.Errorf("%d reads of soft items returned a state no version had", wrong)
	}
	if pgKills.Load() == 0 {
		// Without a Postgres kill no read or write may fail for Postgres being down:
		// the tolerance is for the kills only.
		n := pgRefused.Load()
		for _, c := range counts {
			n += c["pgdown"]
		}
		if n > 0 {
			t.Errorf("%d reads or writes failed for Postgres being down, but it was never killed", n)
		}
	}
	if overBack > 0 {
		t.Errorf("%d reads of write-back rows missed an acknowledged write", overBack)
	}
	backAcks := 0 // write-back writes acknowledged, by every write-back process
	h.mu.Lock()
	for r, cs := range h.commits {
		if r.table == "back_items" {
			backAcks += len(cs) - 1
		}
	}
	h.mu.Unlock()
	// A short run on a slow machine may see one kind of fault besides the Postgres kill
	// (which the chaos waits for); it must see some.
	if nReads == 0 || workerKills.Load()+redisRestarts.Load()+appKills.Load() == 0 || pgKills.Load() == 0 || backAcks == 0 || softDeletes == 0 || softAbsent == 0 ||
		codeReads == 0 || groupReads == 0 || kw.swaps == 0 || kw.moves == 0 {
		t.Fatal("the torture did nothing: no reads, no faults, no Postgres kill, no write-back writes, no soft deletes read, no lookups, or no swaps or moves")
	}
}

// awaitCoherent waits until the row's cache entry is absent or holds version want.
func awaitCoherent(t *testing.T, ctx context.Context, rdb *redis.Client, deadline time.Time, what string, id, want int64,
	key func(any) (string, error), get func() (int64, error)) {
	t.Helper()
	k, err := key(id)
	if err != nil {
		t.Fatal(err)
	}
	for {
		n, err := rdb.Exists(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
		ver, err := get()
		if err != nil {
			t.Fatal(fmt.Errorf("%s %d: %w", what, id, err))
		}
		if ver == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s %d: cache still holds version %d %v after the writes stopped (Postgres %d)", what, id, ver, quiescence, want)
		}
		sleep(ctx, 20*time.Millisecond)
	}
}

// awaitSoftCoherent waits until the soft item's cache entry is absent or gives, in
// both scopes, what the uncached GORM reads give: Peek (the row as cached, soft-deleted
// or not) equals the unscoped read, and Get in the default scope finds the row exactly
// when GORM's First does.
func awaitSoftCoherent(t *testing.T, ctx context.Context, db *gorm.DB, softs *readthrough.Repository[SoftItem], deadline time.Time, id int64) {
	t.Helper()
	for {
		why, err := softIncoherence(ctx, db, softs, id)
		if err != nil {
			t.Fatal(err)
		}
		if why == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("soft item %d: %s %v after the writes stopped", id, why, quiescence)
		}
		sleep(ctx, 20*time.Millisecond)
	}
}

// softIncoherence returns how the soft item's cache entry differs from Postgres, or ""
// when it is absent or agrees.
func softIncoherence(ctx context.Context, db *gorm.DB, softs *readthrough.Repository[SoftItem], id int64) (string, error) {
	cached, ok, isCached, err := softs.Peek(ctx, id)
	if err != nil || !isCached {
		return "", err
	}
	var all, scoped []SoftItem
	if err := db.WithContext(ctx).Unscoped().Where("id = ?", id).Find(&all).Error; err != nil {
		return "", err
	}
	if err := db.WithContext(ctx).Where("id = ?", id).Find(&scoped).Error; err != nil {
		return "", err
	}
	if len(all) != 1 {
		return "", fmt.Errorf("soft item %d: %d rows in Postgres", id, len(all))
	}
	pg := all[0]
	if !ok || cached.Ver != pg.Ver || cached.Val != pg.Val || cached.DeletedAt.Valid != pg.DeletedAt.Valid ||
		!cached.DeletedAt.Time.Equal(pg.DeletedAt.Time) {
		return fmt.Sprintf("cache holds %+v (found %v), the unscoped read %+v", cached, ok, pg), nil
	}
	got, found, err := softs.Get(ctx, id)
	if err != nil {
		return "", err
	}
	if found != (len(scoped) == 1) || (found && got.Ver != scoped[0].Ver) {
		return fmt.Sprintf("Get in the default scope finds %v (%+v), GORM's scoped read %d rows", found, got, len(scoped)), nil
	}
	return "", nil
}

// awaitLookupsCoherent waits until a lookup of every code, and a list of every group,
// through the cache gives what Postgres holds (rows, at the versions in db, in id order).
func awaitLookupsCoherent(t *testing.T, ctx context.Context, keyed *readthrough.Repository[KeyedItem], db []KeyedItem, deadline time.Time) {
	t.Helper()
	for {
		why, err := lookupIncoherence(ctx, keyed, db)
		if err != nil {
			t.Fatal(err)
		}
		if why == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("keyed items: %s %v after the writes stopped", why, quiescence)
		}
		sleep(ctx, 20*time.Millisecond)
	}
}

// lookupIncoherence returns the first lookup whose answer differs from Postgres's rows
// db, or "" when all agree.
func lookupIncoherence(ctx context.Context, keyed *readthrough.Repository[KeyedItem], db []KeyedItem) (string, error) {
	groups := make([][]found, nGroups)
	for _, want := range db {
		groups[want.Grp] = append(groups[want.Grp], found{want.ID, want.Ver})
		got, ok, err := keyed.By("Code").Get(ctx, want.Code)
		if err != nil {
			return "", fmt.Errorf("lookup by code %s: %w", want.Code, err)
		}
		if !ok || got.ID != want.ID || got.Ver != want.Ver {
			return fmt.Sprintf("the lookup by code %s gives %+v (found %v), Postgres %+v", want.Code, got, ok, want), nil
		}
	}
	for g, want := range groups {
		rows, err := keyed.ListBy("Grp").Get(ctx, int64(g))
		if err != nil {
			return "", fmt.Errorf("list by group %d: %w", g, err)
		}
		got := make([]found, len(rows))
		for i, r := range rows {
			got[i] = found{r.ID, r.Ver}
		}
		if !slices.Equal(got, want) {
			return fmt.Sprintf("the list by group %d gives (id, ver) %v, Postgres %v", g, got, want), nil
		}
	}
	return "", nil
}
