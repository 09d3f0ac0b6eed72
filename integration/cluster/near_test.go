package cluster

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
	"github.com/pgcache/pgcache/internal/store"
	"github.com/pgcache/pgcache/internal/testhooks"
	"github.com/pgcache/pgcache/readthrough"
)

// The near cache on a Redis Cluster: one tracking connection per master.

var nearOn = readthrough.ModelOptions{Near: readthrough.NearOptions{MaxEntries: 1000}}

// nearEnv is a database of widgets and the processes that cache them on one Cluster.
type nearEnv struct {
	cl     *integration.RedisCluster
	rdb    *redis.ClusterClient
	url    string
	db     *gorm.DB
	prefix string
	// byMaster holds, for each master's address, a widget id whose key it holds.
	byMaster map[string]int64
}

func newNearEnv(t *testing.T, cl *integration.RedisCluster, prefix string) *nearEnv {
	t.Helper()
	pg := servers.Postgres(t).NewDatabase(t)
	e := &nearEnv{cl: cl, rdb: cl.Client(t), url: pg.RoleURL, prefix: prefix, byMaster: map[string]int64{}}
	e.db = e.open(t, context.Background())
	if err := e.db.AutoMigrate(&Widget{}); err != nil {
		t.Fatal(err)
	}
	if err := e.db.Exec(`INSERT INTO widgets SELECT g, 'v0' FROM generate_series(1, 60) g`).Error; err != nil {
		t.Fatal(err)
	}
	probe := e.process(t, context.Background())
	repo, err := readthrough.Register[Widget](probe, readthrough.ModelOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for id := int64(1); id <= 60; id++ {
		if _, ok := e.byMaster[e.master(t, repo, id).Options().Addr]; !ok {
			e.byMaster[e.master(t, repo, id).Options().Addr] = id
		}
	}
	if len(e.byMaster) != 3 {
		t.Fatalf("ids 1-60 on %d masters, want 3: %v", len(e.byMaster), e.byMaster)
	}
	return e
}

func (e *nearEnv) open(t *testing.T, hooks context.Context) *gorm.DB {
	t.Helper()
	db, err := gorm.Open(postgres.Open(e.url), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		t.Fatal(err)
	}
	sqlDB, _ := db.DB()
	t.Cleanup(func() { sqlDB.Close() })
	return db.WithContext(hooks)
}

// process is one process's Cache: a Cluster client and a database handle of its own.
func (e *nearEnv) process(t *testing.T, hooks context.Context) *readthrough.Cache {
	t.Helper()
	c, err := readthrough.New(e.open(t, hooks), e.cl.Client(t), readthrough.Options{Prefix: e.prefix, RedisTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// master returns the client of the master holding id's key.
func (e *nearEnv) master(t *testing.T, repo *readthrough.Repository[Widget], id int64) *redis.Client {
	t.Helper()
	key, _ := repo.Key(id)
	node, err := e.rdb.MasterForKey(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	return node
}

func nearRegister(t *testing.T, c *readthrough.Cache) *readthrough.Repository[Widget] {
	t.Helper()
	r, err := readthrough.Register[Widget](c, nearOn)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func nearName(t *testing.T, r *readthrough.Repository[Widget], id int64) string {
	t.Helper()
	row, ok, err := r.Get(context.Background(), id)
	if err != nil || !ok {
		t.Fatalf("Get(%d) = %+v, %v, %v", id, row, ok, err)
	}
	return row.Name
}

// inNear waits until a read of id through r is answered by the near tier (it is up on
// every master and holds the row).
func inNear(t *testing.T, r *readthrough.Repository[Widget], id int64) {
	t.Helper()
	integration.Eventually(t, fmt.Sprintf("row %d in the near tier", id), func() bool {
		before := r.Stats().NearHits
		nearName(t, r, id)
		return r.Stats().NearHits > before
	})
}

// dropped waits until a read of id through r misses the near tier.
func dropped(t *testing.T, r *readthrough.Repository[Widget], id int64) {
	t.Helper()
	integration.Eventually(t, fmt.Sprintf("the near tier to drop row %d", id), func() bool {
		before := r.Stats().NearMisses
		nearName(t, r, id)
		return r.Stats().NearMisses > before
	})
}

// nearMisses reports whether one read of id through r misses the near tier.
func nearMisses(t *testing.T, r *readthrough.Repository[Widget], id int64) bool {
	t.Helper()
	before := r.Stats().NearMisses
	nearName(t, r, id)
	return r.Stats().NearMisses > before
}

// trackingClients returns the CLIENT LIST fields of the tracking connections on a
// master.
func trackingClients(t *testing.T, node *redis.Client) []map[string]string {
	t.Helper()
	var out []map[string]string
	for line := range strings.SplitSeq(node.ClientList(context.Background()).Val(), "\n") {
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

// testNear: two processes keep rows of every master in process, and each drops a row
// when the other writes it, whichever master holds it; every master has one tracking
// connection of each process.
func testNear(t *testing.T, cl *integration.RedisCluster) {
	e := newNearEnv(t, cl, "cln")
	a := nearRegister(t, e.process(t, context.Background()))
	b := nearRegister(t, e.process(t, context.Background()))
	for addr, id := range e.byMaster {
		inNear(t, a, id)
		inNear(t, b, id)
		if n := len(trackingClients(t, e.master(t, a, id))); n != 2 {
			t.Fatalf("master %s has %d tracking connections, want 2 (one per process)", addr, n)
		}
	}
	ctx := context.Background()
	for addr, id := range e.byMaster {
		name := "by-b-" + addr
		if err := b.Save(ctx, &Widget{ID: id, Name: name}); err != nil {
			t.Fatal(err)
		}
		if got := nearName(t, b, id); got != name {
			t.Fatalf("the writer reads %q after its Save, want %q", got, name)
		}
		dropped(t, a, id)
		if got := nearName(t, a, id); got != name {
			t.Fatalf("row %d on master %s: the other process reads %q after the write, want %q", id, addr, got, name)
		}
	}
	if a.Stats().NearHits == 0 || b.Stats().NearHits == 0 {
		t.Fatalf("no near hits: a %+v, b %+v", a.Stats(), b.Stats())
	}
}

// testNearClientKill: one master's tracking connection is killed together with the
// deletion of a row's entry (one MULTI, so the DEL's message reaches no one) after the
// row changed in Postgres unbeknown to the cache. The whole near tier is emptied, rows
// of the other masters too, and serves again once that master's tracking is back. The
// control keeps the tier on failure and serves the old row: the message was lost.
func testNearClientKill(t *testing.T, cl *integration.RedisCluster) {
	for _, keep := range []bool{false, true} {
		t.Run(fmt.Sprintf("keepOnDown=%v", keep), func(t *testing.T) {
			e := newNearEnv(t, cl, fmt.Sprintf("clk%v", keep))
			c := e.process(t, testhooks.WithNear(context.Background(), &testhooks.Near{KeepOnDown: keep}))
			a := nearRegister(t, c)
			var ids []int64
			for _, id := range e.byMaster {
				inNear(t, a, id)
				ids = append(ids, id)
			}
			victim, other := ids[0], ids[1]
			if err := e.db.Exec(`UPDATE widgets SET name = 'raw' WHERE id = ?`, victim).Error; err != nil {
				t.Fatal(err)
			}
			node := e.master(t, a, victim)
			old := trackingClients(t, node)
			if len(old) != 1 {
				t.Fatalf("%d tracking connections on %s, want 1", len(old), node.Options().Addr)
			}
			flushes := c.Stats().NearFlushes
			ctx := context.Background()
			key, _ := a.Key(victim)
			_, err := node.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.Do(ctx, "CLIENT", "KILL", "ID", old[0]["id"])
				p.Del(ctx, key)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			integration.Eventually(t, "tracking back on a new connection", func() bool {
				now := trackingClients(t, node)
				return len(now) == 1 && now[0]["addr"] != old[0]["addr"] && now[0]["sub"] == "1"
			})
			got := nearName(t, a, victim)
			switch {
			case !keep && got != "raw":
				t.Fatalf("read %q after the kill, want raw: the near tier served a row whose invalidation was lost (stats %+v)", got, a.Stats())
			case !keep && c.Stats().NearFlushes == flushes:
				t.Fatal("the near tier was not emptied")
			case !keep && !nearMisses(t, a, other):
				t.Fatal("a row of another master was still served from the near tier: the whole tier must be emptied")
			case keep && got != "v0":
				t.Fatalf("control: with the tier kept on failure a read should serve the lost invalidation's old row, got %q: the test cannot fail", got)
			}
			if !keep {
				for _, id := range ids {
					inNear(t, a, id) // the near tier serves again once every master tracks
				}
			}
		})
	}
}
