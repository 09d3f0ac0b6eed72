package httpcache_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"gorm.io/gorm"

	"github.com/pgcache/pgcache/cdc"
	"github.com/pgcache/pgcache/httpcache"
	"github.com/pgcache/pgcache/integration"
	"github.com/pgcache/pgcache/integration/fixture"
	"github.com/pgcache/pgcache/invalidator"
	"github.com/pgcache/pgcache/keys"
	"github.com/pgcache/pgcache/readthrough"
)

var servers integration.Shared

func TestMain(m *testing.M) { os.Exit(servers.Run(m)) }

// Author and Book are the two models of the API under test.
type Author struct {
	ID    int64  `gorm:"primaryKey" json:"id"`
	Name  string `json:"name"`
	Email string `gorm:"uniqueIndex" json:"email"`
}

type Book struct {
	ID       int64  `gorm:"primaryKey" json:"id"`
	AuthorID int64  `gorm:"index" json:"author_id"`
	Title    string `json:"title"`
}

// env is a database with authors 1 and 2 (a1@x, a2@x) and books 1, 2 (author 1) and 3
// (author 2), their repositories under a prefix of the test's own, and the API's
// handlers.
type env struct {
	pg      *integration.Database
	db      *gorm.DB
	rdb     *redis.Client
	prefix  string
	authors *readthrough.Repository[Author]
	books   *readthrough.Repository[Book]
	// renders counts handler calls by route name.
	mu      sync.Mutex
	renders map[string]int
}

func newEnv(t testing.TB) *env {
	t.Helper()
	pg := servers.Postgres(t).NewDatabase(t)
	rd := servers.Redis(t)
	e := &env{pg: pg, db: fixture.Open(t, pg.RoleURL), rdb: rd.Client(t), prefix: rd.Prefix(t), renders: map[string]int{}}
	if err := e.db.AutoMigrate(&Author{}, &Book{}); err != nil {
		t.Fatal(err)
	}
	e.exec(t, `INSERT INTO authors (id, name, email) VALUES (1, 'ada', 'a1@x'), (2, 'bob', 'a2@x')`)
	e.exec(t, `INSERT INTO books (id, author_id, title) VALUES (1, 1, 'b1'), (2, 1, 'b2'), (3, 2, 'b3')`)
	cache, err := readthrough.New(e.db, e.rdb, readthrough.Options{Prefix: e.prefix, RedisTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if e.authors, err = readthrough.Register[Author](cache, readthrough.ModelOptions{Unique: [][]string{{"Email"}}}); err != nil {
		t.Fatal(err)
	}
	if e.books, err = readthrough.Register[Book](cache, readthrough.ModelOptions{Lists: [][]string{{"AuthorID"}}}); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) exec(t testing.TB, sql string, args ...any) {
	t.Helper()
	if err := e.db.Exec(sql, args...).Error; err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// cache returns a response cache under the test's prefix, a generous Redis timeout
// for a loaded machine.
func (e *env) cache(t testing.TB, opts httpcache.Options) *httpcache.Cache {
	t.Helper()
	opts.Prefix = e.prefix
	if opts.RedisTimeout == 0 {
		opts.RedisTimeout = 2 * time.Second
	}
	c, err := httpcache.New(e.rdb, opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (e *env) rendered(name string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.renders[name]
}

func (e *env) count(name string) {
	e.mu.Lock()
	e.renders[name]++
	e.mu.Unlock()
}

// api is the JSON API: /authors/{id}, /authors?email=, /authors/{id}/books, /books?ids=1,2.
func (e *env) api() http.Handler {
	mux := http.NewServeMux()
	fail := func(w http.ResponseWriter, err error) { http.Error(w, err.Error(), http.StatusInternalServerError) }
	send := func(w http.ResponseWriter, v any) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(v)
	}
	mux.HandleFunc("GET /authors/{id}", func(w http.ResponseWriter, r *http.Request) {
		e.count("author")
		id, _ := strconv.ParseInt(r.PathValue("id"), 10, 64)
		a, ok, err := e.authors.Get(r.Context(), id)
		switch {
		case err != nil:
			fail(w, err)
		case !ok:
			http.NotFound(w, r)
		default:
			send(w, a)
		}
	})
	mux.HandleFunc("GET /authors", func(w http.ResponseWriter, r *http.Request) {
		e.count("by-email")
		a, ok, err := e.authors.By("Email").Get(r.Context(), r.URL.Query().Get("email"))
		switch {
		case err != nil:
			fail(w, err)
		case !ok:
			http.NotFound(w, r)
		default:
			send(w, a)
		}
	})
	mux.HandleFunc("GET /authors/{id}/books", func(w http.ResponseWriter, r *http.Request) {
		e.count("books-of")
		id, _ := strconv.ParseInt(r.PathValue("id"), 10, 64)
		bs, err := e.books.ListBy("AuthorID").Get(r.Context(), id)
		if err != nil {
			fail(w, err)
			return
		}
		send(w, bs)
	})
	mux.HandleFunc("GET /books", func(w http.ResponseWriter, r *http.Request) {
		e.count("books")
		var ids []any
		for s := range strings.SplitSeq(r.URL.Query().Get("ids"), ",") {
			id, _ := strconv.ParseInt(s, 10, 64)
			ids = append(ids, id)
		}
		bs, err := e.books.GetMany(r.Context(), ids...)
		if err != nil {
			fail(w, err)
			return
		}
		send(w, bs)
	})
	return mux
}

// wrap wraps the API with c under rt.
func wrap(t testing.TB, c *httpcache.Cache, rt httpcache.Route, h http.Handler) http.Handler {
	t.Helper()
	w, err := c.Wrap(rt, h)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// get sends a GET for target to h, with headers as name, value pairs, in ctx.
func get(ctx context.Context, h http.Handler, target string, headers ...string) *httptest.ResponseRecorder {
	return do(ctx, h, http.MethodGet, target, headers...)
}

func do(ctx context.Context, h http.Handler, method, target string, headers ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequestWithContext(ctx, method, target, nil)
	for i := 0; i+1 < len(headers); i += 2 {
		r.Header.Add(headers[i], headers[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// recordingPurger records the tags it is told, in the order it is told them.
type recordingPurger struct {
	mu   sync.Mutex
	tags []string
}

// mark returns how many tags were told so far, for since.
func (p *recordingPurger) mark() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.tags)
}

// since returns the tags told after mark returned n.
func (p *recordingPurger) since(n int) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.tags[n:])
}

func (p *recordingPurger) Purge(_ context.Context, tags []string) error {
	p.mu.Lock()
	p.tags = append(p.tags, tags...)
	p.mu.Unlock()
	return nil
}

func (p *recordingPurger) has(tag string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Contains(p.tags, tag)
}

// startWorker runs an invalidator worker for authors and books under the test's
// prefix until the test ends, and waits until it is ready.
func (e *env) startWorker(t *testing.T, opts invalidator.Options) *invalidator.Worker {
	t.Helper()
	w, _ := e.runWorker(t, context.Background(), opts)
	return w
}

// runWorker is startWorker with the worker's context (hooks) given: stop ends the
// worker and waits for it (the test's end does too).
func (e *env) runWorker(t *testing.T, ctx context.Context, opts invalidator.Options) (_ *invalidator.Worker, stop func()) {
	t.Helper()
	opts.Prefix = e.prefix
	return runWorker(t, ctx, e.rdb, e.pg.RoleURL, "s_"+e.pg.Name, []string{"authors", "books"}, opts)
}

// runWorker runs an invalidator worker of the tables in the database at url, on the
// slot, with the publication "pgcache", with ctx (hooks) until stop is called or the
// test ends, and waits until it is ready.
func runWorker(t *testing.T, ctx context.Context, rdb redis.UniversalClient, url, slot string, tables []string, opts invalidator.Options) (_ *invalidator.Worker, stop func()) {
	t.Helper()
	w, err := invalidator.NewWorker(rdb, invalidator.WorkerOptions{
		Postgres: url,
		Stream: cdc.Options{Slot: slot, Publication: "pgcache", Tables: tables,
			StatusInterval: 100 * time.Millisecond, MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond},
		Invalidator: opts,
	})
	if err != nil {
		t.Fatal(err)
	}
	return w, fixture.RunWorker(t, ctx, w)
}

// eventuallyBody waits until a GET of target through h answers a body containing want.
func eventuallyBody(t *testing.T, h http.Handler, target, want string) *httptest.ResponseRecorder {
	t.Helper()
	var last *httptest.ResponseRecorder
	integration.Eventually(t, fmt.Sprintf("GET %s to show %q", target, want), func() bool {
		last = get(context.Background(), h, target)
		return strings.Contains(last.Body.String(), want)
	})
	return last
}

// authorTags returns the tags of author id's row and of the authors table, sorted.
func (e *env) authorTags(t testing.TB, id int64) []string {
	t.Helper()
	v, err := e.authors.Key(id)
	if err != nil {
		t.Fatal(err)
	}
	k, _ := keys.KeyOfValue(v)
	sp, err := keys.NewSpace(e.prefix, e.authors.Table(), e.authors.Version())
	if err != nil {
		t.Fatal(err)
	}
	tags := []string{k.Tag(), sp.TableTag()}
	slices.Sort(tags)
	return tags
}
