package torture

import (
	"bufio"
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/redis/go-redis/v9"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/pgcache/pgcache/internal/testhooks"
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

// SoftItem is soft-deletable (gorm.DeletedAt), written through the library by the
// invalidate process only: Delete soft-deletes it, in a transaction that also bumps
// Ver, so a soft delete is a version of its own; Save revives it at the next version.
// Every process reads it in the default scope, where a soft-deleted row is no row.
type SoftItem struct {
	ID        int64 `gorm:"primaryKey"`
	Ver       int64
	Val       int64
	DeletedAt gorm.DeletedAt
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
	nSoftItems = 10
)

// Roles of cache processes: how their writer writes.
const (
	roleInvalidate   = "invalidate"    // Save in a transaction, invalidate policy
	roleWriteThrough = "write-through" // Save in a transaction, write-through policy
	roleRaw          = "raw"           // raw SQL, then Invalidate
	roleWriteBack    = "write-back"    // Save of BackItem, write-back policy
)

// nearRole reports whether the role's process registers its models with a near cache
// (ModelOptions.Near), all but the write-back model, which refuses one.
func nearRole(role string) bool { return role == roleInvalidate || role == roleWriteThrough }

// The environment of a cache process, set by startCache.
const (
	envRole     = "PGCACHE_TORTURE_ROLE"
	envPostgres = "PGCACHE_TORTURE_POSTGRES"
	envRedis    = "PGCACHE_TORTURE_REDIS"
	envPrefix   = "PGCACHE_TORTURE_PREFIX"
	envFor      = "PGCACHE_TORTURE_FOR"
	// envControl, set to "unchecked" for the whole test, makes the cache processes read
	// keyed items with testhooks.Read.Unchecked: lookups return the rows their entries
	// name without the check on read, and the test expects the checker to find it.
	envControl = "PGCACHE_TORTURE_CONTROL"
	// envVersions is where a write-back process's versions start: a process started
	// after one was killed writes versions above all of its predecessor's.
	envVersions = "PGCACHE_TORTURE_VERSIONS"
)

// report writes the lines a cache process tells the test: "c table id ver unixnano" for
// a committed or acknowledged write ("d ..." when the version is a soft delete),
// "r table id ver unixnano" for a read (the time it began), "a table id unixnano" for a
// read that found no row, "u ..." and "g ..." for reads of keyed items by code and by
// group (see readKeyed), "n name count" for its counts, "e message" for the failure
// that ended it.
type report struct {
	mu sync.Mutex
	w  *bufio.Writer
}

func (r *report) line(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fmt.Fprintf(r.w, format+"\n", args...)
	if format[0] == 'c' || format[0] == 'd' {
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

// cacheProcess is the main of a cache process: two readers of the tables (keyed items,
// by id, code and group, in every role but write-back) and one writer in the role's way, until the time is up. It returns the exit code.
func cacheProcess(getenv func(string) string, stdin io.Reader, stdout io.Writer) int {
	rep := &report{w: bufio.NewWriterSize(stdout, 1<<16)}
	defer rep.flush()
	if err := runCache(getenv, stdin, rep); err != nil {
		rep.line("e %s", strings.ReplaceAll(err.Error(), "\n", " "))
		return 1
	}
	return 0
}

func runCache(getenv func(string) string, stdin io.Reader, rep *report) error {
	role := getenv(envRole)
	d, err := time.ParseDuration(getenv(envFor))
	if err != nil {
		return fmt.Errorf("%s: %v", envFor, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	// The test closes stdin to stop the process (or dies, which closes it too); this
	// goroutine ends then.
	go func() {
		_, _ = io.Copy(io.Discard, stdin)
		cancel()
	}()

	rdb := redis.NewClient(&redis.Options{Addr: getenv(envRedis), ContextTimeoutEnabled: true, MaxRetries: -1})
	defer rdb.Close()
	policy := writepolicy.Invalidate
	if role == roleWriteThrough {
		policy = writepolicy.WriteThrough
	}
	// The near processes keep their rows in process too, in front of Redis (write-back
	// models refuse a near cache: theirs stay in Redis only).
	var nearOpts readthrough.NearOptions
	if nearRole(role) {
		nearOpts = readthrough.NearOptions{MaxEntries: 1000}
	}
	var (
		db    *gorm.DB
		cache *readthrough.Cache // closed when the process ends, or when a start fails: it stops the near cache's goroutines
		items *readthrough.Repository[Item]
		backs *readthrough.Repository[BackItem]
		odds  *readthrough.Repository[OddItem]
		softs *readthrough.Repository[SoftItem]
		keyed *readthrough.Repository[KeyedItem] // nil in the write-back process
	)
	open := func() error {
		var err error
		if db, err = gorm.Open(postgres.Open(getenv(envPostgres)), &gorm.Config{Logger: logger.Discard}); err != nil {
			return err
		}
		if cache, err = readthrough.New(db, rdb, readthrough.Options{Prefix: getenv(envPrefix), RedisTimeout: 200 * time.Millisecond}); err != nil {
			return err
		}
		opts := readthrough.ModelOptions{TTL: time.Hour, WaitTimeout: 200 * time.Millisecond, Near: nearOpts}
		if items, err = readthrough.Register[Item](cache, readthrough.ModelOptions{TTL: time.Hour, WaitTimeout: 200 * time.Millisecond, WritePolicy: policy, Near: nearOpts}); err != nil {
			return err
		}
		if backs, err = readthrough.Register[BackItem](cache, readthrough.ModelOptions{TTL: time.Hour, WaitTimeout: 200 * time.Millisecond, WritePolicy: writepolicy.WriteBack}); err != nil {
			return err
		}
		if odds, err = readthrough.Register[OddItem](cache, opts); err != nil {
			return err
		}
		if softs, err = readthrough.Register[SoftItem](cache, opts); err != nil {
			return err
		}
		if role != roleWriteBack {
			ko := keyedOptions()
			ko.Near = nearOpts
			keyed, err = readthrough.Register[KeyedItem](cache, ko)
		}
		return err
	}
	// Postgres may be down (SIGKILLed, in crash recovery) when a process starts: wait
	// for it, as an application would, with a fresh cache each time.
	for {
		err = open()
		if err == nil || !pgUnavailable(err) || ctx.Err() != nil {
			break
		}
		if cache != nil {
			_ = cache.Close()
			cache = nil
		}
		if db != nil {
			if sqlDB, e := db.DB(); e == nil {
				_ = sqlDB.Close()
			}
		}
		sleep(ctx, 50*time.Millisecond)
	}
	if cache != nil {
		defer cache.Close()
	}
	if err != nil && ctx.Err() != nil && pgUnavailable(err) {
		// The process's time ran out while Postgres was still down (a restart takes
		// seconds on a loaded machine): it did nothing, which is not a failure.
		return nil
	}
	if err != nil {
		return fmt.Errorf("start: %w", err)
	}

	var (
		reads, writes, refused, unavailable, slow atomic.Int64
		pgDown                                    atomic.Int64 // reads and writes that failed with Postgres down
		wg                                        sync.WaitGroup
		errOnce                                   sync.Once
		failure                                   error
	)
	fail := func(err error) {
		errOnce.Do(func() { failure = err; cancel() })
	}
	var kc keyedCounts
	lookupCtx := ctx
	if getenv(envControl) == "unchecked" {
		lookupCtx = testhooks.WithRead(ctx, &testhooks.Read{Unchecked: true})
	}
	for range 2 {
		wg.Go(func() {
			for ctx.Err() == nil {
				if keyed != nil && rand.IntN(4) == 0 {
					err := readKeyed(lookupCtx, keyed, rep, &kc)
					switch {
					case ctx.Err() != nil:
						return
					case errors.Is(err, context.DeadlineExceeded):
						slow.Add(1) // see below
						continue
					case err != nil && pgUnavailable(err):
						pgDown.Add(1)
						continue
					case err != nil:
						fail(fmt.Errorf("%s: read keyed item: %w", role, err))
						return
					}
					reads.Add(1)
					continue
				}
				start := time.Now()
				switch n := rand.IntN(7); {
				case n == 6:
					id := rand.Int64N(nSoftItems) + 1
					it, ok, err := softs.Get(ctx, id)
					if ctx.Err() != nil {
						return
					}
					if errors.Is(err, context.DeadlineExceeded) {
						slow.Add(1) // see below
						continue
					}
					if err != nil && pgUnavailable(err) {
						pgDown.Add(1)
						continue
					}
					if err != nil {
						fail(fmt.Errorf("%s: Get soft item %d: %v", role, id, err))
						return
					}
					if ok {
						rep.line("r soft_items %d %d %d", id, it.Ver, start.UnixNano())
					} else {
						rep.line("a soft_items %d %d", id, start.UnixNano())
					}
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
					if err != nil && pgUnavailable(err) {
						pgDown.Add(1) // Postgres is down or recovering: only what a read returns is checked
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
					if err != nil && pgUnavailable(err) {
						pgDown.Add(1)
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
					if err != nil && pgUnavailable(err) {
						pgDown.Add(1) // a miss loads from Postgres
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
			if err != nil && ctx.Err() == nil && pgUnavailable(err) {
				// Postgres is down or recovering: the write may or may not have
				// committed, so it is not recorded (a later read of it is not stale).
				pgDown.Add(1)
				sleep(ctx, 20*time.Millisecond)
				continue
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
	if role == roleInvalidate {
		// The one writer of soft_items: soft deletes and revivals through the library.
		wg.Go(func() {
			w := softWriter{softs: softs, db: db, rep: rep, known: map[int64]int64{}}
			for id := int64(1); id <= nSoftItems; id++ {
				w.known[id] = 1 // the test recorded the rows at version 1
			}
			for ctx.Err() == nil {
				err := w.next(ctx, rand.Int64N(nSoftItems)+1)
				if err != nil && ctx.Err() == nil && pgUnavailable(err) {
					pgDown.Add(1)
					sleep(ctx, 20*time.Millisecond)
					continue
				}
				if err != nil {
					if ctx.Err() == nil {
						fail(fmt.Errorf("%s: soft write: %w", role, err))
					}
					return
				}
				writes.Add(1)
				sleep(ctx, time.Duration(rand.Int64N(int64(5*time.Millisecond))))
			}
		})
	}
	wg.Wait()
	if failure != nil {
		return failure
	}
	rep.line("n reads %d", reads.Load())
	rep.line("n writes %d", writes.Load())
	rep.line("n refused %d", refused.Load())
	rep.line("n unavailable %d", unavailable.Load())
	rep.line("n slow %d", slow.Load())
	rep.line("n pgdown %d", pgDown.Load())
	if nearRole(role) {
		st := cache.Stats()
		rep.line("n nearhits %d", st.NearHits)
		rep.line("n nearmisses %d", st.NearMisses)
		rep.line("n nearinvalidations %d", st.NearInvalidations)
		rep.line("n nearflushes %d", st.NearFlushes)
	}
	if keyed != nil {
		kc.report(rep)
	}
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

// softWriter soft-deletes and revives soft items through the library (invalidate
// policy), one version per write.
type softWriter struct {
	softs *readthrough.Repository[SoftItem]
	db    *gorm.DB
	rep   *report
	known map[int64]int64 // the last version of each row reported
}

// next writes the row's next version: a soft delete of a present row, in the same
// transaction as the bump of its Ver (GORM's Delete sets only deleted_at), or a Save
// that revives a soft-deleted one. A version whose commit result was lost (Postgres
// killed) is reported when the row is next locked: then it had committed, so the
// history holds every version by the end and a read of any state can be judged.
func (w *softWriter) next(ctx context.Context, id int64) error {
	var (
		next    int64
		deleted bool
	)
	err := readthrough.Transaction(ctx, w.db, func(tx *readthrough.Tx) error {
		var cur SoftItem
		if err := tx.DB().Raw(`SELECT * FROM soft_items WHERE id = ? FOR UPDATE`, id).Scan(&cur).Error; err != nil {
			return err
		}
		if cur.ID != id {
			return fmt.Errorf("soft item %d is missing from Postgres", id)
		}
		if cur.Ver != w.known[id] {
			w.commit(id, cur.Ver, cur.DeletedAt.Valid)
			w.known[id] = cur.Ver
		}
		next, deleted = cur.Ver+1, !cur.DeletedAt.Valid
		if deleted {
			if err := tx.DB().Exec(`UPDATE soft_items SET ver = ? WHERE id = ?`, next, id).Error; err != nil {
				return err
			}
			return w.softs.In(tx).Delete(ctx, id)
		}
		return w.softs.In(tx).Save(ctx, &SoftItem{ID: id, Ver: next, Val: rand.Int64()})
	})
	if err != nil {
		return err
	}
	w.commit(id, next, deleted)
	w.known[id] = next
	return nil
}

// commit reports a version of the row, now.
func (w *softWriter) commit(id, ver int64, deleted bool) {
	if deleted {
		w.rep.line("d soft_items %d %d %d", id, ver, time.Now().UnixNano())
	} else {
		w.rep.line("c soft_items %d %d %d", id, ver, time.Now().UnixNano())
	}
}

// pgUnavailable reports whether err says Postgres was unreachable, down or recovering
// (SIGKILLed by the test, then restarted): connections refused or cut, and the server's
// shutdown and startup errors. Any other error is a failure.
func pgUnavailable(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case "57P01", "57P02", "57P03": // admin_shutdown, crash_shutdown, cannot_connect_now
			return true
		}
		return strings.HasPrefix(pe.Code, "08") // connection exception
	}
	var ce *pgconn.ConnectError
	var ne net.Error
	return errors.As(err, &ce) || errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, driver.ErrBadConn) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.EPIPE) || pgconn.SafeToRetry(err) || strings.Contains(err.Error(), "conn closed")
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
