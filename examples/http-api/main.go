// HTTP API behind Varnish: JSON responses cached by package httpcache in Redis and by a
// Varnish in front, both dropped when a row they show changes, whoever changes it.
//
//	eval "$(scripts/env.sh)" && go run -C examples ./http-api
//
// A small API over authors and their books runs behind the response cache's middleware,
// with a Varnish in front of it (deploy/varnish/pgcache.vcl, in a container started
// through the test harness) and the invalidation worker in-process, purging Varnish by
// tag (package httpcache/varnish) when rows change:
//
//	client → Varnish → httpcache middleware → handler → repositories → Redis / Postgres
//	                ↖ PURGE xkey-purge: pgc-…  ← worker ← Postgres logical replication
//
// The program asks the API itself for an author (the headers Varnish relies on), asks
// Varnish twice (a miss, then a hit the API never sees), conditionally (304 Not
// Modified from Varnish), changes the author with raw SQL outside the library (Varnish
// serves the change once the worker purged it: never the old name after that), and
// changes a book through the library (the API renders it at once, Varnish once the
// worker has seen the commit).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/pgcache/pgcache/cdc"
	"github.com/pgcache/pgcache/examples/internal/demo"
	"github.com/pgcache/pgcache/httpcache"
	"github.com/pgcache/pgcache/httpcache/varnish"
	"github.com/pgcache/pgcache/invalidator"
	"github.com/pgcache/pgcache/readthrough"
)

// Author is a writer.
type Author struct {
	ID   int64  `gorm:"primaryKey" json:"id"`
	Name string `json:"name"`
}

// Book belongs to an author: a has-many list.
type Book struct {
	ID       int64  `gorm:"primaryKey" json:"id"`
	AuthorID int64  `gorm:"index" json:"author_id"`
	Title    string `json:"title"`
}

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(context.Background(), log); err != nil {
		log.Error("http-api failed", "error", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, log *slog.Logger) error {
	pgURL, redisAddr, stop, err := demo.Servers(ctx, log)
	if err != nil {
		return err
	}
	defer stop()
	db, err := gorm.Open(postgres.Open(pgURL), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		return err
	}
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr, ContextTimeoutEnabled: true})
	defer rdb.Close()

	if err := db.Migrator().DropTable(&Author{}, &Book{}); err != nil {
		return err
	}
	if err := db.AutoMigrate(&Author{}, &Book{}); err != nil {
		return err
	}
	err = errors.Join(
		db.Exec(`INSERT INTO authors (id, name) VALUES (1, 'Ada'), (2, 'Grace')`).Error,
		db.Exec(`INSERT INTO books (id, author_id, title) VALUES (1, 1, 'Notes'), (2, 1, 'Sketches'), (3, 2, 'Compilers')`).Error,
	)
	if err != nil {
		return err
	}
	cache, err := readthrough.New(db, rdb, readthrough.Options{Prefix: "httpapi", Logger: log, RedisTimeout: time.Second})
	if err != nil {
		return err
	}
	authors, err := readthrough.Register[Author](cache, readthrough.ModelOptions{})
	if err != nil {
		return err
	}
	books, err := readthrough.Register[Book](cache, readthrough.ModelOptions{Lists: [][]string{{"AuthorID"}}})
	if err != nil {
		return err
	}

	// The response cache tags each response with its rows in the header Varnish's xkey
	// module reads; Varnish keeps them with the object and strips them from its answers.
	responses, err := httpcache.New(rdb, httpcache.Options{Prefix: "httpapi", TagHeader: "xkey", TTL: time.Hour, RedisTimeout: time.Second, Logger: log})
	if err != nil {
		return err
	}
	api, err := responses.Wrap(httpcache.Route{SMaxAge: 10 * time.Minute, StaleWhileRevalidate: time.Minute}, handler(authors, books))
	if err != nil {
		return err
	}
	var reached atomic.Int64 // requests that reached the API: Varnish answers the others
	front, stopFront, err := demo.Varnish(ctx, log, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		api.ServeHTTP(w, r)
	}))
	if err != nil {
		return err
	}
	defer stopFront()

	// The worker purges Varnish by tag once it has deleted the changed rows' keys.
	purger, err := varnish.NewPurger(varnish.Options{URLs: []string{front.Purge}, Logger: log})
	if err != nil {
		return err
	}
	stopWorker, err := demo.StartWorker(ctx, log, rdb, invalidator.WorkerOptions{
		Postgres:    pgURL,
		Stream:      cdc.Options{Slot: "httpapi", Publication: "httpapi", Tables: []string{"authors", "books"}, StatusInterval: time.Second},
		Invalidator: invalidator.Options{Prefix: "httpapi", Purger: purger},
	})
	if err != nil {
		return err
	}
	defer stopWorker()

	// 1. The API itself, asked as Varnish will ask it (Varnish passes on the client's
	// Host, part of the response cache's key): the headers a CDN or Varnish relies on.
	varnishHost := strings.TrimPrefix(front.Varnish, "http://")
	fmt.Println("1. GET /authors/1 from the API itself, as Varnish will ask it:")
	direct, err := fetch(front.Backend+"/authors/1", "Host", varnishHost)
	if err != nil {
		return err
	}
	cc, tags := direct.header.Get("Cache-Control"), direct.header.Get("Xkey")
	if direct.status != http.StatusOK || !strings.Contains(cc, "s-maxage=") || !strings.Contains(tags, "pgc-") || direct.etag == "" {
		return fmt.Errorf("the API answered %d with Cache-Control %q, xkey %q, ETag %q: want 200, s-maxage, the row's pgc- tag and an ETag",
			direct.status, cc, tags, direct.etag)
	}
	fmt.Printf("   %d %s (%s: rendered, stored in Redis)\n   Cache-Control: %s\n   xkey: %s\n   ETag: %s\n\n",
		direct.status, strings.TrimSpace(direct.body), direct.cache, cc, tags, direct.etag)

	// 2. Through Varnish: a miss (Varnish fetches from the API, which answers from
	// Redis without rendering), then a hit the API never sees.
	fmt.Println("2. GET /authors/1 through Varnish twice:")
	renders := responses.Stats().Renders
	first, err := fetch(front.Varnish + "/authors/1")
	if err != nil {
		return err
	}
	before := reached.Load()
	second, err := fetch(front.Varnish + "/authors/1")
	if err != nil {
		return err
	}
	if first.cache != "MISS" || second.cache != "HIT" || second.body != direct.body || reached.Load() != before {
		return fmt.Errorf("want a Varnish miss then a hit the API does not see, with one body: got %s %q, %s %q; the API saw %d requests more",
			first.cache, first.body, second.cache, second.body, reached.Load()-before)
	}
	if n := responses.Stats().Renders - renders; n != 0 {
		return fmt.Errorf("the handler rendered %d times for Varnish's miss: want it answered from Redis (step 1 stored it)", n)
	}
	if second.header.Get("Age") == "" || len(strings.Fields(second.header.Get("X-Varnish"))) != 2 || second.etag != direct.etag || second.header.Get("Xkey") != "" {
		return fmt.Errorf("the hit from Varnish: Age %q, X-Varnish %q (want two transaction ids), ETag %q (want the API's %q), xkey %q (want none)",
			second.header.Get("Age"), second.header.Get("X-Varnish"), second.etag, direct.etag, second.header.Get("Xkey"))
	}
	fmt.Printf("   %s (the API answered from Redis, nothing rendered) then %s (Age: %s, X-Varnish: %s); the API did not see the second request\n\n",
		first.cache, second.cache, second.header.Get("Age"), second.header.Get("X-Varnish"))

	// 3. Conditional GET: Varnish answers it from its copy.
	before = reached.Load()
	cond, err := fetch(front.Varnish+"/authors/1", "If-None-Match", second.etag)
	if err != nil {
		return err
	}
	if cond.status != http.StatusNotModified || cond.body != "" || reached.Load() != before {
		return fmt.Errorf("If-None-Match through Varnish: %d %q, the API saw %d requests: want 304 from Varnish", cond.status, cond.body, reached.Load()-before)
	}
	fmt.Printf("3. GET /authors/1 through Varnish with If-None-Match: %s: %d Not Modified (%s), no body\n\n", second.etag, cond.status, cond.cache)

	// 4. Raw SQL, outside the library: the worker drops the cached response in Redis,
	// then purges its tags in Varnish.
	fmt.Println("4. Raw SQL renames author 1 to Augusta, outside the library.")
	if err := db.Exec(`UPDATE authors SET name = 'Augusta' WHERE id = 1`).Error; err != nil {
		return err
	}
	fresh, err := untilServed(front.Varnish+"/authors/1", "Augusta", "Ada")
	if err != nil {
		return err
	}
	fmt.Printf("   Varnish serves %s after the worker's purge, then from its cache (%s)\n\n", strings.TrimSpace(fresh.body), fresh.cache)

	// 5. A write through the library: the API renders the list again at once; Varnish
	// drops its copy when the worker sees the commit (only the worker purges).
	fmt.Println("5. GET /authors/1/books through Varnish, then books.Save renames book 2 through the library:")
	// Varnish caches the list (untilServed ends on a Varnish hit).
	if _, err := untilServed(front.Varnish+"/authors/1/books", "Sketches", "2nd ed."); err != nil {
		return err
	}
	if err := books.Save(ctx, &Book{ID: 2, AuthorID: 1, Title: "Sketches, 2nd ed."}); err != nil {
		return err
	}
	list, err := fetch(front.Backend+"/authors/1/books", "Host", varnishHost)
	if err != nil {
		return err
	}
	if !strings.Contains(list.body, "2nd ed.") || list.cache != "MISS" {
		return fmt.Errorf("the API after Save: %s %q, want a render showing the new title", list.cache, list.body)
	}
	fmt.Printf("   the API renders again (%s) and shows %q at once\n", list.cache, "Sketches, 2nd ed.")
	if list, err = untilServed(front.Varnish+"/authors/1/books", "2nd ed.", "Sketches\""); err != nil {
		return err
	}
	fmt.Printf("   Varnish serves it after the worker's purge, then from its cache (%s)\n\n", list.cache)

	fmt.Printf("Requests that reached the API: %d\nResponse cache: %+v\n", reached.Load(), responses.Stats())
	return nil
}

// untilServed GETs url until the body contains want, for at most 30 s, then a few
// times more: once a cache served the change it must never serve old again, and the
// last answer must be a Varnish hit. It returns that last answer.
func untilServed(url, want, old string) (response, error) {
	deadline := time.Now().Add(30 * time.Second)
	var r response
	var err error
	for {
		if r, err = fetch(url); err != nil {
			return r, err
		}
		if r.status == http.StatusOK && strings.Contains(r.body, want) {
			break
		}
		if time.Now().After(deadline) {
			return r, fmt.Errorf("%s still answers %d %q 30 s after the change: was the purge lost? (the worker logs purge failures)", url, r.status, r.body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for range 3 {
		if r, err = fetch(url); err != nil {
			return r, err
		}
		if !strings.Contains(r.body, want) || strings.Contains(r.body, old) {
			return r, fmt.Errorf("%s served %q after it had served %q", url, r.body, want)
		}
	}
	if r.cache != "HIT" {
		return r, fmt.Errorf("%s: Varnish did not cache the new response: X-Cache %q", url, r.cache)
	}
	return r, nil
}

// handler is the API: GET /authors/{id} and GET /authors/{id}/books. It reads through
// the repositories with the request's context, so that the response cache records
// what each response shows.
func handler(authors *readthrough.Repository[Author], books *readthrough.Repository[Book]) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /authors/{id}", func(w http.ResponseWriter, r *http.Request) {
		id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
		if err != nil {
			http.Error(w, "bad id", http.StatusBadRequest)
			return
		}
		a, ok, err := authors.Get(r.Context(), id)
		switch {
		case err != nil:
			http.Error(w, err.Error(), http.StatusInternalServerError)
		case !ok:
			http.NotFound(w, r)
		default:
			writeJSON(w, a)
		}
	})
	mux.HandleFunc("GET /authors/{id}/books", func(w http.ResponseWriter, r *http.Request) {
		id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
		if err != nil {
			http.Error(w, "bad id", http.StatusBadRequest)
			return
		}
		bs, err := books.ListBy("AuthorID").Get(r.Context(), id)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		writeJSON(w, bs)
	})
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

type response struct {
	status      int
	cache, etag string
	body        string
	header      http.Header
}

// fetch GETs url with the request headers given as name, value pairs.
func fetch(url string, header ...string) (response, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return response{}, err
	}
	for i := 0; i+1 < len(header); i += 2 {
		if header[i] == "Host" {
			req.Host = header[i+1]
		} else {
			req.Header.Set(header[i], header[i+1])
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{}, err
	}
	return response{status: resp.StatusCode, cache: resp.Header.Get("X-Cache"), etag: resp.Header.Get("Etag"),
		body: string(b), header: resp.Header}, nil
}
