package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/pgcache/pgcache/internal/store"
	"github.com/pgcache/pgcache/keys"
)

// TestReadOrLease: the combined read keeps TakeLease's promises on a single Redis. A
// lease it takes comes with the model in the registry and the row in the table's
// index (scored past the lease and the value's lifetime), so an invalidation or a
// table flush after it voids the fill; a live lease is Held; a cached or pending entry
// is Found, and then no lease is taken.
func TestReadOrLease(t *testing.T) {
	t.Parallel()
	rd := servers.Redis(t)
	rdb := rd.Client(t)
	prefix := rd.Prefix(t)
	ctx := context.Background()
	st := store.New(rdb, 5*time.Second, "test")
	sp := space(t, prefix, "public.widgets", "v1")
	m := store.NewModel(sp, time.Hour)
	acquire := func(k keys.Key) store.Lease {
		t.Helper()
		l, err := st.ReadOrLease(ctx, m, k, time.Minute)
		if err != nil || l.State != store.Acquired {
			t.Fatalf("ReadOrLease(%s) = %+v, %v; want the lease", k, l, err)
		}
		return l
	}

	k := sp.Key("1")
	start := time.Now()
	l := acquire(k)
	if ok, err := rdb.HExists(ctx, keys.Prefix(prefix).Registry(), sp.RegistryField()).Result(); err != nil || !ok {
		t.Fatalf("registry field %s after the lease: %v, %v", sp.RegistryField(), ok, err)
	}
	score, err := rdb.ZScore(ctx, sp.TableIndex(), k.Value()).Result()
	if err != nil || time.UnixMilli(int64(score)).Before(start.Add(time.Hour)) {
		t.Fatalf("index score of %s = %v, %v; want past the model's lifetime", k, score, err)
	}
	if l2, err := st.ReadOrLease(ctx, m, k, time.Minute); err != nil || l2.State != store.Held || l2.Wait <= 0 {
		t.Fatalf("second ReadOrLease = %+v, %v; want Held", l2, err)
	}
	if ok, err := st.Fill(ctx, k, l.Token, []byte("row"), time.Hour); err != nil || !ok {
		t.Fatalf("Fill = %v, %v", ok, err)
	}
	if f, err := st.ReadOrLease(ctx, m, k, time.Minute); err != nil || f.State != store.Found || string(f.Value) != "row" {
		t.Fatalf("ReadOrLease of a cached row = %+v, %v; want Found", f, err)
	}
	if exists(t, rdb, k.Fence()) {
		t.Fatal("a read that found the row left a lease")
	}

	// An invalidation after the lease voids the fill.
	k2 := sp.Key("2")
	l = acquire(k2)
	if err := st.Invalidate(ctx, k2); err != nil {
		t.Fatal(err)
	}
	if ok, err := st.Fill(ctx, k2, l.Token, []byte("old"), time.Hour); err != nil || ok {
		t.Fatalf("Fill after an invalidation = %v, %v; want refused", ok, err)
	}

	// A table flush after the lease finds the row in the index and voids the fill.
	k3 := sp.Key("3")
	l = acquire(k3)
	if _, err := st.FlushTable(ctx, sp); err != nil {
		t.Fatal(err)
	}
	if ok, err := st.Fill(ctx, k3, l.Token, []byte("old"), time.Hour); err != nil || ok {
		t.Fatalf("Fill after a table flush = %v, %v; want refused", ok, err)
	}

	// A pending write-back entry is Found, and no lease is taken.
	k4 := sp.Key("4")
	if err := rdb.HSet(ctx, k4.Pending(), "e", "pending").Err(); err != nil {
		t.Fatal(err)
	}
	if f, err := st.ReadOrLease(ctx, m, k4, time.Minute); err != nil || f.State != store.Found || string(f.Value) != "pending" {
		t.Fatalf("ReadOrLease of a pending row = %+v, %v; want its entry", f, err)
	}
	if exists(t, rdb, k4.Fence()) {
		t.Fatal("a read that found a pending write left a lease")
	}
}
