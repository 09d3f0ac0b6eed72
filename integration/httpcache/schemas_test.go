package httpcache_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"gorm.io/gorm"

	"github.com/pgcache/pgcache/httpcache"
	"github.com/pgcache/pgcache/integration"
	"github.com/pgcache/pgcache/integration/fixture"
	"github.com/pgcache/pgcache/invalidator"
	"github.com/pgcache/pgcache/keys"
	"github.com/pgcache/pgcache/readthrough"
)

// The response cache on the schemas real teams have, each table cached by an API and
// changed by raw SQL while the worker runs. For every change, each response that read
// a changed row (or lookup entry) is first served from Redis, then no longer once the
// worker has seen the commit, the next one rendering the new data; and the tags the
// change has the worker purge, among those the response was sent with, are exactly the
// ones of what changed: a CDN holding the response drops it, whatever the spelling of
// the key the handler was asked for and the text Postgres prints the key in.

// tagHeader is the header the schema tests read tags from.
const tagHeader = "Surrogate-Key"

// schemaEnv is a database whose tables an API caches through readthrough and httpcache,
// and whose changes a worker, with a recording purger, invalidates.
type schemaEnv struct {
	pg     *integration.Database
	url    string // the role's, with the test's connection options
	db     *gorm.DB
	rdb    *redis.Client
	prefix string
	cache  *readthrough.Cache
	purger *recordingPurger
	mux    *http.ServeMux
}

// newSchemaEnv creates a database, runs ddl in it over a connection with the given
// server options (e.g. a search_path), which the repositories and the worker use too.
func newSchemaEnv(t *testing.T, connOptions string, ddl ...string) *schemaEnv {
	t.Helper()
	pg := servers.Postgres(t).NewDatabase(t)
	rd := servers.Redis(t)
	e := &schemaEnv{pg: pg, url: pg.RoleURL, rdb: rd.Client(t), prefix: rd.Prefix(t), purger: &recordingPurger{}, mux: http.NewServeMux()}
	if connOptions != "" {
		e.url = fixture.WithOptions(t, pg.RoleURL, connOptions)
	}
	e.db = fixture.Open(t, e.url)
	for _, sql := range ddl {
		if err := e.db.Exec(sql).Error; err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	var err error
	if e.cache, err = readthrough.New(e.db, e.rdb, readthrough.Options{Prefix: e.prefix, RedisTimeout: 2 * time.Second}); err != nil {
		t.Fatal(err)
	}
	return e
}

func registerIn[T any](t *testing.T, e *schemaEnv, opts readthrough.ModelOptions) *readthrough.Repository[T] {
	t.Helper()
	r, err := readthrough.Register[T](e.cache, opts)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// start runs the worker of the tables, telling its purges to e.purger, and returns the
// API (e.mux) under a response cache that sends tags in tagHeader.
func (e *schemaEnv) start(t *testing.T, tables ...string) http.Handler {
	t.Helper()
	runWorker(t, context.Background(), e.rdb, e.url, "s_"+e.pg.Name, tables, invalidator.Options{Prefix: e.prefix, Purger: e.purger})
	c, err := httpcache.New(e.rdb, httpcache.Options{Prefix: e.prefix, RedisTimeout: 2 * time.Second, TagHeader: tagHeader})
	if err != nil {
		t.Fatal(err)
	}
	return wrap(t, c, httpcache.Route{SMaxAge: time.Minute}, e.mux)
}

// one answers with the row get returns as JSON, or 404.
func one[T any](get func(r *http.Request) (T, bool, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v, ok, err := get(r)
		switch {
		case err != nil:
			http.Error(w, err.Error(), http.StatusInternalServerError)
		case !ok:
			http.NotFound(w, r)
		default:
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(v)
		}
	}
}

// many answers with the rows get returns as JSON.
func many[T any](get func(r *http.Request) ([]T, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v, err := get(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(v)
	}
}

func pathID(r *http.Request) int64 {
	id, _ := strconv.ParseInt(r.PathValue("id"), 10, 64)
	return id
}

// cached GETs target until a response is served from Redis, and returns the tags it
// was sent with, sorted.
func cached(t *testing.T, h http.Handler, target string) []string {
	t.Helper()
	var tags []string
	integration.Eventually(t, "GET "+target+" to be served from Redis", func() bool {
		w := get(bg, h, target)
		if w.Code >= 500 {
			t.Fatalf("GET %s: %d %s", target, w.Code, w.Body)
		}
		tags = strings.Fields(w.Header().Get(tagHeader))
		return w.Header().Get("X-Cache") == "HIT"
	})
	if len(tags) == 0 {
		t.Fatalf("GET %s: a hit without tags", target)
	}
	slices.Sort(tags)
	return tags
}

// rowTags returns the tags among tags that name rows and lookup entries (not tables).
func rowTags(tags []string) []string {
	return slices.DeleteFunc(slices.Clone(tags), func(tag string) bool { return strings.HasPrefix(tag, "pgct-") })
}

// rowTag returns the one row tag of a response that shows one row (or its absence).
func rowTag(t *testing.T, h http.Handler, target string) string {
	t.Helper()
	rt := rowTags(cached(t, h, target))
	if len(rt) != 1 {
		t.Fatalf("GET %s: row tags %q, want one", target, rt)
	}
	return rt[0]
}

// without returns tags less those of drop.
func without(tags []string, drop ...string) []string {
	return slices.DeleteFunc(slices.Clone(tags), func(tag string) bool { return slices.Contains(drop, tag) })
}

// view is a response followed across a change: target, served from Redis before with
// tags; what it must show once the worker saw the change; and which of its tags the
// change must have the worker purge (the others must not be).
type view struct {
	target string
	tags   []string
	after  expect
	purged []string
}

// expect is what a response must be: check, described by what.
type expect struct {
	check func(*httptest.ResponseRecorder) bool
	what  string
}

func shows(want string) expect {
	check := func(w *httptest.ResponseRecorder) bool {
		return w.Code == 200 && strings.Contains(w.Body.String(), want)
	}
	return expect{check, fmt.Sprintf("200 with %q", want)}
}

func lacks(unwanted string) expect {
	check := func(w *httptest.ResponseRecorder) bool {
		return w.Code == 200 && !strings.Contains(w.Body.String(), unwanted)
	}
	return expect{check, fmt.Sprintf("200 without %q", unwanted)}
}

var gone = expect{func(w *httptest.ResponseRecorder) bool { return w.Code == http.StatusNotFound }, "404"}

// see is the view of target, served from Redis before the change with tags, which must
// come to answer after, and whose tags purged (and no others) the change must purge.
func see(target string, tags []string, after expect, purged ...string) view {
	return view{target: target, tags: tags, after: after, purged: purged}
}

// change runs sql (raw SQL, which only the worker sees), then checks every view: it is
// no longer served once the worker saw the commit, and the next response, rendered,
// shows the new data; among the tags it was sent with, the worker purged exactly
// v.purged.
func (e *schemaEnv) change(t *testing.T, h http.Handler, sql string, views ...view) {
	t.Helper()
	mark := e.purger.mark()
	if err := e.db.Exec(sql).Error; err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	for _, v := range views {
		var w *httptest.ResponseRecorder
		integration.Eventually(t, fmt.Sprintf("after %s: GET %s to answer %s", sql, v.target, v.after.what), func() bool {
			w = get(bg, h, v.target)
			return v.after.check(w)
		})
		// The one before showed the old data: this one was rendered.
		if x := w.Header().Get("X-Cache"); x == "HIT" {
			t.Errorf("after %s: GET %s: the new data served as a %s", sql, v.target, x)
		}
	}
	for _, v := range views {
		want := slices.Sorted(slices.Values(v.purged))
		var got []string
		integration.Eventually(t, fmt.Sprintf("after %s: the tags %q of GET %s to be purged", sql, want, v.target), func() bool {
			got = purgedAmong(v.tags, e.purger.since(mark))
			return len(got) >= len(want)
		})
		if !slices.Equal(got, want) {
			t.Errorf("after %s: of the tags %q GET %s was sent with, the worker purged %q, want %q (purged: %q)",
				sql, v.tags, v.target, got, want, e.purger.since(mark))
		}
	}
}

// purgedAmong returns the tags among tags (sorted) that the worker told the purger.
func purgedAmong(tags, told []string) []string {
	return slices.DeleteFunc(slices.Clone(tags), func(tag string) bool { return !slices.Contains(told, tag) })
}

// Seat has a composite key of a uuid, a char(4) and a numeric, in schema app: the table
// declares its columns (label, section, code, hall) and its primary key (hall, code,
// section), the struct its fields in a third order.
type Seat struct {
	Code    string `gorm:"primaryKey;type:uuid" json:"code"`
	Hall    string `gorm:"primaryKey;type:char(4)" json:"hall"`
	Section string `gorm:"primaryKey;type:numeric(6,2)" json:"section"`
	Label   string `json:"label"`
}

func (Seat) TableName() string { return "app.seats" }

// Price has a numeric key, held in a float64.
type Price struct {
	SKU    float64 `gorm:"column:sku;primaryKey;type:numeric(10,2)" json:"sku"`
	Amount int     `json:"amount"`
}

func (Price) TableName() string { return "app.prices" }

// Invoice has a text key, in a mixed-case table of a mixed-case schema.
type Invoice struct {
	No    string `gorm:"column:No;primaryKey" json:"no"`
	Total string `gorm:"type:numeric" json:"total"`
}

func (Invoice) TableName() string { return `"Billing"."Invoices"` }

// TestSchemaCompositeKey: responses that read a seat, asked for in spellings other than
// Postgres' text (an upper-case uuid, a char(4) without its padding, a numeric without
// its trailing zeros), carry the tag the worker purges when raw SQL updates the row,
// changes its key (the old key's response goes 404, the new key's cached 404 shows the
// row) or deletes it, and which a library Save (the key spelled otherwise again) drops
// at once; so do a list by the char(4) column, a numeric key held in a
// float64, and a text key holding the keys' separators in a mixed-case table of a
// mixed-case schema. The control: tags
// computed from the key as Postgres spells it, or with its values in the table's order,
// fail the check the headers pass (the worker does not purge them).
func TestSchemaCompositeKey(t *testing.T) {
	t.Parallel()
	const a, b = "6f1c1e52-9f3a-4a0e-8f55-1d2b3c4d5e6f", "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
	e := newSchemaEnv(t, "",
		`CREATE SCHEMA app`,
		`CREATE TABLE app.seats (label text, section numeric(6,2), code uuid, hall char(4), PRIMARY KEY (hall, code, section))`,
		`INSERT INTO app.seats VALUES ('v0', 1.5, '`+a+`', 'A1'), ('w0', 2, '`+b+`', 'B')`,
		`CREATE SCHEMA "Billing"`,
		`CREATE TABLE "Billing"."Invoices" ("No" text PRIMARY KEY, total numeric)`,
		`INSERT INTO "Billing"."Invoices" VALUES ('INV|2024,{1}: ü', 10)`,
		`CREATE TABLE app.prices (amount int, sku numeric(10,2) PRIMARY KEY)`,
		`INSERT INTO app.prices VALUES (1, 12.5)`,
	)
	prices := registerIn[Price](t, e, readthrough.ModelOptions{})
	e.mux.HandleFunc("GET /prices/{sku}", one(func(r *http.Request) (Price, bool, error) {
		sku, err := strconv.ParseFloat(r.PathValue("sku"), 64)
		if err != nil {
			return Price{}, false, err
		}
		return prices.Get(r.Context(), sku)
	}))
	invoices := registerIn[Invoice](t, e, readthrough.ModelOptions{})
	e.mux.HandleFunc("GET /invoices", one(func(r *http.Request) (Invoice, bool, error) {
		return invoices.Get(r.Context(), r.URL.Query().Get("no"))
	}))
	seats := registerIn[Seat](t, e, readthrough.ModelOptions{Lists: [][]string{{"Hall"}}})
	e.mux.HandleFunc("GET /seats", one(func(r *http.Request) (Seat, bool, error) {
		q := r.URL.Query()
		return seats.Get(r.Context(), []any{q.Get("code"), q.Get("hall"), q.Get("section")})
	}))
	e.mux.HandleFunc("GET /halls/{hall}/seats", many(func(r *http.Request) ([]Seat, error) {
		return seats.ListBy("Hall").Get(r.Context(), r.PathValue("hall"))
	}))
	h := e.start(t, "app.seats", "Billing.Invoices", "app.prices")

	// A numeric key held in a float64 (12.5), which Postgres prints 12.50: updated, moved
	// to another key, deleted.
	tagsP := cached(t, h, "/prices/12.5")
	e.change(t, h, `UPDATE app.prices SET amount = 2`, see("/prices/12.5", tagsP, shows(`"amount":2`), rowTags(tagsP)...))
	tagsP, tags13 := cached(t, h, "/prices/12.50"), cached(t, h, "/prices/13")
	e.change(t, h, `UPDATE app.prices SET sku = 13`,
		see("/prices/12.50", tagsP, gone, rowTags(tagsP)...),
		see("/prices/13", tags13, shows(`"amount":2`), rowTags(tags13)...))
	tags13 = cached(t, h, "/prices/13.0")
	e.change(t, h, `DELETE FROM app.prices`, see("/prices/13.0", tags13, gone, rowTags(tags13)...))

	// A text key with the keys' separators, in a mixed-case table of a mixed-case schema.
	inv := "/invoices?no=" + url.QueryEscape("INV|2024,{1}: ü")
	tagsI := cached(t, h, inv)
	e.change(t, h, `UPDATE "Billing"."Invoices" SET total = 11`, see(inv, tagsI, shows(`"total":"11"`), rowTags(tagsI)...))
	tagsI = cached(t, h, inv)
	e.change(t, h, `DELETE FROM "Billing"."Invoices"`, see(inv, tagsI, gone, rowTags(tagsI)...))

	// Two spellings of seat a, neither Postgres': one response each, one row tag.
	upper := "/seats?code=" + strings.ToUpper(a) + "&hall=A1&section=1.5"
	padded := "/seats?code=" + a + "&hall=A1%20%20&section=1.500"
	tagsU, tagsP := cached(t, h, upper), cached(t, h, padded)
	if !slices.Equal(tagsU, tagsP) || len(rowTags(tagsU)) != 1 {
		t.Fatalf("two spellings of one seat: tags %q and %q, want one row tag and the table's", tagsU, tagsP)
	}
	seatA := rowTags(tagsU)[0]

	// The control: the tag of the key spelled as Postgres prints it (padded char, two
	// decimals), or in the table's column order, is another tag; the one of the
	// canonical values (in the order of the columns' names) is the header's.
	sp, err := keys.NewSpace(e.prefix, seats.Table(), seats.Version())
	if err != nil {
		t.Fatal(err)
	}
	if got := sp.Key(a, "A1", "1.5").Tag(); got != seatA {
		t.Fatalf("the canonical key's tag %s, the header's %s", got, seatA)
	}
	misspelled := []string{sp.Key(a, "A1  ", "1.50").Tag(), sp.Key("A1", a, "1.5").Tag(), sp.Key(strings.ToUpper(a), "A1", "1.5").Tag()}
	if slices.Contains(misspelled, seatA) {
		t.Fatalf("a misspelled key has the header's tag %s", seatA)
	}

	// A list by the char(4) column, asked for unpadded and padded: one list, whose
	// member's tag is the seat's.
	hall, hallPadded := cached(t, h, "/halls/A1/seats"), cached(t, h, "/halls/A1%20/seats")
	if !slices.Equal(hall, hallPadded) || len(rowTags(hall)) != 2 || !slices.Contains(hall, seatA) {
		t.Fatalf("hall A1's list tags %q and %q: want one list's entry, seat %s and the table's", hall, hallPadded, seatA)
	}

	mark := e.purger.mark()
	e.change(t, h, `UPDATE app.seats SET label = 'v1' WHERE code = '`+a+`'`,
		see(upper, tagsU, shows(`"label":"v1"`), seatA),
		see(padded, tagsP, shows(`"label":"v1"`), seatA),
		see("/halls/A1/seats", hall, shows(`"label":"v1"`), rowTags(hall)...))
	// The check the header passed fails for a header computed from a misspelled key.
	for _, tag := range misspelled {
		control := []string{tag, sp.TableTag()}
		slices.Sort(control)
		if got := purgedAmong(control, e.purger.since(mark)); len(got) != 0 {
			t.Errorf("the control: of the tags %q (a misspelled key's), the worker purged %q", control, got)
		}
	}

	// A key change: seat a moves to hall C3. Its old key's response goes, its new key's
	// (a cached 404) shows it.
	moved := "/seats?code=" + a + "&hall=C3&section=1.5"
	tagsU, tagsM := cached(t, h, upper), cached(t, h, moved)
	hall, hallC3 := cached(t, h, "/halls/A1/seats"), cached(t, h, "/halls/C3/seats")
	// The old key, in the message, holds the old hall: hall A1's entry is purged too.
	e.change(t, h, `UPDATE app.seats SET hall = 'C3' WHERE code = '`+a+`'`,
		see(upper, tagsU, gone, seatA),
		see(moved, tagsM, shows(`"hall":"C3  "`), rowTags(tagsM)...),
		see("/halls/A1/seats", hall, shows(`[]`), rowTags(hall)...),
		see("/halls/C3/seats", hallC3, shows(`"hall":"C3  "`), rowTags(hallC3)...))

	// A write through the library drops the response before Save returns.
	seatB := "/seats?code=" + b + "&hall=B&section=2"
	cached(t, h, seatB)
	if err := seats.Save(bg, &Seat{Code: strings.ToUpper(b), Hall: "B", Section: "2.0", Label: "w1"}); err != nil {
		t.Fatal(err)
	}
	if w := get(bg, h, seatB); w.Header().Get("X-Cache") == "HIT" || !strings.Contains(w.Body.String(), `"w1"`) {
		t.Fatalf("GET %s after Save: %s %q, want w1 rendered", seatB, w.Header().Get("X-Cache"), w.Body)
	}
	tagsB := cached(t, h, seatB)
	e.change(t, h, `DELETE FROM app.seats WHERE code = '`+b+`'`, see(seatB, tagsB, gone, rowTags(tagsB)...))
}

// Account is in schema app, reached through search_path=app: its model names the table
// unqualified. It is soft-deleted (gorm.DeletedAt) and looked up by its unique email.
type Account struct {
	ID        int64          `gorm:"primaryKey" json:"id"`
	Email     string         `json:"email"`
	Name      string         `json:"name"`
	DeletedAt gorm.DeletedAt `json:"-"`
}

// Note is an account's has-many list, in a table under REPLICA IDENTITY FULL, and
// soft-deleted.
type Note struct {
	ID        int64          `gorm:"primaryKey" json:"id"`
	AccountID int64          `json:"account_id"`
	Body      string         `json:"body"`
	DeletedAt gorm.DeletedAt `json:"-"`
}

// Handle is looked up by its unique handle, in a table under REPLICA IDENTITY USING
// INDEX (handle, id).
type Handle struct {
	ID     int64  `gorm:"primaryKey" json:"id"`
	Handle string `json:"handle"`
}

// TestSchemaSearchPath: tables in schema app reached through search_path (by the API
// and the worker alike), read by primary key, unique lookups and a has-many list.
// Changes by raw SQL drop the responses that showed them and purge their tags: an
// update, a soft delete (an UPDATE of deleted_at: the row's responses go 404), a new row
// taking the soft-deleted one's email (a partial unique index), deletes,
// a list member's update, its move to another list, its soft delete and its delete
// (REPLICA IDENTITY FULL: the old list's entry is purged too), and a change of a unique value under
// REPLICA IDENTITY USING INDEX (the old value's entry is purged too).
func TestSchemaSearchPath(t *testing.T) {
	t.Parallel()
	e := newSchemaEnv(t, "-c search_path=app",
		`CREATE SCHEMA app`,
		`CREATE TABLE app.accounts (id bigint PRIMARY KEY, email text NOT NULL, name text, deleted_at timestamptz)`,
		`CREATE UNIQUE INDEX accounts_email ON app.accounts (email) WHERE deleted_at IS NULL`,
		`CREATE TABLE app.notes (id bigint PRIMARY KEY, account_id bigint NOT NULL, body text, deleted_at timestamptz)`,
		`ALTER TABLE app.notes REPLICA IDENTITY FULL`,
		`CREATE TABLE app.handles (id bigint NOT NULL PRIMARY KEY, handle text NOT NULL UNIQUE)`,
		`CREATE UNIQUE INDEX handles_ident ON app.handles (handle, id)`,
		`ALTER TABLE app.handles REPLICA IDENTITY USING INDEX handles_ident`,
		`INSERT INTO app.accounts VALUES (1, 'a@x', 'ann', NULL), (2, 'b@x', 'bo', NULL)`,
		`INSERT INTO app.notes VALUES (1, 1, 'n1'), (2, 1, 'n2'), (3, 2, 'n3')`,
		`INSERT INTO app.handles VALUES (1, 'h1'), (2, 'h2')`,
	)
	accounts := registerIn[Account](t, e, readthrough.ModelOptions{Unique: [][]string{{"Email"}}})
	notes := registerIn[Note](t, e, readthrough.ModelOptions{Lists: [][]string{{"AccountID"}}})
	handles := registerIn[Handle](t, e, readthrough.ModelOptions{Unique: [][]string{{"Handle"}}})
	if got := accounts.Table(); got != "app.accounts" {
		t.Fatalf("accounts cached as table %s, want app.accounts", got)
	}
	e.mux.HandleFunc("GET /accounts/{id}", one(func(r *http.Request) (Account, bool, error) {
		return accounts.Get(r.Context(), pathID(r))
	}))
	e.mux.HandleFunc("GET /accounts", one(func(r *http.Request) (Account, bool, error) {
		return accounts.By("Email").Get(r.Context(), r.URL.Query().Get("email"))
	}))
	e.mux.HandleFunc("GET /accounts/{id}/notes", many(func(r *http.Request) ([]Note, error) {
		return notes.ListBy("AccountID").Get(r.Context(), pathID(r))
	}))
	e.mux.HandleFunc("GET /notes/{id}", one(func(r *http.Request) (Note, bool, error) {
		return notes.Get(r.Context(), pathID(r))
	}))
	e.mux.HandleFunc("GET /handles/{id}", one(func(r *http.Request) (Handle, bool, error) {
		return handles.Get(r.Context(), pathID(r))
	}))
	e.mux.HandleFunc("GET /handles", one(func(r *http.Request) (Handle, bool, error) {
		return handles.By("Handle").Get(r.Context(), r.URL.Query().Get("h"))
	}))
	h := e.start(t, "accounts", "notes", "handles")

	// Accounts: an update, then a soft delete, then a delete. A lookup response's tags
	// are its entry's, its row's and the table's.
	acct1 := rowTag(t, h, "/accounts/1")
	byID, byEmail := cached(t, h, "/accounts/1"), cached(t, h, "/accounts?email=a@x")
	if len(rowTags(byEmail)) != 2 || !slices.Contains(byEmail, acct1) {
		t.Fatalf("lookup response tags %q: want its entry's, row %s's and the table's", byEmail, acct1)
	}
	e.change(t, h, `UPDATE accounts SET name = 'ann2' WHERE id = 1`,
		see("/accounts/1", byID, shows(`"ann2"`), acct1),
		see("/accounts?email=a@x", byEmail, shows(`"ann2"`), rowTags(byEmail)...))

	byID, byEmail = cached(t, h, "/accounts/1"), cached(t, h, "/accounts?email=a@x")
	e.change(t, h, `UPDATE accounts SET deleted_at = now() WHERE id = 1`,
		see("/accounts/1", byID, gone, acct1),
		see("/accounts?email=a@x", byEmail, gone, rowTags(byEmail)...))

	// The email is free again (the unique index is partial): a new account takes it.
	byEmail = cached(t, h, "/accounts?email=a@x")
	e.change(t, h, `INSERT INTO accounts VALUES (3, 'a@x', 'ann3', NULL)`,
		see("/accounts?email=a@x", byEmail, shows(`"ann3"`), rowTags(byEmail)...))

	// A DELETE under REPLICA IDENTITY DEFAULT carries the key alone: the email's entry
	// is not named (a later read finds it stale), the row's tag is.
	acct2 := rowTag(t, h, "/accounts/2")
	byID, byEmail = cached(t, h, "/accounts/2"), cached(t, h, "/accounts?email=b@x")
	e.change(t, h, `DELETE FROM accounts WHERE id = 2`,
		see("/accounts/2", byID, gone, acct2),
		see("/accounts?email=b@x", byEmail, gone, acct2))

	// Notes (REPLICA IDENTITY FULL): a list response's tags are its entry's, each
	// member's and the table's.
	n1, n2, n3 := rowTag(t, h, "/notes/1"), rowTag(t, h, "/notes/2"), rowTag(t, h, "/notes/3")
	list1, list2 := cached(t, h, "/accounts/1/notes"), cached(t, h, "/accounts/2/notes")
	if len(rowTags(list1)) != 3 || !slices.Contains(list1, n1) || !slices.Contains(list1, n2) {
		t.Fatalf("list response tags %q: want its entry's, %s, %s and the table's", list1, n1, n2)
	}
	e.change(t, h, `UPDATE notes SET body = 'n2b' WHERE id = 2`,
		see("/accounts/1/notes", list1, shows(`"n2b"`), without(rowTags(list1), n1)...),
		see("/notes/2", cached(t, h, "/notes/2"), shows(`"n2b"`), n2))

	list1 = cached(t, h, "/accounts/1/notes")
	e.change(t, h, `UPDATE notes SET account_id = 2 WHERE id = 2`,
		see("/accounts/1/notes", list1, lacks(`"n2b"`), without(rowTags(list1), n1)...),
		see("/accounts/2/notes", list2, shows(`"n2b"`), without(rowTags(list2), n3)...))

	// A soft delete of a member: the list's responses lose it.
	list2 = cached(t, h, "/accounts/2/notes")
	e.change(t, h, `UPDATE notes SET deleted_at = now() WHERE id = 3`,
		see("/accounts/2/notes", list2, lacks(`"n3"`), without(rowTags(list2), n2)...),
		see("/notes/3", cached(t, h, "/notes/3"), gone, n3))

	list1 = cached(t, h, "/accounts/1/notes")
	e.change(t, h, `DELETE FROM notes WHERE id = 1`,
		see("/accounts/1/notes", list1, shows(`[]`), rowTags(list1)...),
		see("/notes/1", cached(t, h, "/notes/1"), gone, n1))

	// Handles (REPLICA IDENTITY USING INDEX (handle, id)): a change of the handle
	// carries the old one, whose entry is purged with the new one's.
	hd1 := rowTag(t, h, "/handles/1")
	old, fresh := cached(t, h, "/handles?h=h1"), cached(t, h, "/handles?h=h9")
	e.change(t, h, `UPDATE handles SET handle = 'h9' WHERE id = 1`,
		see("/handles?h=h1", old, gone, rowTags(old)...),
		see("/handles?h=h9", fresh, shows(`"h9"`), rowTags(fresh)...),
		see("/handles/1", cached(t, h, "/handles/1"), shows(`"h9"`), hd1))

	byHandle := cached(t, h, "/handles?h=h2")
	e.change(t, h, `DELETE FROM handles WHERE id = 2`, see("/handles?h=h2", byHandle, gone, rowTags(byHandle)...))
}

// Event is a row of a table partitioned by range of its id (a partition in a schema of
// its own), listed by kind.
type Event struct {
	ID   int64  `gorm:"primaryKey" json:"id"`
	Kind string `json:"kind"`
	V    string `json:"v"`
}

// Order is a row of a table partitioned by list of its region, a part of its key.
type Order struct {
	ID     string `gorm:"primaryKey;type:uuid" json:"id"`
	Region string `gorm:"primaryKey;type:char(2)" json:"region"`
	Total  int    `json:"total"`
}

// TestSchemaPartitions: a partitioned table, in a publication an administrator created
// with publish_via_partition_root (which the worker, its owner, sets up to publish
// under the partitions' names). Rows changed through the root or in a partition, moved
// to another partition by a key change (of an integer key, and of a uuid and char(2)
// key partitioned by list of the char(2)), deleted, a partition detached and one
// truncated: the responses that showed them go, and their tags (a detach or a
// TRUNCATE: the table's) are purged.
func TestSchemaPartitions(t *testing.T) {
	t.Parallel()
	const order = "5d3c2b1a-0f9e-4d8c-b7a6-958473625140"
	e := newSchemaEnv(t, "",
		`CREATE TABLE events (id bigint PRIMARY KEY, kind text NOT NULL, v text) PARTITION BY RANGE (id)`,
		`CREATE TABLE events_1 PARTITION OF events FOR VALUES FROM (0) TO (100)`,
		`CREATE SCHEMA parts`,
		`CREATE TABLE parts.events_2 PARTITION OF events FOR VALUES FROM (100) TO (200)`,
		`INSERT INTO events VALUES (1, 'a', 'e1'), (2, 'a', 'e2'), (101, 'b', 'e101'), (102, 'b', 'e102')`,
		`CREATE TABLE orders (id uuid, region char(2), total int, PRIMARY KEY (id, region)) PARTITION BY LIST (region)`,
		`CREATE TABLE orders_eu PARTITION OF orders FOR VALUES IN ('eu')`,
		`CREATE TABLE orders_us PARTITION OF orders FOR VALUES IN ('us')`,
		`INSERT INTO orders VALUES ('`+order+`', 'eu', 10)`,
		`CREATE PUBLICATION pgcache FOR TABLE events, orders WITH (publish_via_partition_root = true)`,
	)
	events := registerIn[Event](t, e, readthrough.ModelOptions{Lists: [][]string{{"Kind"}}})
	e.mux.HandleFunc("GET /events/{id}", one(func(r *http.Request) (Event, bool, error) {
		return events.Get(r.Context(), pathID(r))
	}))
	e.mux.HandleFunc("GET /events", many(func(r *http.Request) ([]Event, error) {
		return events.ListBy("Kind").Get(r.Context(), r.URL.Query().Get("kind"))
	}))
	orders := registerIn[Order](t, e, readthrough.ModelOptions{})
	e.mux.HandleFunc("GET /orders/{region}/{id}", one(func(r *http.Request) (Order, bool, error) {
		return orders.Get(r.Context(), []any{r.PathValue("id"), r.PathValue("region")})
	}))
	h := e.start(t, "events", "orders")
	var viaRoot bool
	if err := e.db.Raw(`SELECT pubviaroot FROM pg_publication WHERE pubname = 'pgcache'`).Scan(&viaRoot).Error; err != nil || viaRoot {
		t.Fatalf("publish_via_partition_root %v (%v): the worker should have set it off", viaRoot, err)
	}

	e1, e2 := rowTag(t, h, "/events/1"), rowTag(t, h, "/events/2")
	kindA := cached(t, h, "/events?kind=a")
	e.change(t, h, `UPDATE events SET v = 'e1b' WHERE id = 1`,
		see("/events/1", cached(t, h, "/events/1"), shows(`"e1b"`), e1),
		see("/events?kind=a", kindA, shows(`"e1b"`), without(rowTags(kindA), e2)...))

	e.change(t, h, `UPDATE events_1 SET v = 'e2b' WHERE id = 2`,
		see("/events/2", cached(t, h, "/events/2"), shows(`"e2b"`), e2))

	// From events_1 to events_2: a DELETE in one partition, an INSERT in the other.
	kindA = cached(t, h, "/events?kind=a")
	moved := cached(t, h, "/events/150")
	e.change(t, h, `UPDATE events SET id = 150 WHERE id = 1`,
		see("/events/1", cached(t, h, "/events/1"), gone, e1),
		see("/events/150", moved, shows(`"e1b"`), rowTags(moved)...),
		see("/events?kind=a", kindA, shows(`"id":150`), without(rowTags(kindA), e2)...))

	e101 := rowTag(t, h, "/events/101")
	e.change(t, h, `DELETE FROM parts.events_2 WHERE id = 101`, see("/events/101", cached(t, h, "/events/101"), gone, e101))

	// A composite key holding the partition key, a char(2) region, with a uuid asked
	// for in upper case: an update in the partition, then a move to another partition.
	eu, us := "/orders/eu/"+strings.ToUpper(order), "/orders/us/"+order
	tagsEU := cached(t, h, eu)
	e.change(t, h, `UPDATE orders SET total = 11`, see(eu, tagsEU, shows(`"total":11`), rowTags(tagsEU)...))
	tagsEU, tagsUS := cached(t, h, eu), cached(t, h, us)
	e.change(t, h, `UPDATE orders SET region = 'us'`,
		see(eu, tagsEU, gone, rowTags(tagsEU)...),
		see(us, tagsUS, shows(`"total":11`), rowTags(tagsUS)...))

	// A partition detached: its rows leave the table, whose tag is purged once the
	// worker's partition check sees it.
	ev102 := cached(t, h, "/events/102")
	e.change(t, h, `ALTER TABLE events DETACH PARTITION parts.events_2`, see("/events/102", ev102, gone, without(ev102, rowTags(ev102)...)...))

	// A partition's TRUNCATE flushes the table: its tag is what a CDN is told.
	ev2 := cached(t, h, "/events/2")
	e.change(t, h, `TRUNCATE events_1`, see("/events/2", ev2, gone, without(ev2, e2)...))
}
