package near_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/pgcache/pgcache/integration"
	"github.com/pgcache/pgcache/internal/testhooks"
	"github.com/pgcache/pgcache/readthrough"
	"github.com/pgcache/pgcache/writepolicy"
)

// TestNearSentinelFailover: two processes reach Redis through Sentinel with the near
// cache on; after a failover, writes through one process (to the new master) reach the
// other's near tier, whose tracking follows the master its client sends commands to.
//
// demoted: the sentinels turn the old master into a replica, which drops its clients,
// seconds after the new master took the writes. oldMasterKept: they cannot (as when
// they lose sight of it): the old master keeps its clients, tracking connections
// included, for ever, and hears of no write. The control of that case keeps tracking
// on the first master (testhooks.Near.FixedMasters), as a tracker that only reconnects
// when its connection fails would: it serves the old row after the write.
func TestNearSentinelFailover(t *testing.T) {
	t.Run("demoted", func(t *testing.T) { sentinelFailover(t, false, false) })
	for _, fixed := range []bool{false, true} {
		t.Run(fmt.Sprintf("oldMasterKept/fixedMasters=%v", fixed), func(t *testing.T) { sentinelFailover(t, true, fixed) })
	}
}

func sentinelFailover(t *testing.T, keepOld, fixed bool) {
	ctx := context.Background()
	sen := integration.NewSentinel(t)
	pg := servers.Postgres(t).NewDatabase(t)
	hooks := testhooks.WithNear(ctx, &testhooks.Near{FixedMasters: fixed})
	open := func() *gorm.DB {
		db, err := gorm.Open(postgres.Open(pg.RoleURL), &gorm.Config{Logger: logger.Discard})
		if err != nil {
			t.Fatal(err)
		}
		sqlDB, _ := db.DB()
		t.Cleanup(func() { sqlDB.Close() })
		return db
	}
	setup := open()
	if err := setup.AutoMigrate(&Widget{}); err != nil {
		t.Fatal(err)
	}
	if err := setup.Exec(`INSERT INTO widgets (id, name, at) VALUES (1, 'v0', now())`).Error; err != nil {
		t.Fatal(err)
	}
	var caches []*readthrough.Cache
	process := func() (*readthrough.Repository[Widget], *redis.Client) {
		rdb := sen.Client(t)
		c, err := readthrough.New(open().WithContext(hooks), rdb, readthrough.Options{Prefix: "nearsen", RedisTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		caches = append(caches, c)
		opts := nearOn
		opts.WritePolicy = writepolicy.Invalidate
		return register[Widget](t, c, opts), rdb
	}
	a, aRdb := process()
	b, bRdb := process()
	inNear(t, a, 1)
	inNear(t, b, 1)
	flushes := caches[0].Stats().NearFlushes

	oldMaster := redis.NewClient(&redis.Options{Addr: sen.Master.Addr()})
	t.Cleanup(func() { _ = oldMaster.Close() })
	newMaster := redis.NewClient(&redis.Options{Addr: sen.Replica.Addr()})
	t.Cleanup(func() { _ = newMaster.Close() })
	if keepOld {
		// The sentinels demote a master with REPLICAOF (SLAVEOF) in a transaction that
		// also kills its clients; refused, the transaction does nothing.
		if err := oldMaster.Do(ctx, "ACL", "SETUSER", "default", "-replicaof", "-slaveof").Err(); err != nil {
			t.Fatal(err)
		}
	}
	sc := redis.NewSentinelClient(&redis.Options{Addr: sen.Addrs()[0]})
	t.Cleanup(func() { _ = sc.Close() })
	if err := sc.Failover(ctx, integration.SentinelMaster).Err(); err != nil {
		t.Fatal(err)
	}
	if err := sen.WaitPromoted(ctx); err != nil {
		t.Fatal(err)
	}
	// Both clients must have switched: until then a process's own deletions go to the
	// old master (and are lost with it when it is demoted, as are any writes Redis had
	// not replicated: the worker flushes the cached tables after such a change).
	integration.Eventually(t, "both clients to send their commands to the new master", func() bool {
		id := runID(t, newMaster)
		return runID(t, aRdb) == id && runID(t, bRdb) == id
	})
	integration.Eventually(t, "b to write through the new master", func() bool {
		return b.Save(ctx, &Widget{ID: 1, Name: "v1", At: time.Now()}) == nil
	})
	if fixed {
		if got := name(t, a, 1); got != "v0" {
			t.Fatalf("control: with tracking kept on the old master a should serve the old row after the write, got %q: the test cannot fail (a's near tier emptied %d times since the row was in it; tracking on the old master %v, on the new %v)",
				got, caches[0].Stats().NearFlushes-flushes, trackingClients(t, oldMaster), trackingClients(t, newMaster))
		}
		return
	}
	integration.Eventually(t, "a to read v1 after the failover", func() bool { return name(t, a, 1) == "v1" })
	inNear(t, a, 1) // a's near tier serves again, tracking the new master
	if got := name(t, a, 1); got != "v1" {
		t.Fatalf("a near hit %q after the failover and the write, want v1", got)
	}
	// And a later write, with a's tier up on the new master, reaches it too.
	if err := b.Save(ctx, &Widget{ID: 1, Name: "v2", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	integration.Eventually(t, "a to read v2", func() bool { return name(t, a, 1) == "v2" })
	if keepOld {
		integration.Eventually(t, "both processes tracking the new master, none the old", func() bool {
			return len(trackingClients(t, newMaster)) == 2 && len(trackingClients(t, oldMaster)) == 0
		})
	}
}

// runID returns the run id of the server rdb sends its commands to.
func runID(t *testing.T, rdb *redis.Client) string {
	t.Helper()
	info, err := rdb.Info(context.Background(), "server").Result()
	if err != nil {
		return "" // e.g. during the failover
	}
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(line, "run_id:"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatal("INFO server has no run_id")
	return ""
}
