package cluster

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pgcache/pgcache/integration"
	"github.com/pgcache/pgcache/internal/testhooks"
)

// TestNearClusterTopology: a master joins the Cluster and a slot holding a near-cached
// row moves to it. The near tier follows: it is emptied when the set of masters changes,
// tracks the new master, and drops the row when its entry is deleted there. The control
// keeps tracking the first three masters only, as a near cache that does not follow the
// Cluster would: the deletion on the new master reaches no one and the old row is
// served for ever.
func TestNearClusterTopology(t *testing.T) {
	for _, fixed := range []bool{false, true} {
		t.Run(fmt.Sprintf("fixedMasters=%v", fixed), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			cl := integration.NewRedisClusterWith(t, integration.RedisOptions{SpareNodes: 1})
			e := newNearEnv(t, cl, "topo")
			c := e.process(t, testhooks.WithNear(context.Background(), &testhooks.Near{FixedMasters: fixed}))
			a := nearRegister(t, c)
			var victim, other int64
			for _, id := range e.byMaster {
				if victim == 0 {
					victim = id
				} else if other == 0 {
					other = id
				}
				inNear(t, a, id)
			}
			flushes := c.Stats().NearFlushes

			addr, err := cl.AddMaster(ctx)
			if err != nil {
				t.Fatal(err)
			}
			joined := redis.NewClient(&redis.Options{Addr: addr})
			t.Cleanup(func() { joined.Close() })
			key, _ := a.Key(victim)
			slot, err := e.rdb.ClusterKeySlot(ctx, key).Result()
			if err != nil {
				t.Fatal(err)
			}
			if err := cl.MoveSlot(ctx, int(slot), addr); err != nil {
				t.Fatal(err)
			}
			if n, err := joined.Exists(ctx, key).Result(); err != nil || n != 1 {
				t.Fatalf("row %d's entry on the new master after its slot moved: %d, %v; want it there", victim, n, err)
			}
			// Clients learn of a master from CLUSTER SLOTS, so the new one counts once it
			// holds a slot: the tier is emptied and tracking restarts on four masters.
			if !fixed {
				integration.Eventually(t, "the new master tracked", func() bool {
					return len(trackingClients(t, joined)) == 1
				})
				if c.Stats().NearFlushes == flushes {
					t.Fatal("the masters changed but the near tier was not emptied")
				}
			}
			inNear(t, a, victim) // read again from the new master and kept in process

			// The row changes unbeknown to the cache, and its entry is deleted on the new
			// master (as the worker does); then a row of an old master, as a marker.
			for _, id := range []int64{victim, other} {
				if err := e.db.Exec(`UPDATE widgets SET name = 'raw' WHERE id = ?`, id).Error; err != nil {
					t.Fatal(err)
				}
				k, _ := a.Key(id)
				if err := e.rdb.Del(ctx, k).Err(); err != nil {
					t.Fatal(err)
				}
			}
			dropped(t, a, other)
			if fixed {
				if got := nearName(t, a, victim); got != "v0" {
					t.Fatalf("control: with the masters fixed the new master's deletion reaches no one and the old row should be served, got %q: the test cannot fail", got)
				}
				return
			}
			dropped(t, a, victim)
			if got := nearName(t, a, victim); got != "raw" {
				t.Fatalf("read %q after the row changed on the new master, want raw", got)
			}
		})
	}
}
