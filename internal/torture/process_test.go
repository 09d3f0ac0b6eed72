package torture

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/pgcache/pgcache/readthrough"
	"github.com/pgcache/pgcache/writepolicy"
)

// Item is written by every policy but write-back, and by raw SQL. Ver grows by one with
// every write of the row, so the checker can tell how old a read was.
type Item struct {
	ID  int64 `gorm:"primaryKey"`
	Ver int64
	Val int64
}

// BackItem is written only under write-back, by one process: raw SQL written over a
// pending write-back write is overwritten by the flush, by design.
type BackItem struct {
	ID  int64 `gorm:"primaryKey"`
	Ver int64
	Val int64
}

// OddItem is a row of a table shaped as real schemas are, not as the code was first
// written for: partitioned by shard, REPLICA IDENTITY FULL, a composite key declared
// (Shard, Code) over columns (code, ..., shard), and a char(6) code that Postgres pads.
// It is written by raw SQL only, TRUNCATEs of a partition included (each followed, in
// its transaction, by the rows again with their next versions).
type OddItem struct {
	Shard int32  `gorm:"primaryKey;autoIncrement:false"`
	Code  string `gorm:"primaryKey"`
	Ver   int64
	Val   int64
}

// oddSchema creates the odd_items table with its rows at version 1.
var oddSchema = []string{
	`CREATE TABLE odd_items (code char(6) NOT NULL, ver bigint NOT NULL, val bigint NOT NULL, shard int NOT NULL,
		PRIMARY KEY (shard, code)) PARTITION BY LIST (shard)`,
	`CREATE TABLE odd_items_0 PARTITION OF odd_items FOR VALUES IN (0)`,
	`CREATE TABLE odd_items_1 PARTITION OF odd_items FOR VALUES IN (1)`,
	`ALTER TABLE odd_items REPLICA IDENTITY FULL`,
	`ALTER TABLE odd_items_0 REPLICA IDENTITY FULL`,
	`ALTER TABLE odd_items_1 REPLICA IDENTITY FULL`,
	`INSERT INTO odd_items SELECT 'c' || n, 1, 0, s FROM generate_series(0, 1) s, generate_series(1, 10) n`,
}

// oddID numbers the odd items for the history: shard*100 + n for code "c<n>".
func oddID(shard int32, n int) int64 { return int64(shard)*100 + int64(n) }

// oddKey is the id Get takes for odd item id, the code unpadded as callers write it.
func oddKey(id int64) []any { return []any{int32(id / 100), fmt.Sprintf("c%d", id%100)} }

const (
	nItems     = 40
	nBackItems = 20
	nOddShards = 2
	nOddCodes  = 10
)

// Roles of cache processes: how their writer writes.
const (
	roleInvalidate   = "invalidate"    // Save in a transaction, invalidate policy
	roleWriteThrough = "write-through" // Save in a transaction, write-through policy
	roleRaw          = "raw"           // raw SQL, then Invalidate
	roleWriteBack    = "write-back"    // Save of BackItem, write-back policy
)

// The environment of a cache process, set by startCache.
const (
	envRole     = "PGCACHE_TORTURE_ROLE"
	envPostgres = "PGCACHE_TORTURE_POSTGRES"
	envRedis    = "PGCACHE_TORTURE_REDIS"
	envPrefix   = "PGCACHE_TORTURE_PREFIX"
	envFor      = "PGCACHE_TORTURE_FOR"
	// envVersions is where a write-back process's versions start: a process started
	// after one was killed writes versions above all of its predecessor's.
	envVersions = "PGCACHE_TORTURE_VERSIONS"
)

// report writes the lines a cache process tells the test: "c table id ver unixnano" for
// a committed or acknowledged write, "r table id ver unixnano" for a read (the time it
// began), "n name count" for its counts, "e message" for the failure that ended it.
type report struct {
	mu sync.Mutex
	w  *bufio.Writer
}

func (r *report) line(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fmt.Fprintf(r.w, format+"\n", args...)
	if format[0] == 'c' {
		// A commit or acknowledgement reaches the test at once: the process may be
		// killed next, and what it acknowledged must be checked.
		_ = r.w.Flush()
	}
}

func (r *report) flush() {
	r.mu.Lock()
	defer r.mu.Unlock()
	_ = r.w.Flush()
}

// cacheProcess is the main of a cache process: two readers of both tables and one
// writer in the role's way, until the time is up. It returns the exit code.
func cacheProcess(getenv func(string) string, stdout io.Writer) int {
	rep := &report{w: bufio.NewWriterSize(stdout, 1<<16)}
	defer rep.flush()
	if err := runCache(getenv, rep); err != nil {
		rep.line("e %s", strings.ReplaceAll(err.Error(), "\n", " "))
		return 1
	}
	return 0
}

func runCache(getenv func(string) string, rep *report) error {
	role := getenv(envRole)
	d, err := time.ParseDuration(getenv(envFor))
	if err != nil {
		return fmt.Errorf("%s: %v", envFor, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()

	db, err := gorm.Open(postgres.Open(getenv(envPostgres)), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		return err
	}
	rdb := redis.NewClient(&redis.Options{Addr: getenv(envRedis), ContextTimeoutEnabled: true, MaxRetries: -1})
	defer rdb.Close()
	cache, err := readthrough.New(db, rdb, readthrough.Options{Prefix: getenv(envPrefix), RedisTimeout: 200 * time.Millisecond})
	if err != nil {
		return err
	}
	policy := writepolicy.Invalidate
	if role == roleWriteThrough {
		policy = writepolicy.WriteThrough
	}
	items, err := readthrough.Register[Item](cache, readthrough.ModelOptions{TTL: time.Hour, WaitTimeout: 200 * time.Millisecond, WritePolicy: policy})
	if err != nil {
		return err
	}
	backs, err := readthrough.Register[BackItem](cache, readthrough.ModelOptions{TTL: time.Hour, WaitTimeout: 200 * time.Millisecond, WritePolicy: writepolicy.WriteBack})
	if err != nil {
		return err
	}

	odds, err := readthrough.Register[OddItem](cache, readthrough.ModelOptions{TTL: time.Hour, WaitTimeout: 200 * time.Millisecond})
	if err != nil {
		return err
	}

	var (
		reads, writes, refused, unavailable, slow atomic.Int64
		wg                                        sync.WaitGroup
		errOnce                                   sync.Once
		failure                                   error
	)
	fail := func(err error) {
		errOnce.Do(func() { failure = err; cancel() })
	}
	for range 2 {
		wg.Go(func() {
			for ctx.Err() == nil {
				start := time.Now()
				switch n := rand.IntN(6); {
				case n == 0:
					id := oddID(rand.Int32N(nOddShards), rand.IntN(nOddCodes)+1)
					it, ok, err := odds.Get(ctx, oddKey(id))
					if ctx.Err() != nil {
						return
					}
					if errors.Is(err, context.DeadlineExceeded) {
						slow.Add(1) // see below
						continue
					}
					if err != nil || !ok {
						fail(fmt.Errorf("%s: Get odd item %d = %v, %v", role, id, ok, err))
						return
					}
					rep.line("r odd_items %d %d %d", id, it.Ver, start.UnixNano())
				case n > 2:
					id := rand.Int64N(nItems) + 1
					it, ok, err := items.Get(ctx, id)
					if ctx.Err() != nil {
						return
					}
					if errors.Is(err, context.DeadlineExceeded) {
						// The load waited out LoadTimeout (behind a TRUNCATE's lock, or on a
						// loaded machine): slow, not wrong. Only what a read returns is
						// checked.
						slow.Add(1)
						continue
					}
					if err != nil || !ok {
						fail(fmt.Errorf("%s: Get item %d = %v, %v", role, id, ok, err))
						return
					}
					rep.line("r items %d %d %d", id, it.Ver, start.UnixNano())
				default:
					id := rand.Int64N(nBackItems) + 1
					it, ok, err := backs.Get(ctx, id)
					if ctx.Err() != nil {
						return
					}
					if errors.Is(err, readthrough.ErrRedisUnavailable) {
						unavailable.Add(1) // Redis is restarting: write-back rows fail loudly
						continue
					}
					if err != nil || !ok {
						fail(fmt.Errorf("%s: Get back item %d = %v, %v", role, id, ok, err))
						return
					}
					rep.line("r back_items %d %d %d", id, it.Ver, start.UnixNano())
				}
				reads.Add(1)
			}
		})
	}
	base, _ := strconv.ParseInt(getenv(envVersions), 10, 64)
	wg.Go(func() {
		next := make(map[int64]int64) // write-back: the next version of each row
		for ctx.Err() == nil {
			var err error
			switch role {
			case roleWriteBack:
				id := rand.Int64N(nBackItems) + 1
				ver := max(next[id], base+2)
				next[id] = ver + 1 // a failed Save may still have happened: never reuse its version
				err = backs.Save(ctx, &BackItem{ID: id, Ver: ver, Val: rand.Int64()})
				if err == nil {
					rep.line("c back_items %d %d %d", id, ver, time.Now().UnixNano())
				} else if ctx.Err() == nil {
					refused.Add(1) // Redis is restarting: Save fails loudly
					err = nil
				}
			case roleRaw:
				id := rand.Int64N(nItems) + 1
				var ver int64
				err = db.WithContext(ctx).Raw(`UPDATE items SET ver = ver + 1, val = ? WHERE id = ? RETURNING ver`, rand.Int64(), id).Scan(&ver).Error
				if err == nil {
					rep.line("c items %d %d %d", id, ver, time.Now().UnixNano())
					// A Redis failure here leaves the row to the invalidator.
					_ = items.Invalidate(ctx, id)
				}
			default:
				err = saveNext(ctx, db, items, rep, rand.Int64N(nItems)+1)
			}
			if err != nil {
				if ctx.Err() == nil {
					fail(fmt.Errorf("%s: write: %w", role, err))
				}
				return
			}
			writes.Add(1)
			sleep(ctx, time.Duration(rand.Int64N(int64(5*time.Millisecond))))
		}
	})
	wg.Wait()
	if failure != nil {
		return failure
	}
	rep.line("n reads %d", reads.Load())
	rep.line("n writes %d", writes.Load())
	rep.line("n refused %d", refused.Load())
	rep.line("n unavailable %d", unavailable.Load())
	rep.line("n slow %d", slow.Load())
	return nil
}

// saveNext writes the row's next version with the repository's Save inside a
// transaction (the row locked, so versions stay serial); the policy's cache effect runs
// after the commit, and the version is reported after it.
func saveNext(ctx context.Context, db *gorm.DB, repo *readthrough.Repository[Item], rep *report, id int64) error {
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
	rep.line("c items %d %d %d", id, next.Ver, time.Now().UnixNano())
	return nil
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
