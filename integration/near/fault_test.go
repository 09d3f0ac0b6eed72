package near_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/pgcache/pgcache/integration"
	"github.com/pgcache/pgcache/internal/store"
	"github.com/pgcache/pgcache/internal/testhooks"
	"github.com/pgcache/pgcache/readthrough"
)

// The fault tests change the row in Postgres without telling the cache and then make
// Redis' invalidation of its entry get lost on its way to the process; the process
// must not keep serving the old row from its near tier: it empties the tier when the
// tracking connection fails and bypasses it until tracking is back. Each has a
// control in which the tier stays up and full when the connection fails
// (testhooks.Near.KeepOnDown), which serves the old row: the message was really lost.

// trackingClients returns the CLIENT LIST fields of the tracking connections on rdb's
// server: "id" to kill one, "addr" (its address and port, which a new connection
// changes even after a restart resets ids).
func trackingClients(t *testing.T, rdb *redis.Client) []map[string]string {
	t.Helper()
	var out []map[string]string
	for line := range strings.SplitSeq(rdb.ClientList(context.Background()).Val(), "\n") {
		if !strings.Contains(line, " name="+store.TrackingName+" ") {
			continue
		}
		fields := map[string]string{}
		for f := range strings.FieldsSeq(line) {
			k, v, _ := strings.Cut(f, "=")
			fields[k] = v
		}
		out = append(out, fields)
	}
	return out
}

// faultCase runs body with the fault made, for the near tier as built and for the
// control; body makes the fault and returns once the tracking connection is back.
func faultCase(t *testing.T, fault func(t *testing.T, e *env, a *readthrough.Repository[Widget], id string)) {
	for _, keep := range []bool{false, true} {
		t.Run(fmt.Sprintf("keepOnDown=%v", keep), func(t *testing.T) {
			e := newEnv(t, integration.NewRedis(t, integration.RedisOptions{})) // a server of its own to break
			c := e.processWith(t, testhooks.WithNear(context.Background(), &testhooks.Near{KeepOnDown: keep}))
			a := register[Widget](t, c, nearOn)
			inNear(t, a, 1)
			e.exec(t, `UPDATE widgets SET name = 'raw' WHERE id = 1`)
			old := trackingClients(t, e.rdb)
			if len(old) != 1 {
				t.Fatalf("%d tracking connections, want 1", len(old))
			}
			before := e.rdb.ClientList(context.Background()).Val()
			fault(t, e, a, old[0]["id"])
			defer func() {
				if t.Failed() {
					t.Logf("CLIENT LIST before:\n%s\nafter:\n%s", before, e.rdb.ClientList(context.Background()).Val())
				}
			}()
			integration.Eventually(t, "tracking back on a new connection", func() bool {
				// Subscribed: the connection was dialled (Down) and has tracking on.
				now := trackingClients(t, e.rdb)
				return len(now) == 1 && now[0]["addr"] != old[0]["addr"] && now[0]["sub"] == "1"
			})
			got := name(t, a, 1)
			switch {
			case !keep && got != "raw":
				k, _ := a.Key(int64(1))
				t.Fatalf("read %q after the fault, want raw: the near tier served a row whose invalidation was lost (stats %+v, cache %+v, redis has %q)", got, a.Stats(), c.Stats(), e.rdb.Get(context.Background(), k).Val())
			case !keep && c.Stats().NearFlushes == 0:
				t.Fatal("the near tier was not emptied")
			case keep && got != "v0":
				t.Fatalf("control: with the tier kept on failure a read should serve the lost invalidation's old row, got %q: the test cannot fail", got)
			}
			if !keep {
				inNear(t, a, 1) // the near tier serves again
			}
		})
	}
}

// TestNearClientKill: the tracking connection is killed and the row's entry deleted in
// one MULTI, so the DEL's message is sent to no one.
func TestNearClientKill(t *testing.T) {
	faultCase(t, func(t *testing.T, e *env, a *readthrough.Repository[Widget], id string) {
		key, _ := a.Key(int64(1))
		ctx := context.Background()
		_, err := e.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Do(ctx, "CLIENT", "KILL", "ID", id)
			p.Del(ctx, key)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}

// TestNearRedisRestart: Redis is stopped (reads go to Postgres meanwhile, or to the
// near tier in the control) and started empty.
func TestNearRedisRestart(t *testing.T) {
	faultCase(t, func(t *testing.T, e *env, a *readthrough.Repository[Widget], id string) {
		ctx := context.Background()
		if err := e.rd.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		if err := e.rd.Start(ctx); err != nil {
			t.Fatal(err)
		}
	})
}

// TestNearLostMessages: the tracking connection falls behind a burst of changes and
// Redis drops it at its pub/sub output buffer limit, with the row's DEL among the
// messages it never delivered.
func TestNearLostMessages(t *testing.T) {
	faultCase(t, func(t *testing.T, e *env, a *readthrough.Repository[Widget], id string) {
		ctx := context.Background()
		if err := e.rdb.ConfigSet(ctx, "client-output-buffer-limit", "pubsub 1024 1024 0").Err(); err != nil {
			t.Fatal(err)
		}
		key, _ := a.Key(int64(1))
		long := strings.Repeat("k", 200)
		// One transaction: Redis queues every message before the connection can read one.
		_, err := e.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
			for i := range 200 {
				p.Set(ctx, fmt.Sprintf("%s%s%d", e.prefix, long, i), "v", 0)
			}
			p.Del(ctx, key)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}
