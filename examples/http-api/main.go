// HTTP API: JSON responses cached in Redis by package httpcache, dropped when a row
// they show changes, whoever changes it.
//
//	eval "$(scripts/env.sh)" && go run -C examples ./http-api
//
// A small API over authors and their books runs on a local port, with the response
// cache in front and the invalidation worker in-process. The program asks it for an
// author twice (a miss, then a hit, with the CDN headers), conditionally (304 Not
// Modified), changes the author with raw SQL outside the library (the next responses
// show the change once the worker saw the commit: never the old name after that), and
// changes a book through the library (the next response shows it at once).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/pgcache/pgcache/cdc"
	"github.com/pgcache/pgcache/examples/internal/demo"
	"github.com/pgcache/pgcache/httpcache"
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

// purges prints the tags the worker purges (a CDN's purge API would get them).
type purges struct {
	mu   sync.Mutex
	tags map[string]bool
}

func (p *purges) Purge(_ context.Context, tags []string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, t := range tags {
		p.tags[t] = true
	}
	return nil
}

func (p *purges) has(tag string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.tags[tag]
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
	p := &purges{tags: map[string]bool{}}
	stopWorker, err := demo.StartWorker(ctx, log, rdb, invalidator.WorkerOptions{
		Postgres:    pgURL,
		Stream:      cdc.Options{Slot: "httpapi", Publication: "httpapi", Tables: []string{"authors", "books"}, StatusInterval: time.Second},
		Invalidator: invalidator.Options{Prefix: "httpapi", Purger: p},
	})
	if err != nil {
		return err
	}
	defer stopWorker()

	responses, err := httpcache.New(rdb, httpcache.Options{Prefix: "httpapi", TTL: time.Hour, RedisTimeout: time.Second, Logger: log})
	if err != nil {
		return err
	}
	api, err := responses.Wrap(httpcache.Route{SMaxAge: 10 * time.Minute, StaleWhileRevalidate: time.Minute}, handler(authors, books))
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: api, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Shutdown(context.WithoutCancel(ctx)) //nolint:errcheck // the program ends
	base := "http://" + ln.Addr().String()

	// 1. A miss, then a hit.
	fmt.Println("1. GET /authors/1 twice:")
	first, err := fetch(base+"/authors/1", "")
	if err != nil {
		return err
	}
	second, err := fetch(base+"/authors/1", "")
	if err != nil {
		return err
	}
	if first.cache != "MISS" || second.cache != "HIT" || second.body != first.body {
		return fmt.Errorf("want a miss then a hit with one body, got %s %q, %s %q", first.cache, first.body, second.cache, second.body)
	}
	fmt.Printf("   %s then %s: %s", first.cache, second.cache, second.body)
	fmt.Printf("   ETag: %s\n   Cache-Control: %s\n   Surrogate-Key: %s\n\n", second.etag, second.header.Get("Cache-Control"), second.header.Get("Surrogate-Key"))

	// 2. Conditional GET.
	cond, err := fetch(base+"/authors/1", second.etag)
	if err != nil {
		return err
	}
	if cond.status != http.StatusNotModified || cond.body != "" {
		return fmt.Errorf("If-None-Match: %d %q", cond.status, cond.body)
	}
	fmt.Printf("2. GET /authors/1 with If-None-Match: %s: %d Not Modified, no body, nothing rendered\n\n", second.etag, cond.status)

	// 3. Raw SQL, outside the library: the worker drops the response (and purges its tags).
	fmt.Println("3. Raw SQL renames author 1 to Augusta, outside the library.")
	if err := db.Exec(`UPDATE authors SET name = 'Augusta' WHERE id = 1`).Error; err != nil {
		return err
	}
	deadline := time.Now().Add(20 * time.Second)
	var fresh response
	for {
		if fresh, err = fetch(base+"/authors/1", ""); err != nil {
			return err
		}
		if strings.Contains(fresh.body, "Augusta") {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("author 1 still %q after 20s", fresh.body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	again, err := fetch(base+"/authors/1", "")
	if err != nil {
		return err
	}
	if !strings.Contains(again.body, "Augusta") || again.cache != "HIT" {
		return fmt.Errorf("after the change: %s %q", again.cache, again.body)
	}
	// The old response's tags: the row's ("pgc-…") and the table's ("pgct-…", purged
	// only when the whole table is invalidated, as at the worker's first start).
	rowTag := ""
	for _, t := range strings.Fields(second.header.Get("Surrogate-Key")) {
		if strings.HasPrefix(t, "pgc-") {
			rowTag = t
		}
	}
	// The worker purges after it deleted the row's keys in Redis, before it confirms
	// the commit: the tag may come a moment after the fresh response.
	for !p.has(rowTag) {
		if time.Now().After(deadline) {
			return fmt.Errorf("the worker did not purge the row's tag %q", rowTag)
		}
		time.Sleep(20 * time.Millisecond)
	}
	fmt.Printf("   the API answers %s (%s), then %s from the cache; the worker purged the row's tag %s\n\n",
		strings.TrimSpace(fresh.body), fresh.cache, again.cache, rowTag)

	// 4. A write through the library: the response that showed the row is gone at once.
	fmt.Println("4. GET /authors/1/books, then books.Save renames book 2 through the library:")
	if _, err := fetch(base+"/authors/1/books", ""); err != nil {
		return err
	}
	if err := books.Save(ctx, &Book{ID: 2, AuthorID: 1, Title: "Sketches, 2nd ed."}); err != nil {
		return err
	}
	list, err := fetch(base+"/authors/1/books", "")
	if err != nil {
		return err
	}
	if !strings.Contains(list.body, "2nd ed.") || list.cache != "MISS" {
		return fmt.Errorf("after Save: %s %q", list.cache, list.body)
	}
	fmt.Printf("   the next GET renders again (%s) and shows %q at once\n\n", list.cache, "Sketches, 2nd ed.")
	fmt.Printf("Stats: %+v\n", responses.Stats())
	return nil
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

// fetch GETs url, with If-None-Match when etag is not empty.
func fetch(url, etag string) (response, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return response{}, err
	}
	if etag != "" {
		req.Header.Set("If-None-Match", etag)
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
