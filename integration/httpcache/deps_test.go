package httpcache_test

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgcache/pgcache/httpcache"
	"github.com/pgcache/pgcache/integration"
	"github.com/pgcache/pgcache/internal/testhooks"
	"github.com/pgcache/pgcache/invalidator"
	"github.com/pgcache/pgcache/keys"
)

// TestLibraryWrite: a write through the library drops the responses that read the row
// before Save returns: the next GET renders the new row, without waiting for anything.
func TestLibraryWrite(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	h := wrap(t, e.cache(t, httpcache.Options{}), httpcache.Route{}, e.api())
	for _, target := range []string{"/authors/1", "/books?ids=1,2", "/authors?email=a1@x", "/authors/1/books"} {
		get(bg, h, target)
		if w := get(bg, h, target); w.Header().Get("X-Cache") != "HIT" {
			t.Fatalf("%s: not cached (%s)", target, w.Header().Get("X-Cache"))
		}
	}
	if err := e.authors.Save(bg, &Author{ID: 1, Name: "ada2", Email: "a1@x"}); err != nil {
		t.Fatal(err)
	}
	if err := e.books.Save(bg, &Book{ID: 2, AuthorID: 1, Title: "b2-new"}); err != nil {
		t.Fatal(err)
	}
	for target, want := range map[string]string{"/authors/1": "ada2", "/books?ids=1,2": "b2-new",
		"/authors?email=a1@x": "ada2", "/authors/1/books": "b2-new"} {
		if w := get(bg, h, target); !strings.Contains(w.Body.String(), want) || w.Header().Get("X-Cache") != "MISS" {
			t.Errorf("%s after Save: %s %q, want %q", target, w.Header().Get("X-Cache"), w.Body, want)
		}
	}
}

// TestRawSQL: rows changed by raw SQL (another writer) drop the responses that show
// them once the worker invalidated the rows: an update of a row, a row joining a list
// (an insert), a row leaving one (an update of its foreign key), an insert that fills a
// unique lookup that was "none", and a TRUNCATE (a whole-table invalidation).
func TestRawSQL(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	h := wrap(t, e.cache(t, httpcache.Options{}), httpcache.Route{}, e.api())
	targets := []string{"/authors/1", "/authors/2/books", "/authors/1/books", "/authors?email=new@x", "/books?ids=3"}
	for _, target := range targets {
		get(bg, h, target)
		if w := get(bg, h, target); w.Header().Get("X-Cache") != "HIT" {
			t.Fatalf("%s: not cached (%s)", target, w.Header().Get("X-Cache"))
		}
	}
	if w := get(bg, h, "/authors?email=new@x"); w.Code != 404 {
		t.Fatalf("unknown email: %d", w.Code)
	}
	e.startWorker(t, invalidator.Options{})

	e.exec(t, `UPDATE authors SET name = 'ada-raw' WHERE id = 1`)
	eventuallyBody(t, h, "/authors/1", "ada-raw")

	e.exec(t, `INSERT INTO books (id, author_id, title) VALUES (4, 2, 'b4')`)
	eventuallyBody(t, h, "/authors/2/books", "b4")

	e.exec(t, `UPDATE books SET author_id = 2 WHERE id = 2`)
	eventuallyNot(t, h, "/authors/1/books", `"b2"`)

	e.exec(t, `INSERT INTO authors (id, name, email) VALUES (3, 'cy', 'new@x')`)
	eventuallyBody(t, h, "/authors?email=new@x", "cy")

	e.exec(t, `UPDATE books SET title = 'b3-raw' WHERE id = 3`)
	eventuallyBody(t, h, "/books?ids=3", "b3-raw")

	e.exec(t, `DELETE FROM books WHERE id = 1`) // leaves a list: only its row's keys are deleted
	eventuallyNot(t, h, "/authors/1/books", `"b1"`)

	e.exec(t, `TRUNCATE books`)
	w := eventuallyBody(t, h, "/authors/2/books", "[]")
	if w.Header().Get("X-Cache") != "MISS" {
		t.Errorf("after TRUNCATE: %s", w.Header().Get("X-Cache"))
	}
}

// eventuallyNot waits until a GET of target through h answers 200 without unwanted.
func eventuallyNot(t *testing.T, h http.Handler, target, unwanted string) {
	t.Helper()
	integration.Eventually(t, "GET "+target+" to lose "+unwanted, func() bool {
		w := get(bg, h, target)
		return w.Code == 200 && !strings.Contains(w.Body.String(), unwanted)
	})
}

// TestRenderRace: the row a response shows changes (a write through the library)
// after the handler read it and before the response is stored. The response must not
// be stored; the next request renders the new row. The control, without the check of
// dependencies, stores and serves the old row.
func TestRenderRace(t *testing.T) {
	t.Parallel()
	for _, control := range []bool{false, true} {
		e := newEnv(t)
		c := e.cache(t, httpcache.Options{})
		h := wrap(t, c, httpcache.Route{}, e.api())
		var once sync.Once
		hooks := &testhooks.HTTP{Unfenced: control, AfterRender: func(string) {
			once.Do(func() {
				if err := e.authors.Save(context.Background(), &Author{ID: 1, Name: "ada2", Email: "a1@x"}); err != nil {
					t.Error(err)
				}
			})
		}}
		ctx := testhooks.WithHTTP(bg, hooks)
		if w := get(ctx, h, "/authors/1"); !strings.Contains(w.Body.String(), `"ada"`) {
			t.Fatalf("first render: %q", w.Body)
		}
		w := get(ctx, h, "/authors/1")
		stale := strings.Contains(w.Body.String(), `"ada"`)
		if stale != control {
			t.Errorf("control %v: second response %s %q (stale %v)", control, w.Header().Get("X-Cache"), w.Body, stale)
		}
		if !control && c.Stats().Fenced != 1 {
			t.Errorf("stats %+v: want 1 fenced", c.Stats())
		}
	}
}

// TestPurge: the worker tells the Purger the tags of the rows it invalidated and of the
// tables it flushed, the same tags the responses carried.
func TestPurge(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	h := wrap(t, e.cache(t, httpcache.Options{TagHeader: "xkey"}), httpcache.Route{}, e.api())
	authorTags := strings.Fields(get(bg, h, "/authors/1").Header().Get("xkey"))
	if !slices.Equal(authorTags, e.authorTags(t, 1)) {
		t.Fatalf("author response tags %q, want %q", authorTags, e.authorTags(t, 1))
	}
	// The list's entry, its one member (book 3) and the books table.
	bookTags := strings.Fields(get(bg, h, "/authors/2/books").Header().Get("xkey"))
	if len(bookTags) != 3 {
		t.Fatalf("books response tags %q: want 3", bookTags)
	}
	p := &recordingPurger{}
	w := e.startWorker(t, invalidator.Options{Purger: p})
	e.exec(t, `UPDATE authors SET name = 'ada-raw' WHERE id = 1`)
	v, err := e.authors.Key(int64(1))
	if err != nil {
		t.Fatal(err)
	}
	k, _ := keys.KeyOfValue(v)
	integration.Eventually(t, "the author's row tag to be purged", func() bool { return p.has(k.Tag()) })
	sp, err := keys.NewSpace(e.prefix, e.books.Table(), e.books.Version())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(bookTags, sp.TableTag()) {
		t.Fatalf("books response tags %q lack the books table tag %q", bookTags, sp.TableTag())
	}
	e.exec(t, `TRUNCATE books`)
	integration.Eventually(t, "the books table tag to be purged", func() bool { return p.has(sp.TableTag()) })
	if s := w.Stats(); s.PurgeErrors != 0 || s.Purged == 0 {
		t.Errorf("stats %+v", s)
	}
}

// blockingPurger never returns until the test ends, whatever its context says.
type blockingPurger struct{ done chan struct{} }

func (p blockingPurger) Purge(context.Context, []string) error {
	<-p.done
	return nil
}

// TestSlowPurger: a purger that hangs holds each acknowledgement at most PurgeTimeout:
// the worker keeps invalidating, and counts the purges it gave up on.
func TestSlowPurger(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	h := wrap(t, e.cache(t, httpcache.Options{}), httpcache.Route{}, e.api())
	p := blockingPurger{done: make(chan struct{})}
	t.Cleanup(func() { close(p.done) })
	w := e.startWorker(t, invalidator.Options{Purger: p, PurgeTimeout: 200 * time.Millisecond})
	for _, name := range []string{"one", "two", "three"} {
		get(bg, h, "/authors/1")
		e.exec(t, `UPDATE authors SET name = ? WHERE id = 1`, name)
		// Without the bound, the first purge would hold the stream for good, and
		// the second change would never be invalidated.
		eventuallyBody(t, h, "/authors/1", name)
	}
	integration.Eventually(t, "three purges given up on", func() bool { return w.Stats().PurgeErrors >= 3 })
}
