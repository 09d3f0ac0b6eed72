package torture

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
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

	"github.com/pgcache/pgcache/integration"
	"github.com/pgcache/pgcache/readthrough"
	"github.com/pgcache/pgcache/writepolicy"
)

var servers integration.Shared

func TestMain(m *testing.M) { os.Exit(servers.Run(m)) }

// Item is the tortured model. Ver grows by one with every write of the row, so the
// checker can tell how old a read was.
type Item struct {
	ID  int64 `gorm:"primaryKey"`
	Ver int64
	Val int64
}

const (
	nRows      = 40
	nInstances = 3
	// margin is how stale a read may be beyond the worker's own downtime: the
	// invalidation lag with Redis restarting and reconnect backoff included.
	margin = 3 * time.Second
)

// history records every committed version and every read.
type history struct {
	mu      sync.Mutex
	commits map[int64][]commit // per row, in version order
	reads   []read
}

type commit struct {
	ver int64
	at  time.Time // after COMMIT returned
}

type read struct {
	id, ver int64
	start   time.Time // before the read began
}

func (h *history) committed(id, ver int64, at time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.commits[id] = append(h.commits[id], commit{ver, at})
}

func (h *history) read(id, ver int64, start time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.reads = append(h.reads, read{id, ver, start})
}

// staleness of a read: how long before the read began a newer version than the one
// it returned had committed (0 when none had).
func (h *history) staleness(r read) time.Duration {
	cs := h.commits[r.id]
	i, _ := slices.BinarySearchFunc(cs, r.ver+1, func(c commit, v int64) int { return int(c.ver - v) })
	if i >= len(cs) || cs[i].ver != r.ver+1 || !cs[i].at.Before(r.start) {
		return 0
	}
	return r.start.Sub(cs[i].at)
}

// downtime records when the worker was not running.
type downtime struct {
	mu    sync.Mutex
	spans [][2]time.Time
}

func (d *downtime) add(from, to time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.spans = append(d.spans, [2]time.Time{from, to})
}

// longest returns the longest span.
func (d *downtime) longest() time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	var m time.Duration
	for _, s := range d.spans {
		m = max(m, s[1].Sub(s[0]))
	}
	return m
}

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
	pg := servers.Postgres(t).NewDatabase(t)
	rd := integration.NewRedis(t, integration.RedisOptions{})
	const prefix = "torture"
	ctx, cancel := context.WithTimeout(context.Background(), duration+3*time.Minute)
	defer cancel()

	setup, err := gorm.Open(postgres.Open(pg.RoleURL), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		t.Fatal(err)
	}
	if err := setup.AutoMigrate(&Item{}); err != nil {
		t.Fatal(err)
	}
	if err := setup.Exec(`INSERT INTO items SELECT g, 1, 0 FROM generate_series(1, ?) g`, nRows).Error; err != nil {
		t.Fatal(err)
	}
	h := &history{commits: map[int64][]commit{}}
	for id := int64(1); id <= nRows; id++ {
		h.committed(id, 1, time.Now())
	}

	// The worker, as a process of its own.
	var down downtime
	worker := startWorker(t, bin, pg.RoleURL, rd.Addr(), prefix, "slot_"+pg.Name)
	worker.waitReady(t)

	// Several instances, each its own pool, Redis client and cache: several processes.
	type instance struct {
		db   *gorm.DB
		repo *readthrough.Repository[Item]
	}
	var insts []instance
	// Instance 0 writes with the invalidate policy, instance 1 with write-through, both
	// through Save inside a transaction; instance 2 commits raw SQL and then calls
	// Invalidate, as an application that writes around the library would.
	policies := []writepolicy.Policy{writepolicy.Invalidate, writepolicy.WriteThrough, writepolicy.Invalidate}
	for i := range nInstances {
		db, err := gorm.Open(postgres.Open(pg.RoleURL), &gorm.Config{Logger: logger.Discard})
		if err != nil {
			t.Fatal(err)
		}
		rdb := redis.NewClient(&redis.Options{Addr: rd.Addr(), ContextTimeoutEnabled: true, MaxRetries: -1})
		t.Cleanup(func() { rdb.Close() })
		cache, err := readthrough.New(db, rdb, readthrough.Options{Prefix: prefix, RedisTimeout: 200 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		repo, err := readthrough.Register[Item](cache, readthrough.ModelOptions{TTL: time.Hour, WaitTimeout: 200 * time.Millisecond, WritePolicy: policies[i]})
		if err != nil {
			t.Fatal(err)
		}
		insts = append(insts, instance{db, repo})
	}

	var (
		reads, libWrites, sqlWrites, workerKills, redisRestarts atomic.Int64
		wg                                                      sync.WaitGroup
	)
	chaos, stopChaos := context.WithTimeout(ctx, duration)
	defer stopChaos()
	errs := make(chan error, 64)
	fail := func(err error) {
		select {
		case errs <- err:
		default:
		}
	}

	// write commits one new version of a row and records it.
	write := func(db *gorm.DB, id int64) (int64, error) {
		var ver int64
		err := db.WithContext(ctx).Raw(`UPDATE items SET ver = ver + 1, val = ? WHERE id = ? RETURNING ver`, rand.Int64(), id).Scan(&ver).Error
		if err == nil {
			h.committed(id, ver, time.Now())
		}
		return ver, err
	}

	for i, in := range insts {
		// Readers.
		for range 2 {
			wg.Go(func() {
				for chaos.Err() == nil {
					id := rand.Int64N(nRows) + 1
					start := time.Now()
					it, ok, err := in.repo.Get(ctx, id)
					if err != nil || !ok {
						fail(fmt.Errorf("instance %d: Get(%d) = %v, %v", i, id, ok, err))
						return
					}
					h.read(id, it.Ver, start)
					reads.Add(1)
				}
			})
		}
		// A writer through the library.
		wg.Go(func() {
			for chaos.Err() == nil {
				id := rand.Int64N(nRows) + 1
				if i == 2 {
					if _, err := write(in.db, id); err != nil {
						fail(err)
						return
					}
					// A Redis failure here leaves the row to the invalidator.
					_ = in.repo.Invalidate(ctx, id)
				} else if err := saveNext(ctx, in.db, in.repo, h, id); err != nil {
					fail(fmt.Errorf("instance %d (%v): %w", i, policies[i], err))
					return
				}
				libWrites.Add(1)
				sleep(chaos, time.Duration(rand.Int64N(int64(5*time.Millisecond))))
			}
		})
	}
	// A raw-SQL writer, as another service would be.
	wg.Go(func() {
		for chaos.Err() == nil {
			if _, err := write(setup, rand.Int64N(nRows)+1); err != nil {
				fail(err)
				return
			}
			sqlWrites.Add(1)
			sleep(chaos, time.Duration(rand.Int64N(int64(3*time.Millisecond))))
		}
	})
	// Chaos: kill the worker with SIGKILL and restart it; restart Redis.
	wg.Go(func() {
		for chaos.Err() == nil {
			sleep(chaos, 500*time.Millisecond+time.Duration(rand.Int64N(int64(time.Second))))
			if chaos.Err() != nil {
				return
			}
			if rand.IntN(3) == 0 {
				if err := rd.Stop(ctx); err != nil {
					fail(err)
					return
				}
				sleep(chaos, 200*time.Millisecond)
				if err := rd.Start(ctx); err != nil {
					fail(err)
					return
				}
				redisRestarts.Add(1)
				continue
			}
			from := time.Now()
			worker.kill()
			worker = startWorker(t, bin, pg.RoleURL, rd.Addr(), prefix, "slot_"+pg.Name)
			if err := worker.awaitReady(ctx); err != nil {
				fail(err)
				return
			}
			down.add(from, time.Now())
			workerKills.Add(1)
		}
	})
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}

	// Quiescence: the worker catches up; then every cached row is absent or current.
	worker.waitReady(t)
	var dbRows []Item
	if err := setup.Order("id").Find(&dbRows).Error; err != nil {
		t.Fatal(err)
	}
	check := insts[0].repo
	rdb := rd.Client(t)
	deadline := time.Now().Add(30 * time.Second)
	for _, row := range dbRows {
		for {
			stale, err := cachedStale(ctx, rdb, check, row)
			if err != nil {
				t.Fatal(err)
			}
			if !stale {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("row %d: cache still holds an old version 30s after the writes stopped (db ver %d)", row.ID, row.Ver)
			}
			sleep(ctx, 20*time.Millisecond)
		}
	}

	// Every read: no older than the worker's longest downtime plus the margin.
	bound := down.longest() + margin
	var worst time.Duration
	var over int
	h.mu.Lock()
	// Writers record concurrently, so a row's commits may have been appended out of
	// version order.
	for _, cs := range h.commits {
		slices.SortFunc(cs, func(a, b commit) int { return int(a.ver - b.ver) })
	}
	for _, r := range h.reads {
		s := h.staleness(r)
		worst = max(worst, s)
		if s > bound {
			over++
		}
	}
	h.mu.Unlock()
	t.Logf("torture %v: %d reads, %d library writes (invalidate, write-through, raw+Invalidate), %d raw-SQL writes, %d worker kills, %d Redis restarts; worst staleness %v (bound %v)",
		duration, reads.Load(), libWrites.Load(), sqlWrites.Load(), workerKills.Load(), redisRestarts.Load(), worst.Round(time.Millisecond), bound)
	if over > 0 {
		t.Fatalf("%d reads returned a row older than %v", over, bound)
	}
	if reads.Load() == 0 || workerKills.Load()+redisRestarts.Load() == 0 {
		t.Fatal("the torture did nothing: no reads or no faults")
	}
}

// saveNext writes the row's next version with the repository's Save inside a
// transaction (the row locked, so versions stay serial); the policy's cache effect runs
// after the commit.
func saveNext(ctx context.Context, db *gorm.DB, repo *readthrough.Repository[Item], h *history, id int64) error {
	var next Item
	err := readthrough.Transaction(ctx, db, func(tx *readthrough.Tx) error {
		var cur Item
		if err := tx.DB().Raw(`SELECT * FROM items WHERE id = ? FOR UPDATE`, id).Scan(&cur).Error; err != nil {
			return err
		}
		next = Item{ID: id, Ver: cur.Ver + 1, Val: rand.Int64()}
		return repo.In(tx).Save(ctx, &next)
	})
	if err != nil {
		return err
	}
	// Recorded after the cache effect: later than the commit, never earlier.
	h.committed(id, next.Ver, time.Now())
	return nil
}

// cachedStale reports whether the cache holds a version of row other than the database's.
func cachedStale(ctx context.Context, rdb *redis.Client, repo *readthrough.Repository[Item], row Item) (bool, error) {
	key, err := repo.Key(row.ID)
	if err != nil {
		return false, err
	}
	b, err := rdb.Get(ctx, key).Bytes()
	if err == redis.Nil {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	// The entry is a tag byte and the JSON of the row; compare through a read.
	it, ok, err := repo.Get(ctx, row.ID)
	if err != nil || !ok {
		return false, fmt.Errorf("row %d: %v %v (entry %q)", row.ID, ok, err, b)
	}
	return it.Ver != row.Ver, nil
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// buildWorker builds cmd/pgcache-worker once for the test.
func buildWorker(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "pgcache-worker")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/pgcache/pgcache/cmd/pgcache-worker")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build worker: %v\n%s", err, out)
	}
	return bin
}

type workerProc struct {
	cmd  *exec.Cmd
	addr string
	done chan struct{}
}

func startWorker(t *testing.T, bin, pgURL, redisAddr, prefix, slot string) *workerProc {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cmd := exec.Command(bin, "-postgres", pgURL, "-redis", redisAddr, "-prefix", prefix, "-slot", slot,
		"-tables", "items", "-listen", addr, "-status-interval", "200ms", "-log-level", "warn")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w := &workerProc{cmd: cmd, addr: addr, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(w.done) }()
	t.Cleanup(w.kill)
	return w
}

func (w *workerProc) kill() {
	_ = w.cmd.Process.Signal(syscall.SIGKILL)
	<-w.done
}

func (w *workerProc) awaitReady(ctx context.Context) error {
	c := &http.Client{Timeout: time.Second}
	for {
		if resp, err := c.Get("http://" + w.addr + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		select {
		case <-w.done:
			return fmt.Errorf("worker exited before it was ready")
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (w *workerProc) waitReady(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := w.awaitReady(ctx); err != nil {
		t.Fatal(err)
	}
}
