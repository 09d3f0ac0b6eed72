package httpcache_test

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgcache/pgcache/httpcache"
	"github.com/pgcache/pgcache/internal/testhooks"
	"github.com/pgcache/pgcache/readthrough"
	"github.com/pgcache/pgcache/writepolicy"
)

// Memo is a write-back model: its writes go to Redis, a flusher applies them later.
type Memo struct {
	ID   int64  `gorm:"primaryKey" json:"id"`
	Body string `json:"body"`
}

// TestWriteBackDropsResponses: a write-back Save (and Delete) of a row drops the cached
// responses that showed it at once, as other library writes do: the write's script
// deletes the row's dependency epoch with its value. No flusher and no worker run, so
// nothing else could drop them. The control, with the epoch kept as before, serves the
// old response after the write.
func TestWriteBackDropsResponses(t *testing.T) {
	t.Parallel()
	for _, control := range []bool{false, true} {
		t.Run(map[bool]string{false: "epoch-deleted", true: "control-epoch-kept"}[control], func(t *testing.T) {
			t.Parallel()
			memos, h := memoAPI(t, writepolicy.WriteBack)

			ctx := testhooks.WithWriteBack(context.Background(), &testhooks.WriteBack{KeepEpoch: control})
			if err := memos.Save(ctx, &Memo{ID: 1, Body: "new-one"}); err != nil {
				t.Fatal(err)
			}
			if err := memos.Delete(ctx, int64(2)); err != nil {
				t.Fatal(err)
			}
			one, two := get(bg, h, "/memos/1"), get(bg, h, "/memos/2")
			if control {
				// The old behaviour: the responses outlive the write.
				if !strings.Contains(one.Body.String(), "old-one") || one.Header().Get("X-Cache") != "HIT" ||
					!strings.Contains(two.Body.String(), "old-two") || two.Header().Get("X-Cache") != "HIT" {
					t.Fatalf("control: after the writes /memos/1 = %s %q, /memos/2 = %s %d %q; want both old responses, hits",
						one.Header().Get("X-Cache"), one.Body, two.Header().Get("X-Cache"), two.Code, two.Body)
				}
				return
			}
			if !strings.Contains(one.Body.String(), "new-one") || one.Header().Get("X-Cache") != "MISS" {
				t.Errorf("after a write-back Save, /memos/1 = %s %q, want a render of new-one", one.Header().Get("X-Cache"), one.Body)
			}
			if two.Code != http.StatusNotFound || two.Header().Get("X-Cache") == "HIT" {
				t.Errorf("after a write-back Delete, /memos/2 = %s %d %q, want a render answering 404", two.Header().Get("X-Cache"), two.Code, two.Body)
			}
		})
	}
}

// TestWriteThroughDropsResponses: a write-through Save and Delete drop the responses
// that showed the row before they return, as invalidate's do (TestLibraryWrite).
func TestWriteThroughDropsResponses(t *testing.T) {
	t.Parallel()
	memos, h := memoAPI(t, writepolicy.WriteThrough)
	if err := memos.Save(bg, &Memo{ID: 1, Body: "new-one"}); err != nil {
		t.Fatal(err)
	}
	if err := memos.Delete(bg, int64(2)); err != nil {
		t.Fatal(err)
	}
	if w := get(bg, h, "/memos/1"); !strings.Contains(w.Body.String(), "new-one") || w.Header().Get("X-Cache") != "MISS" {
		t.Errorf("after a write-through Save, /memos/1 = %s %q, want a render of new-one", w.Header().Get("X-Cache"), w.Body)
	}
	if w := get(bg, h, "/memos/2"); w.Code != http.StatusNotFound || w.Header().Get("X-Cache") == "HIT" {
		t.Errorf("after a write-through Delete, /memos/2 = %s %d %q, want a render answering 404", w.Header().Get("X-Cache"), w.Code, w.Body)
	}
}

// memoAPI is a memos table with rows 1 (old-one) and 2 (old-two), its repository under
// policy, and GET /memos/{id} behind the response cache, both responses cached.
func memoAPI(t *testing.T, policy writepolicy.Policy) (*readthrough.Repository[Memo], http.Handler) {
	t.Helper()
	e := newEnv(t)
	if err := e.db.AutoMigrate(&Memo{}); err != nil {
		t.Fatal(err)
	}
	e.exec(t, `INSERT INTO memos (id, body) VALUES (1, 'old-one'), (2, 'old-two')`)
	cache, err := readthrough.New(e.db, e.rdb, readthrough.Options{Prefix: e.prefix, RedisTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	memos, err := readthrough.Register[Memo](cache, readthrough.ModelOptions{WritePolicy: policy})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /memos/{id}", one(func(r *http.Request) (Memo, bool, error) {
		id, _ := strconv.ParseInt(r.PathValue("id"), 10, 64)
		return memos.Get(r.Context(), id)
	}))
	h := wrap(t, e.cache(t, httpcache.Options{}), httpcache.Route{}, mux)
	for _, target := range []string{"/memos/1", "/memos/2"} {
		get(bg, h, target)
		if w := get(bg, h, target); w.Header().Get("X-Cache") != "HIT" {
			t.Fatalf("%s: not cached (%s)", target, w.Header().Get("X-Cache"))
		}
	}
	return memos, h
}
