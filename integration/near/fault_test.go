package near_test

import (
	"context"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/pgcache/pgcache/integration"
	"github.com/pgcache/pgcache/internal/store"
)

// The fault tests change the row in Postgres without telling the cache and then make
// Redis' invalidation of its entry get lost on its way to the process; the process
// must not keep serving the old row from its near tier: it empties the tier when the
// tracking connection fails and bypasses it until tracking is back.

// trackingIDs returns the CLIENT IDs of the tracking connections on rdb's server.
func trackingIDs(t *testing.T, rdb *redis.Client) []string {
	t.Helper()
	var ids []string
	for line := range strings.SplitSeq(rdb.ClientList(context.Background()).Val(), "\n") {
		if !strings.Contains(line, " name="+store.TrackingName+" ") {
			continue
		}
		for f := range strings.FieldsSeq(line) {
			if id, ok := strings.CutPrefix(f, "id="); ok {
				ids = append(ids, id)
			}
		}
	}
	return ids
}

// TestNearClientKill: the tracking connection is killed and the row's entry deleted in
// one MULTI, so the DEL's message is sent to no one. The process's next reads return
// the new row, from Redis or Postgres, never the old one from its near tier.
func TestNearClientKill(t *testing.T) {
	e := newEnv(t, integration.NewRedis(t, integration.RedisOptions{}))
	c := e.process(t)
	a := register[Widget](t, c, nearOn)
	inNear(t, a, 1)
	e.exec(t, `UPDATE widgets SET name = 'raw' WHERE id = 1`)
	ids := trackingIDs(t, e.rdb)
	if len(ids) != 1 {
		t.Fatalf("%d tracking connections, want 1", len(ids))
	}
	key, _ := a.Key(int64(1))
	ctx := context.Background()
	flushes := c.Stats().NearFlushes
	_, err := e.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Do(ctx, "CLIENT", "KILL", "ID", ids[0])
		p.Del(ctx, key)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	integration.Eventually(t, "the near tier emptied", func() bool { return c.Stats().NearFlushes > flushes })
	if got := name(t, a, 1); got != "raw" {
		t.Fatalf("read %q after the tracking connection was killed with the row's DEL, want raw", got)
	}
	integration.Eventually(t, "tracking back", func() bool { return len(trackingIDs(t, e.rdb)) == 1 })
	inNear(t, a, 1) // the near tier serves again
}

// TestNearRedisRestart: Redis is stopped (the process reads Postgres meanwhile) and
// started empty; the row changed in between. The near tier, emptied when the
// connection broke, never serves the old row.
func TestNearRedisRestart(t *testing.T) {
	rd := integration.NewRedis(t, integration.RedisOptions{})
	e := newEnv(t, rd)
	c := e.process(t)
	a := register[Widget](t, c, nearOn)
	inNear(t, a, 1)
	ctx := context.Background()
	if err := rd.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	e.exec(t, `UPDATE widgets SET name = 'raw' WHERE id = 1`)
	integration.Eventually(t, "the near tier emptied", func() bool { return c.Stats().NearFlushes > 0 })
	if got := name(t, a, 1); got != "raw" {
		t.Fatalf("read %q with Redis down, want raw from Postgres", got)
	}
	if err := rd.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if got := name(t, a, 1); got != "raw" {
		t.Fatalf("read %q after the restart, want raw", got)
	}
	inNear(t, a, 1)
	if got := name(t, a, 1); got != "raw" {
		t.Fatalf("near hit %q after the restart, want raw", got)
	}
}

// TestNearLostMessages: the tracking connection falls behind a burst of changes and
// Redis drops it at its pub/sub output buffer limit, with the row's DEL among the
// messages it never delivered. The near tier is emptied and refilled from Redis.
func TestNearLostMessages(t *testing.T) {
	e := newEnv(t, integration.NewRedis(t, integration.RedisOptions{}))
	c := e.process(t)
	a := register[Widget](t, c, nearOn)
	inNear(t, a, 1)
	ctx := context.Background()
	if err := e.rdb.ConfigSet(ctx, "client-output-buffer-limit", "pubsub 1024 1024 0").Err(); err != nil {
		t.Fatal(err)
	}
	e.exec(t, `UPDATE widgets SET name = 'raw' WHERE id = 1`)
	key, _ := a.Key(int64(1))
	long := strings.Repeat("k", 200)
	// One transaction: Redis queues every message before the connection can read one.
	_, err := e.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for i := range 200 {
			p.Set(ctx, e.prefix+long+string(rune('a'+i%26))+strings.Repeat("x", i), "v", 0)
		}
		p.Del(ctx, key)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	integration.Eventually(t, "the near tier emptied", func() bool { return c.Stats().NearFlushes > 0 })
	if got := name(t, a, 1); got != "raw" {
		t.Fatalf("read %q after messages were lost, want raw", got)
	}
}
