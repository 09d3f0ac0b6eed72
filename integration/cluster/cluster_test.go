package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/pgcache/pgcache/cdc"
	"github.com/pgcache/pgcache/integration"
	"github.com/pgcache/pgcache/invalidator"
	"github.com/pgcache/pgcache/keys"
	"github.com/pgcache/pgcache/readthrough"
	"github.com/pgcache/pgcache/writepolicy"
)

var servers integration.Shared

func TestMain(m *testing.M) { os.Exit(servers.Run(m)) }

type Widget struct {
	ID   int64 `gorm:"primaryKey"`
	Name string
}

// TestCluster runs the library on one real three-master Redis Cluster.
func TestCluster(t *testing.T) {
	cl := integration.NewRedisCluster(t)
	rdb := cl.Client(t)
	t.Run("reads and invalidation", func(t *testing.T) { testReads(t, rdb) })
	t.Run("writes", func(t *testing.T) { testWrites(t, rdb) })
	t.Run("table flush races a fill", func(t *testing.T) { testFlushRace(t, cl) })
	t.Run("lookups", func(t *testing.T) { testLookups(t, rdb) })
	t.Run("responses", func(t *testing.T) { testResponses(t, rdb) })
	t.Run("write-back drops responses", func(t *testing.T) { testWriteBackResponses(t, rdb) })
	t.Run("near cache", func(t *testing.T) { testNear(t, cl) })
	t.Run("near cache client kill", func(t *testing.T) { testNearClientKill(t, cl) })
}

// testReads: reads, multi-gets, fenced fills and change-driven invalidation work on a
// Redis Cluster, where every row's value and lease keys must share a slot and rows spread
// over all three masters.
func testReads(t *testing.T, rdb *redis.ClusterClient) {
	pg := servers.Postgres(t).NewDatabase(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	db, err := gorm.Open(postgres.Open(pg.RoleURL), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.AutoMigrate(&Widget{}); err != nil {
		t.Fatal(err)
	}
	if err := db.Exec(`INSERT INTO widgets SELECT g, 'w' || g FROM generate_series(1, 200) g`).Error; err != nil {
		t.Fatal(err)
	}
	cache, err := readthrough.New(db, rdb, readthrough.Options{Prefix: "cl", RedisTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	repo, err := readthrough.Register[Widget](cache, readthrough.ModelOptions{})
	if err != nil {
		t.Fatal(err)
	}

	// The worker first, so its gap flush comes before the fills.
	w, err := invalidator.NewWorker(rdb, invalidator.WorkerOptions{
		Postgres:    pg.RoleURL,
		Stream:      cdc.Options{Slot: "s_" + pg.Name, Publication: "pgcache", Tables: []string{"widgets"}, StatusInterval: 100 * time.Millisecond},
		Invalidator: invalidator.Options{Prefix: "cl"},
	})
	if err != nil {
		t.Fatal(err)
	}
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("worker: %v", err)
		}
	}()
	integration.Eventually(t, "worker ready", w.Ready)

	ids := make([]any, 200)
	for i := range ids {
		ids[i] = int64(i + 1)
	}
	for round := range 2 {
		rows, err := repo.GetMany(ctx, ids...)
		if err != nil || len(rows) != 200 {
			t.Fatalf("GetMany round %d: %d rows, %v", round, len(rows), err)
		}
	}
	if s := repo.Stats(); s.Hits != 200 || s.Fills != 200 || s.Loads != 1 {
		t.Fatalf("stats %+v, want 200 fills from one query, then 200 hits", s)
	}

	// Rows landed on every master, each row's two keys in one slot.
	perNode := map[string]int{}
	for _, id := range ids {
		key, _ := repo.Key(id)
		if _, _, err := keys.ParseKey(key); err != nil {
			t.Fatal(err)
		}
		if keys.HashSlot(key) != keys.HashSlot(key[:len(key)-1]+"f") {
			t.Fatalf("value and lease keys of %s in different slots", key)
		}
		node, err := rdb.MasterForKey(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		perNode[node.Options().Addr]++
	}
	if len(perNode) != 3 {
		t.Fatalf("rows on %d masters, want 3: %v", len(perNode), perNode)
	}

	if err := db.Exec(`UPDATE widgets SET name = 'changed' WHERE id IN (1, 2, 3)`).Error; err != nil {
		t.Fatal(err)
	}
	integration.Eventually(t, "changed rows invalidated", func() bool {
		for _, id := range []int64{1, 2, 3} {
			key, _ := repo.Key(id)
			if rdb.Exists(ctx, key).Val() != 0 {
				return false
			}
		}
		return true
	})
	if got, _, err := repo.Get(ctx, int64(2)); err != nil || got.Name != "changed" {
		t.Fatalf("Get after update = %+v, %v", got, err)
	}

	// TRUNCATE scans every master.
	if err := db.Exec(`TRUNCATE widgets`).Error; err != nil {
		t.Fatal(err)
	}
	integration.Eventually(t, "table flushed on every master", func() bool {
		for _, id := range ids {
			key, _ := repo.Key(id)
			if rdb.Exists(ctx, key).Val() != 0 {
				return false
			}
		}
		return true
	})
}

type Gadget struct {
	ID   int64 `gorm:"primaryKey"`
	Name string
}

// testWrites: Save and Delete under write-through and invalidate, alone and in
// transactions, on rows spread over every master: after each write returns the cache
// holds the new row (write-through) or nothing (invalidate), and a rolled-back
// transaction leaves the cache as it was. Write-back is refused on a Cluster.
func testWrites(t *testing.T, rdb *redis.ClusterClient) {
	pg := servers.Postgres(t).NewDatabase(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	db, err := gorm.Open(postgres.Open(pg.RoleURL), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.AutoMigrate(&Gadget{}); err != nil {
		t.Fatal(err)
	}
	if err := db.Exec(`INSERT INTO gadgets SELECT g, 'v0' FROM generate_series(1, 60) g`).Error; err != nil {
		t.Fatal(err)
	}
	register := func(prefix string, p writepolicy.Policy) (*readthrough.Repository[Gadget], error) {
		cache, err := readthrough.New(db, rdb, readthrough.Options{Prefix: prefix, RedisTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		return readthrough.Register[Gadget](cache, readthrough.ModelOptions{WritePolicy: p})
	}
	through, err := register("clwt", writepolicy.WriteThrough)
	if err != nil {
		t.Fatal(err)
	}
	inval, err := register("clwi", writepolicy.Invalidate)
	if err != nil {
		t.Fatal(err)
	}
	// Write-back runs on a Cluster too (its tests: integration/writeback, each on both).
	if _, err := register("clwb", writepolicy.WriteBack); err != nil {
		t.Fatalf("write-back on a Cluster: %v", err)
	}

	// cached returns the row in the cache, with ok false when there is no entry.
	cached := func(repo *readthrough.Repository[Gadget], id int64) (g Gadget, ok bool) {
		g, _, ok, err := repo.Peek(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return g, ok
	}
	masters := map[string]bool{}
	for id := int64(1); id <= 60; id++ {
		for _, repo := range []*readthrough.Repository[Gadget]{through, inval} {
			if _, _, err := repo.Get(ctx, id); err != nil { // cache the old row
				t.Fatal(err)
			}
			name := fmt.Sprintf("v1-%d", id)
			if err := repo.Save(ctx, &Gadget{ID: id, Name: name}); err != nil {
				t.Fatal(err)
			}
			g, ok := cached(repo, id)
			switch {
			case repo == through && (!ok || g.Name != name):
				t.Fatalf("write-through Save of %d: cache holds %+v (%v), want %q", id, g, ok, name)
			case repo == inval && ok:
				t.Fatalf("invalidate Save of %d: cache still holds %+v", id, g)
			}
			if got, _, err := repo.Get(ctx, id); err != nil || got.Name != name {
				t.Fatalf("Get after Save of %d = %+v, %v", id, got, err)
			}
		}
		key, _ := through.Key(id)
		node, err := rdb.MasterForKey(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		masters[node.Options().Addr] = true
	}
	if len(masters) != 3 {
		t.Fatalf("rows written on %d masters, want 3", len(masters))
	}

	// A transaction over rows of every master: its cache effects after the commit, none
	// after a rollback.
	ids := []int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	rollback := errors.New("roll back")
	err = readthrough.Transaction(ctx, db, func(tx *readthrough.Tx) error {
		for _, id := range ids {
			if err := through.In(tx).Save(ctx, &Gadget{ID: id, Name: "rolled back"}); err != nil {
				return err
			}
		}
		return rollback
	})
	if !errors.Is(err, rollback) {
		t.Fatalf("Transaction = %v", err)
	}
	for _, id := range ids {
		if g, ok := cached(through, id); !ok || g.Name != fmt.Sprintf("v1-%d", id) {
			t.Fatalf("after a rollback, row %d's entry is %+v (%v)", id, g, ok)
		}
	}
	err = readthrough.Transaction(ctx, db, func(tx *readthrough.Tx) error {
		for _, id := range ids {
			if err := through.In(tx).Save(ctx, &Gadget{ID: id, Name: "v2"}); err != nil {
				return err
			}
		}
		return inval.In(tx).Delete(ctx, int64(11))
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if g, ok := cached(through, id); !ok || g.Name != "v2" {
			t.Fatalf("after the commit, row %d's entry is %+v (%v), want v2", id, g, ok)
		}
	}
	if _, ok, err := inval.Get(ctx, int64(11)); err != nil || ok {
		t.Fatalf("Get of a deleted row = %v, %v", ok, err)
	}
}

type Trinket struct {
	ID   int64 `gorm:"primaryKey"`
	Name string
}

// flushRace orders a fill of one row and a table flush: the fill's store (the fill
// script on the row, after its load) waits until the flush's walk of the table index
// has read its last batch, and the walk goes on once the fill stored.
type flushRace struct {
	key            string
	loaded, stored chan struct{}
	release        chan struct{}
	hold, answered sync.Once
	armed, fired   atomic.Bool
}

// fillHook gates the repository's client.
type fillHook struct{ *flushRace }

func (h fillHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h fillHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
func (h fillHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		args := cmd.Args()
		if !(cmd.Name() == "evalsha" || cmd.Name() == "eval") || len(args) < 5 || fmt.Sprint(args[2]) != "2" || args[3] != h.key {
			return next(ctx, cmd)
		}
		h.hold.Do(func() { close(h.loaded); <-h.release })
		err := next(ctx, cmd)
		if err == nil || !redis.HasErrorPrefix(err, "NOSCRIPT") {
			h.answered.Do(func() { close(h.stored) })
		}
		return err
	}
}

// walkHook gates the worker's client.
type walkHook struct{ *flushRace }

func (h walkHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h walkHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
func (h walkHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if sc, ok := cmd.(*redis.ScanCmd); ok && err == nil && h.armed.Load() {
			if _, cursor := sc.Val(); cursor == 0 && h.fired.CompareAndSwap(false, true) {
				close(h.release)
				<-h.stored
			}
		}
		return err
	}
}

// testFlushRace: on a Cluster, where the table's index is in a slot of its own, a fill
// that read a row before a TRUNCATE and stores it while the worker's flush walks the
// index leaves nothing cached (contract item 21; invalidator's TestTruncateRacesFill on
// a single Redis, with its control).
func testFlushRace(t *testing.T, cl *integration.RedisCluster) {
	pg := servers.Postgres(t).NewDatabase(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	db, err := gorm.Open(postgres.Open(pg.RoleURL), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.AutoMigrate(&Trinket{}); err != nil {
		t.Fatal(err)
	}
	if err := db.Exec(`INSERT INTO trinkets VALUES (1, 'old')`).Error; err != nil {
		t.Fatal(err)
	}
	race := &flushRace{loaded: make(chan struct{}), stored: make(chan struct{}), release: make(chan struct{})}
	repoDB, workerDB, plain := cl.Client(t), cl.Client(t), cl.Client(t)
	repoDB.AddHook(fillHook{race})
	workerDB.AddHook(walkHook{race})
	// Long timeouts and lease: the held fill must still hold its lease, and its store
	// must not time out, however slowly a loaded machine gets to the flush.
	cache, err := readthrough.New(db, repoDB, readthrough.Options{Prefix: "clrace", RedisTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	repo, err := readthrough.Register[Trinket](cache, readthrough.ModelOptions{FenceDuration: 2 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if race.key, err = repo.Key(int64(1)); err != nil {
		t.Fatal(err)
	}
	sp, _, err := keys.ParseKey(race.key)
	if err != nil {
		t.Fatal(err)
	}
	rowNode, _ := plain.MasterForKey(ctx, race.key)
	idxNode, _ := plain.MasterForKey(ctx, sp.TableIndex())
	t.Logf("row in slot %d on %s, table index in slot %d on %s", keys.HashSlot(race.key), rowNode.Options().Addr,
		keys.HashSlot(sp.TableIndex()), idxNode.Options().Addr)

	w, err := invalidator.NewWorker(workerDB, invalidator.WorkerOptions{
		Postgres:    pg.RoleURL,
		Stream:      cdc.Options{Slot: "s_" + pg.Name, Publication: "pgcache", Tables: []string{"trinkets"}, StatusInterval: 100 * time.Millisecond},
		Invalidator: invalidator.Options{Prefix: "clrace", RedisTimeout: time.Minute},
	})
	if err != nil {
		t.Fatal(err)
	}
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("worker: %v", err)
		}
	}()
	integration.Eventually(t, "worker ready", w.Ready) // its gap flush is over
	flushed := w.Stats().TablesFlushed

	got := make(chan Trinket, 1)
	go func() {
		row, _, err := repo.Get(ctx, int64(1))
		if err != nil {
			t.Errorf("Get: %v", err)
		}
		got <- row
	}()
	select {
	case <-race.loaded:
	case <-ctx.Done():
		t.Fatal("the fill never reached its store")
	}
	race.armed.Store(true)
	if err := db.Exec(`TRUNCATE trinkets`).Error; err != nil {
		t.Fatal(err)
	}
	integration.Eventually(t, "the truncated table flushed", func() bool { return w.Stats().TablesFlushed > flushed })
	if race.fired.CompareAndSwap(false, true) {
		close(race.release) // let the fill end
		t.Fatal("the flush's walk never let the fill go")
	}
	if row := <-got; row.Name != "old" || repo.Stats().Fills != 1 {
		t.Fatalf("read %+v, stats %+v: the fill did not store during the walk", row, repo.Stats())
	}
	if n := plain.Exists(ctx, race.key).Val(); n != 0 {
		t.Fatalf("after the TRUNCATE's flush, row 1 is cached: %q", plain.Get(ctx, race.key).Val())
	}
}
