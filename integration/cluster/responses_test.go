package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pgcache/pgcache/httpcache"
	"github.com/pgcache/pgcache/internal/testhooks"
	"github.com/pgcache/pgcache/readthrough"
	"github.com/pgcache/pgcache/writepolicy"
)

// Ticket is the row the response test's handler shows.
type Ticket struct {
	ID    int64 `gorm:"primaryKey"`
	Title string
}

// testResponses: cached HTTP responses on a Redis Cluster, where a response's entry
// and the dependency keys of the rows it shows are in other slots, on other masters:
// a response is stored and hit, and once a row it shows is invalidated it is found
// stale (checked in a second round trip, the script of one server cannot read them)
// and rendered again with the new row; a render that raced the change is not stored.
func testResponses(t *testing.T, rdb *redis.ClusterClient) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	db, repo := cachedModel[Ticket](t, rdb, "cl-http", `INSERT INTO tickets SELECT g, 'v0-' || g FROM generate_series(1, 20) g`, readthrough.ModelOptions{})
	rc, err := httpcache.New(rdb, httpcache.Options{Prefix: "cl-http", RedisTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var change func() // called by the handler between its read and its answer, once
	h, err := rc.Wrap(httpcache.Route{TTL: time.Hour}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Five rows, so that the dependency keys spread over the masters.
		var out []Ticket
		for id := int64(1); id <= 5; id++ {
			tk, ok, err := repo.Get(r.Context(), id)
			if err != nil || !ok {
				http.Error(w, fmt.Sprint(ok, err), http.StatusInternalServerError)
				return
			}
			out = append(out, tk)
		}
		if change != nil {
			change()
			change = nil
		}
		_ = json.NewEncoder(w).Encode(out)
	}))
	if err != nil {
		t.Fatal(err)
	}
	get := func(want string) string {
		t.Helper()
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequestWithContext(ctx, http.MethodGet, "/tickets", nil))
		var out []Ticket
		if err := json.Unmarshal(w.Body.Bytes(), &out); w.Code != http.StatusOK || err != nil || len(out) != 5 {
			t.Fatalf("GET /tickets: %d %q", w.Code, w.Body)
		}
		if out[2].Title != want {
			t.Fatalf("ticket 3 is %q (%s), want %q", out[2].Title, w.Header().Get("X-Cache"), want)
		}
		return w.Header().Get("X-Cache")
	}
	update := func(title string) {
		t.Helper()
		if err := db.Exec(`UPDATE tickets SET title = ? WHERE id = 3`, title).Error; err != nil {
			t.Fatal(err)
		}
		if err := repo.Invalidate(ctx, int64(3)); err != nil {
			t.Fatal(err)
		}
	}

	if got := get("v0-3"); got != "MISS" {
		t.Fatalf("first GET: %s, want MISS", got)
	}
	if got := get("v0-3"); got != "HIT" {
		t.Fatalf("second GET: %s, want HIT", got)
	}
	update("v1")
	if got := get("v1"); got != "MISS" {
		t.Fatalf("GET after the change: %s, want MISS (the stored response is stale)", got)
	}
	if s := rc.Stats(); s.Stale != 1 {
		t.Fatalf("stats %+v, want one response found stale", s)
	}
	// A render during which a row it read changes shows the old row once and is not
	// stored: the next request renders the new one.
	change = func() { update("v2") }
	rc2 := rc.Stats()
	if err := repo.Invalidate(ctx, int64(1)); err != nil { // drop the stored response
		t.Fatal(err)
	}
	if got := get("v1"); got != "MISS" {
		t.Fatalf("GET racing the change: %s, want MISS", got)
	}
	if s := rc.Stats(); s.Fenced != rc2.Fenced+1 {
		t.Fatalf("stats %+v, want the racing render fenced", s)
	}
	if got := get("v2"); got != "MISS" {
		t.Fatalf("GET after the racing render: %s, want MISS (it was not stored)", got)
	}
	if got := get("v2"); got != "HIT" {
		t.Fatalf("GET: %s, want HIT", got)
	}
}

// testWriteBackResponses is integration/httpcache's TestWriteBackDropsResponses on the
// Cluster: a write-back Save and Delete, which land in the row's slot in a script of
// their own, delete the rows' dependency epochs there, so the cached responses that
// showed the rows are rendered again. The control (testhooks.WriteBack.KeepEpoch)
// keeps the epochs: the old responses are served, hits.
func testWriteBackResponses(t *testing.T, rdb *redis.ClusterClient) {
	for _, control := range []bool{false, true} {
		t.Run(map[bool]string{false: "epoch-deleted", true: "control-epoch-kept"}[control], func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			prefix := fmt.Sprintf("cl-wbhttp-%t", control)
			_, repo := cachedModel[Ticket](t, rdb, prefix, `INSERT INTO tickets VALUES (1, 'old-one'), (2, 'old-two')`,
				readthrough.ModelOptions{WritePolicy: writepolicy.WriteBack})
			rc, err := httpcache.New(rdb, httpcache.Options{Prefix: prefix, RedisTimeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			h, err := rc.Wrap(httpcache.Route{TTL: time.Hour}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				id, _ := strconv.ParseInt(strings.TrimPrefix(r.URL.Path, "/tickets/"), 10, 64)
				tk, ok, err := repo.Get(r.Context(), id)
				switch {
				case err != nil:
					http.Error(w, err.Error(), http.StatusInternalServerError)
				case !ok:
					http.NotFound(w, r)
				default:
					_ = json.NewEncoder(w).Encode(tk)
				}
			}))
			if err != nil {
				t.Fatal(err)
			}
			get := func(target string) *httptest.ResponseRecorder {
				w := httptest.NewRecorder()
				h.ServeHTTP(w, httptest.NewRequestWithContext(ctx, http.MethodGet, target, nil))
				return w
			}
			for _, target := range []string{"/tickets/1", "/tickets/2"} {
				get(target)
				if w := get(target); w.Header().Get("X-Cache") != "HIT" {
					t.Fatalf("%s: not cached (%s)", target, w.Header().Get("X-Cache"))
				}
			}
			wctx := testhooks.WithWriteBack(ctx, &testhooks.WriteBack{KeepEpoch: control})
			if err := repo.Save(wctx, &Ticket{ID: 1, Title: "new-one"}); err != nil {
				t.Fatal(err)
			}
			if err := repo.Delete(wctx, int64(2)); err != nil {
				t.Fatal(err)
			}
			one, two := get("/tickets/1"), get("/tickets/2")
			if control {
				if !strings.Contains(one.Body.String(), "old-one") || one.Header().Get("X-Cache") != "HIT" ||
					!strings.Contains(two.Body.String(), "old-two") || two.Header().Get("X-Cache") != "HIT" {
					t.Fatalf("control: /tickets/1 = %s %q, /tickets/2 = %s %q; want both old responses, hits",
						one.Header().Get("X-Cache"), one.Body, two.Header().Get("X-Cache"), two.Body)
				}
				return
			}
			if !strings.Contains(one.Body.String(), "new-one") || one.Header().Get("X-Cache") != "MISS" {
				t.Errorf("after a write-back Save, /tickets/1 = %s %q, want a render of new-one", one.Header().Get("X-Cache"), one.Body)
			}
			if two.Code != http.StatusNotFound || two.Header().Get("X-Cache") == "HIT" {
				t.Errorf("after a write-back Delete, /tickets/2 = %s %d %q, want a render answering 404", two.Header().Get("X-Cache"), two.Code, two.Body)
			}
		})
	}
}
