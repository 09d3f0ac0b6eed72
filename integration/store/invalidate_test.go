package store_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pgcache/pgcache/internal/store"
	"github.com/pgcache/pgcache/keys"
)

// TestInvalidateAnnounced: one pipeline reads the registries and deletes the rows'
// keys, on a single Redis and on a Cluster, where the rows and the registries are in
// different slots: it lists what Announced lists, and leaves no value, lease or
// dependency key of the rows. Without keys it only reads.
func TestInvalidateAnnounced(t *testing.T) {
	t.Parallel()
	for _, top := range []string{"single", "cluster"} {
		t.Run(top, func(t *testing.T) {
			t.Parallel()
			var (
				rdb    redis.UniversalClient
				prefix string
			)
			if top == "single" {
				rd := servers.Redis(t)
				rdb, prefix = rd.Client(t), rd.Prefix(t)
			} else {
				cl := servers.Cluster(t)
				rdb, prefix = cl.Client(t), cl.Prefix(t)
			}
			ctx := context.Background()
			st := store.New(rdb, 5*time.Second, "test")
			sp := space(t, prefix, "public.widgets", "v1")
			m := store.NewModel(sp, time.Hour)
			var ks []keys.Key
			for _, id := range []string{"1", "2", "3", "4"} {
				ks = append(ks, sp.Key(id))
			}
			// Rows 1-3 cached, row 4 leased, and every row read by a cached response.
			lease(t, st, m, ks[:3]...)
			if _, err := st.TakeLease(ctx, m, ks[3], time.Minute); err != nil {
				t.Fatal(err)
			}
			for _, k := range ks {
				if err := rdb.Set(ctx, k.Deps(), "1", time.Hour).Err(); err != nil {
					t.Fatal(err)
				}
			}

			want, err := st.Announced(ctx, prefix)
			if err != nil {
				t.Fatal(err)
			}
			if got := want.Versions["public.widgets"]; !slices.Equal(got, []string{"v1"}) {
				t.Fatalf("Announced lists %v for public.widgets; want [v1]", got)
			}
			read, err := st.InvalidateAnnounced(ctx, prefix, nil)
			if err != nil || !slices.Equal(read.Versions["public.widgets"], want.Versions["public.widgets"]) {
				t.Fatalf("InvalidateAnnounced without keys = %+v, %v; want %+v", read, err, want)
			}
			if !exists(t, rdb, ks[0].Value()) {
				t.Fatal("InvalidateAnnounced without keys deleted a row")
			}

			read, err = st.InvalidateAnnounced(ctx, prefix, ks[1:])
			if err != nil || !slices.Equal(read.Versions["public.widgets"], want.Versions["public.widgets"]) {
				t.Fatalf("InvalidateAnnounced = %+v, %v; want %+v", read, err, want)
			}
			for _, k := range ks[1:] {
				for _, name := range []string{k.Value(), k.Fence(), k.Deps()} {
					if exists(t, rdb, name) {
						t.Errorf("%s left after InvalidateAnnounced", name)
					}
				}
			}
			if !exists(t, rdb, ks[0].Value()) || !exists(t, rdb, ks[0].Deps()) {
				t.Error("InvalidateAnnounced deleted a row it was not given")
			}
		})
	}
}
