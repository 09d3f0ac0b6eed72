package store_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pgcache/pgcache/integration"
	"github.com/pgcache/pgcache/internal/store"
	"github.com/pgcache/pgcache/keys"
)

var servers integration.Shared

func TestMain(m *testing.M) { os.Exit(servers.Run(m)) }

func space(tb testing.TB, prefix, table, version string) keys.Space {
	tb.Helper()
	sp, err := keys.NewSpace(prefix, table, version)
	if err != nil {
		tb.Fatal(err)
	}
	return sp
}

// lease takes the leases of ks under m and fills those it got with entry.
func lease(tb testing.TB, st *store.Store, m store.Model, ks ...keys.Key) {
	tb.Helper()
	ctx := context.Background()
	ls, err := st.TakeLeases(ctx, m, ks, time.Minute)
	if err != nil {
		tb.Fatal(err)
	}
	var items []store.FillItem
	for i, l := range ls {
		if l.State == store.Acquired {
			items = append(items, store.FillItem{Key: ks[i], Token: l.Token, Entry: []byte("entry"), TTL: time.Hour})
		}
	}
	if len(items) == 0 {
		return
	}
	if _, err := st.FillMany(ctx, items); err != nil {
		tb.Fatal(err)
	}
}

func exists(t *testing.T, rdb redis.UniversalClient, key string) bool {
	t.Helper()
	n, err := rdb.Exists(context.Background(), key).Result()
	if err != nil {
		t.Fatal(err)
	}
	return n == 1
}

// TestFlushTable: a table flush deletes the value and lease keys of the table's rows
// under every version, filled, leased or written back, and nothing else: not another
// table's rows, not pending write-back records, not keys the index does not name.
func TestFlushTable(t *testing.T) {
	t.Parallel()
	rd := servers.Redis(t)
	rdb := rd.Client(t)
	prefix := rd.Prefix(t)
	ctx := context.Background()
	st := store.New(rdb, 5*time.Second, "test")
	v1, v2 := space(t, prefix, "public.widgets", "v1"), space(t, prefix, "public.widgets", "v2")
	other := space(t, prefix, "public.gadgets", "v1")
	m1, m2, mo := store.NewModel(v1, time.Hour), store.NewModel(v2, time.Hour), store.NewModel(other, time.Hour)

	lease(t, st, m1, v1.Key("1"), v1.Key("2"))
	lease(t, st, m2, v2.Key("1"))
	lease(t, st, mo, other.Key("1"))
	held := v1.Key("3") // leased, not filled yet
	if _, err := st.TakeLease(ctx, m1, held, time.Minute); err != nil {
		t.Fatal(err)
	}
	written := v2.Key("4")
	if _, err := st.Journal(ctx, m2, keys.Prefix(prefix), written, []byte("wb"), time.Hour, []byte("{}"), nil); err != nil {
		t.Fatal(err)
	}
	stray := prefix + "{public.widgets|v1|9}:v" // matched by the old pattern, never indexed
	if err := rdb.Set(ctx, stray, "x", time.Hour).Err(); err != nil {
		t.Fatal(err)
	}

	n, err := st.FlushTable(ctx, v2) // any version names the table
	if err != nil {
		t.Fatal(err)
	}
	if n != 5 {
		t.Errorf("flush visited %d rows, want 5", n)
	}
	for _, k := range []keys.Key{v1.Key("1"), v1.Key("2"), v2.Key("1"), held, written} {
		if exists(t, rdb, k.Value()) || exists(t, rdb, k.Fence()) {
			t.Errorf("row %s survived the flush", k)
		}
	}
	if !exists(t, rdb, written.Pending()) {
		t.Error("the flush deleted a pending write-back record")
	}
	if !exists(t, rdb, other.Key("1").Value()) {
		t.Error("the flush deleted another table's row")
	}
	if !exists(t, rdb, stray) {
		t.Error("the flush deleted a key its index does not name")
	}
	// The flush keeps its entries: a lease added just before it may still be on its way.
	if n, err := st.FlushTable(ctx, v1); err != nil || n != 5 {
		t.Errorf("second flush visited %d rows (%v), want the same 5", n, err)
	}
	if _, err := st.TakeLeases(ctx, store.Model{}, []keys.Key{v1.Key("5")}, time.Minute); err == nil {
		t.Error("a lease of a Model without an index was taken")
	}
}

// TestIndexPruned: expired index entries go, a bounded number per add and as many as a
// flush visited; live ones stay.
func TestIndexPruned(t *testing.T) {
	t.Parallel()
	rd := servers.Redis(t)
	rdb := rd.Client(t)
	ctx := context.Background()
	st := store.New(rdb, 5*time.Second, "test")
	sp := space(t, rd.Prefix(t), "public.widgets", "v1")
	m := store.NewModel(sp, time.Hour)
	idx := sp.TableIndex()
	// A first lease loads the scripts: a pipeline that found one unknown runs again.
	warm := space(t, sp.Prefix(), "public.gadgets", "v1")
	lease(t, st, store.NewModel(warm, time.Hour), warm.Key("1"))
	expired := make([]redis.Z, 200) // as if added long ago
	for i := range expired {
		expired[i] = redis.Z{Score: 1000, Member: sp.Key("old", string(rune('a'+i%26)), string(rune('a'+i/26))).Value()}
	}
	if err := rdb.ZAdd(ctx, idx, expired...).Err(); err != nil {
		t.Fatal(err)
	}
	lease(t, st, m, sp.Key("1"))
	if n := rdb.ZCard(ctx, idx).Val(); n != 200+1-(1+64) {
		t.Fatalf("after an add of one row, the index holds %d entries, want %d: 65 expired ones pruned", n, 200+1-65)
	}
	if _, err := st.FlushTable(ctx, sp); err != nil {
		t.Fatal(err)
	}
	if got := rdb.ZRange(ctx, idx, 0, -1).Val(); len(got) != 1 || got[0] != sp.Key("1").Value() {
		t.Fatalf("after a flush the index holds %d entries (%.3q...), want only the live row", len(got), got[:min(len(got), 3)])
	}
	score := rdb.ZScore(ctx, idx, sp.Key("1").Value()).Val()
	now := float64(time.Now().UnixMilli())
	if lo, hi := now+float64(time.Hour.Milliseconds()), now+float64((time.Hour+2*time.Minute).Milliseconds()); score < lo-5000 || score > hi {
		t.Fatalf("the live entry's score is %v, want about now + lifetime + margin (%v..%v)", score, lo, hi)
	}
}

// TestReadOrLeaseIndexPruned: ReadOrLease prunes expired index entries when its row is
// new to the index (the only time the index grows) and not when the row is leased
// again, whose entry it only moves later.
func TestReadOrLeaseIndexPruned(t *testing.T) {
	t.Parallel()
	rd := servers.Redis(t)
	rdb := rd.Client(t)
	ctx := context.Background()
	st := store.New(rdb, 5*time.Second, "test")
	sp := space(t, rd.Prefix(t), "public.widgets", "v1")
	m := store.NewModel(sp, time.Hour)
	idx := sp.TableIndex()
	readOrLease := func(k keys.Key) {
		t.Helper()
		l, err := st.ReadOrLease(ctx, m, k, time.Minute)
		if err != nil || l.State != store.Acquired {
			t.Fatalf("ReadOrLease(%s) = %+v, %v; want the lease", k, l, err)
		}
		if err := st.Invalidate(ctx, k); err != nil { // so that it can be leased again
			t.Fatal(err)
		}
	}
	readOrLease(sp.Key("1"))
	expired := make([]redis.Z, 200) // as if added long ago
	for i := range expired {
		expired[i] = redis.Z{Score: 1000, Member: sp.Key("old", string(rune('a'+i%26)), string(rune('a'+i/26))).Value()}
	}
	if err := rdb.ZAdd(ctx, idx, expired...).Err(); err != nil {
		t.Fatal(err)
	}
	before := rdb.ZScore(ctx, idx, sp.Key("1").Value()).Val()
	readOrLease(sp.Key("1"))
	if n := rdb.ZCard(ctx, idx).Val(); n != 201 {
		t.Fatalf("after a row already listed was leased again, the index holds %d entries, want 201: none pruned", n)
	}
	if after := rdb.ZScore(ctx, idx, sp.Key("1").Value()).Val(); after < before {
		t.Fatalf("the row's score went from %v to %v; a lease must not move it earlier", before, after)
	}
	readOrLease(sp.Key("2"))
	if n := rdb.ZCard(ctx, idx).Val(); n != 202-(1+64) {
		t.Fatalf("after a new row was leased, the index holds %d entries, want %d: 65 expired ones pruned", n, 202-65)
	}
}
