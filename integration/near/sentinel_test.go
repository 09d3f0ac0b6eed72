package near_test

import (
	"context"
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

// TestNearSentinelFailover: two processes reach Redis through Sentinel with the near
// cache on; after a failover, a write through one process (to the new master) reaches
// the other's near tier, whose tracking follows the master it reads from.
func TestNearSentinelFailover(t *testing.T) {
	sen := integration.NewSentinel(t)
	pg := servers.Postgres(t).NewDatabase(t)
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
	process := func() *readthrough.Repository[Widget] {
		c, err := readthrough.New(open(), sen.Client(t), readthrough.Options{Prefix: "nearsen", RedisTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		opts := nearOn
		opts.WritePolicy = writepolicy.Invalidate
		return register[Widget](t, c, opts)
	}
	a, b := process(), process()
	inNear(t, a, 1)
	inNear(t, b, 1)

	sc := redis.NewSentinelClient(&redis.Options{Addr: sen.Addrs()[0]})
	t.Cleanup(func() { _ = sc.Close() })
	if err := sc.Failover(context.Background(), integration.SentinelMaster).Err(); err != nil {
		t.Fatal(err)
	}
	if err := sen.WaitPromoted(context.Background()); err != nil {
		t.Fatal(err)
	}
	integration.Eventually(t, "b to write through the new master", func() bool {
		return b.Save(context.Background(), &Widget{ID: 1, Name: "v1", At: time.Now()}) == nil
	})
	integration.Eventually(t, "a to read v1 after the failover", func() bool { return name(t, a, 1) == "v1" })
	inNear(t, a, 1) // a's near tier serves again, tracking the new master
	if got := name(t, a, 1); got != "v1" {
		t.Fatalf("a near hit %q after the failover and the write, want v1", got)
	}
	// And a later write, with a's tier up on the new master, reaches it too.
	if err := b.Save(context.Background(), &Widget{ID: 1, Name: "v2", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	integration.Eventually(t, "a to read v2", func() bool { return name(t, a, 1) == "v2" })
}
