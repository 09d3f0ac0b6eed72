package readthrough_test

import (
	"context"
	"database/sql/driver"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgcache/pgcache/integration/fixture"
	"github.com/pgcache/pgcache/readthrough"
	"github.com/pgcache/pgcache/writepolicy"
)

// The tests in this file hold the cache to promise 19: a hit returns exactly what an
// uncached GORM First returns, and a read-modify-write Save of a cached row writes
// nothing the row did not hold. Each reproduces a loss the struct-through-JSON codec
// had.

// fidelityEnv is a test's database and Redis with table created for model T, and a
// repository of T with opts on a cache of its own.
func fidelityEnv[T any](t *testing.T, ddl string, opts readthrough.ModelOptions) (*env, *readthrough.Repository[T]) {
	t.Helper()
	e := newEnv(t)
	e.exec(t, ddl)
	repo, err := readthrough.Register[T](e.cache(t, e.db), opts)
	if err != nil {
		t.Fatal(err)
	}
	return e, repo
}

// hitEqualsFirst reads id through repo twice (a fill, then a hit), checks the second
// came from Redis, and compares both with an uncached First.
func hitEqualsFirst[T any](t *testing.T, e *env, repo *readthrough.Repository[T], id any) T {
	t.Helper()
	ctx := ctxT(t)
	var want T
	if err := e.db.WithContext(ctx).First(&want, id).Error; err != nil {
		t.Fatalf("First(%v): %v", id, err)
	}
	for _, step := range []string{"miss", "hit"} {
		hits := repo.Stats().Hits
		got, ok, err := repo.Get(ctx, id)
		if err != nil || !ok {
			t.Fatalf("%s: Get(%v) = %v, %v", step, id, ok, err)
		}
		if step == "hit" && repo.Stats().Hits != hits+1 {
			t.Fatalf("hit: Get(%v) was not served from Redis: stats %+v", id, repo.Stats())
		}
		if d := diff(want, got); d != "" {
			t.Fatalf("%s: Get(%v) differs from First (First, Get):\n%s", step, id, d)
		}
	}
	return want
}

// Account holds a password hash that its JSON form leaves out, as a model served over an
// API does.
type Account struct {
	ID           int64 `gorm:"primaryKey"`
	Email        string
	PasswordHash string `json:"-"`
}

// TestJSONTagsIgnored: a `json:"-"` column comes back from a hit, and a
// read-modify-write Save of the cached row leaves it in Postgres.
func TestJSONTagsIgnored(t *testing.T) {
	t.Parallel()
	e, repo := fidelityEnv[Account](t, `CREATE TABLE accounts (id bigint PRIMARY KEY, email text, password_hash text)`, readthrough.ModelOptions{})
	e.exec(t, `INSERT INTO accounts VALUES (1, 'a@example.com', '$2a$10$hash')`)
	hitEqualsFirst(t, e, repo, int64(1))

	ctx := ctxT(t)
	u, _, err := repo.Get(ctx, int64(1))
	if err != nil {
		t.Fatal(err)
	}
	u.Email = "b@example.com"
	if err := repo.Save(ctx, &u); err != nil {
		t.Fatal(err)
	}
	var hash string
	if err := e.db.Raw(`SELECT password_hash FROM accounts WHERE id = 1`).Scan(&hash).Error; err != nil {
		t.Fatal(err)
	}
	if hash != "$2a$10$hash" {
		t.Fatalf("after a read-modify-write Save the password hash in Postgres is %q, want %q", hash, "$2a$10$hash")
	}
}

// Home and Work are embedded in Contact with a field of the same name each.
type Home struct{ City string }
type Work struct{ City string }

type Contact struct {
	ID   int64 `gorm:"primaryKey"`
	Home `gorm:"embeddedPrefix:home_"`
	Work `gorm:"embeddedPrefix:work_"`
}

// TestEmbeddedSameName: two embedded structs with a same-named field both come back.
func TestEmbeddedSameName(t *testing.T) {
	t.Parallel()
	e, repo := fidelityEnv[Contact](t, `CREATE TABLE contacts (id bigint PRIMARY KEY, home_city text, work_city text)`, readthrough.ModelOptions{})
	e.exec(t, `INSERT INTO contacts VALUES (1, 'Lyon', 'Paris')`)
	if c := hitEqualsFirst(t, e, repo, int64(1)); c.Home.City != "Lyon" || c.Work.City != "Paris" {
		t.Fatalf("First = %+v: the test's row is wrong", c)
	}
}

// Doc has a nullable jsonb column.
type Doc struct {
	ID   int64           `gorm:"primaryKey"`
	Meta json.RawMessage `gorm:"type:jsonb"`
	Note string
}

// TestNullJSONB: NULL jsonb comes back as nil, not JSON null, JSON null as itself, and a
// read-modify-write Save leaves NULL NULL.
func TestNullJSONB(t *testing.T) {
	t.Parallel()
	e, repo := fidelityEnv[Doc](t, `CREATE TABLE docs (id bigint PRIMARY KEY, meta jsonb, note text)`, readthrough.ModelOptions{})
	e.exec(t, `INSERT INTO docs VALUES (1, NULL, 'sql null'), (2, 'null', 'json null'), (3, '{"a": [1, 2]}', 'object')`)
	for id := int64(1); id <= 3; id++ {
		hitEqualsFirst(t, e, repo, id)
	}
	ctx := ctxT(t)
	d, _, err := repo.Get(ctx, int64(1))
	if err != nil {
		t.Fatal(err)
	}
	d.Note = "edited"
	if err := repo.Save(ctx, &d); err != nil {
		t.Fatal(err)
	}
	var isNull bool
	if err := e.db.Raw(`SELECT meta IS NULL FROM docs WHERE id = 1`).Scan(&isNull).Error; err != nil {
		t.Fatal(err)
	}
	if !isNull {
		t.Fatal("after a read-modify-write Save, meta is no longer NULL in Postgres")
	}
}

// Blob holds bytes that are not UTF-8 in a string field (bytea, as a []byte would be).
type Blob struct {
	ID   int64  `gorm:"primaryKey"`
	Data string `gorm:"type:bytea"`
	Raw  []byte
}

// TestNonUTF8String: a string field's bytes come back whatever they are.
func TestNonUTF8String(t *testing.T) {
	t.Parallel()
	e, repo := fidelityEnv[Blob](t, `CREATE TABLE blobs (id bigint PRIMARY KEY, data bytea, raw bytea)`, readthrough.ModelOptions{})
	e.exec(t, `INSERT INTO blobs VALUES (1, '\xff00fe80c0'::bytea, '\xff'::bytea), (2, ''::bytea, NULL)`)
	if b := hitEqualsFirst(t, e, repo, int64(1)); b.Data != "\xff\x00\xfe\x80\xc0" {
		t.Fatalf("First = %q: the test's row is wrong", b.Data)
	}
	hitEqualsFirst(t, e, repo, int64(2))
}

// Money is a Scanner/Valuer whose MarshalJSON is one-way (for display), as types made
// for API responses often are.
type Money struct{ cents int64 }

func (m Money) MarshalJSON() ([]byte, error) {
	return fmt.Appendf(nil, `"$%d.%02d"`, m.cents/100, m.cents%100), nil
}
func (m Money) Value() (driver.Value, error) { return m.cents, nil }
func (m *Money) Scan(src any) error {
	v, ok := src.(int64)
	if !ok {
		return fmt.Errorf("money: scan %T", src)
	}
	m.cents = v
	return nil
}

type Invoice struct {
	ID    int64 `gorm:"primaryKey"`
	Total Money
}

// TestOneWayMarshalJSON: a type whose JSON form cannot be read back is cached through
// its Valuer and Scanner.
func TestOneWayMarshalJSON(t *testing.T) {
	t.Parallel()
	e, repo := fidelityEnv[Invoice](t, `CREATE TABLE invoices (id bigint PRIMARY KEY, total bigint)`, readthrough.ModelOptions{})
	e.exec(t, `INSERT INTO invoices VALUES (1, 12345)`)
	if inv := hitEqualsFirst(t, e, repo, int64(1)); inv.Total.cents != 12345 {
		t.Fatalf("First = %+v: the test's row is wrong", inv)
	}
}

// Reading has values JSON cannot hold.
type Reading struct {
	ID    int64 `gorm:"primaryKey"`
	Value float64
	At    time.Time
	Day   time.Time `gorm:"type:date"`
}

// TestValuesJSONCannotHold: float8 NaN and infinities and timestamps outside years
// 0-9999 are cached and come back, through Get and GetMany.
func TestValuesJSONCannotHold(t *testing.T) {
	t.Parallel()
	e, repo := fidelityEnv[Reading](t, `CREATE TABLE readings (id bigint PRIMARY KEY, value float8, at timestamptz, day date)`, readthrough.ModelOptions{})
	e.exec(t, `INSERT INTO readings VALUES
		(1, 'NaN', '2024-01-02 03:04:05.123456+00', '2024-01-02'),
		(2, 'Infinity', '12024-01-02 03:04:05+00', '12024-01-02'),
		(3, '-Infinity', '0044-03-15 12:00:00+00 BC', '0044-03-15 BC'),
		(4, 1.5, '294276-12-31 23:59:59.999999+00', '4713-01-01 BC')`)
	ctx := ctxT(t)
	rows, err := repo.GetMany(ctx, int64(1), int64(2), int64(3), int64(4))
	if err != nil || len(rows) != 4 {
		t.Errorf("GetMany = %d rows, %v; want 4 rows", len(rows), err)
	}
	for id := int64(1); id <= 4; id++ { // a failed GetMany must not keep leases
		fence, _ := repo.Key(id)
		fence = strings.TrimSuffix(fence, ":v") + ":f"
		if n, err := e.rdb.Exists(ctx, fence).Result(); err != nil || n != 0 {
			t.Errorf("after GetMany the lease of row %d is still taken (EXISTS %s = %d, %v)", id, fence, n, err)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	for id := int64(1); id <= 4; id++ {
		hitEqualsFirst(t, e, repo, id)
	}
}

// Counter has a uint64 column, which database/sql cannot hold past 1<<63-1: such a row
// has no column record, so it cannot be cached.
type Counter struct {
	ID    int64 `gorm:"primaryKey"`
	Count uint64
}

// logCounter counts the log records whose message contains substr.
type logCounter struct {
	mu     sync.Mutex
	substr string
	n      int
}

func (l *logCounter) Enabled(context.Context, slog.Level) bool { return true }
func (l *logCounter) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if strings.Contains(r.Message, l.substr) {
		l.n++
	}
	return nil
}
func (l *logCounter) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logCounter) WithGroup(string) slog.Handler      { return l }
func (l *logCounter) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n
}

// TestUncacheableRow: a row the cache cannot hold is served from Postgres by Get and
// GetMany, never an error, counted and logged once; GetMany stores the others and gives
// back the lease of the one it could not store, so the next read does not wait.
func TestUncacheableRow(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.exec(t, `CREATE TABLE counters (id bigint PRIMARY KEY, count numeric(20))`)
	e.exec(t, `INSERT INTO counters VALUES (1, 7), (2, 18446744073709551615)`)
	logs := &logCounter{substr: "without caching"}
	c, err := readthrough.New(e.db, e.rdb, readthrough.Options{Prefix: e.prefix, RedisTimeout: 5 * time.Second, Logger: slog.New(logs)})
	if err != nil {
		t.Fatal(err)
	}
	repo, err := readthrough.Register[Counter](c, readthrough.ModelOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	want := []Counter{{1, 7}, {2, math.MaxUint64}}

	rows, err := repo.GetMany(ctx, int64(1), int64(2), int64(3))
	if err != nil {
		t.Fatalf("GetMany: %v", err)
	}
	if d := diff(want, rows); d != "" {
		t.Fatalf("GetMany (want, got):\n%s", d)
	}
	fence, _ := repo.Key(int64(2))
	fence = strings.TrimSuffix(fence, ":v") + ":f"
	if n, err := e.rdb.Exists(ctx, fence).Result(); err != nil || n != 0 {
		t.Fatalf("after GetMany the lease of the uncacheable row is still taken (EXISTS %s = %d, %v)", fence, n, err)
	}
	if _, cached, _, err := repo.Peek(ctx, int64(1)); err != nil || !cached {
		t.Fatalf("GetMany did not cache the cacheable row: %v, %v", cached, err)
	}
	for i := 0; i < 3; i++ {
		got, ok, err := repo.Get(ctx, int64(2))
		if err != nil || !ok || got != want[1] {
			t.Fatalf("Get #%d = %+v, %v, %v; want %+v", i+1, got, ok, err, want[1])
		}
	}
	s := repo.Stats()
	if s.Uncacheable != 4 || s.StampedeWaits != 0 || s.DecodeErrors != 0 || s.Errors != 0 {
		t.Fatalf("stats %+v: want 4 uncacheable reads, no stampede wait, no decode error, no error", s)
	}
	if n := logs.count(); n != 1 {
		t.Fatalf("%d warnings about uncacheable rows for 4 reads, want 1", n)
	}
}

// TestUncacheableWriteBack: a write-back Save of a row the cache cannot hold exactly
// fails and says why, rather than journal a row readers would see changed.
func TestUncacheableWriteBack(t *testing.T) { fixture.OnBoth(t, testUncacheableWriteBack) }

func testUncacheableWriteBack(t *testing.T, top topology) {
	t.Parallel()
	e := newEnvOn(t, top)
	e.exec(t, `CREATE TABLE counters (id bigint PRIMARY KEY, count numeric(20))`)
	repo, err := readthrough.Register[Counter](e.cache(t, e.db), readthrough.ModelOptions{WritePolicy: writepolicy.WriteBack})
	if err != nil {
		t.Fatal(err)
	}
	err = repo.Save(ctxT(t), &Counter{ID: 1, Count: math.MaxUint64})
	if err == nil || !strings.Contains(err.Error(), "count") {
		t.Fatalf("write-back Save of an uncacheable row: %v, want an error naming column count", err)
	}
}

// Prefs is a Scanner that takes the []byte the driver gives for jsonb, but whose Valuer
// returns a string, as many hand-written JSON column types do: its column record (what
// Value returns) cannot be scanned back.
type Prefs struct{ Theme string }

func (p Prefs) Value() (driver.Value, error) {
	b, err := json.Marshal(p)
	return string(b), err
}

func (p *Prefs) Scan(src any) error {
	b, ok := src.([]byte)
	if !ok {
		return fmt.Errorf("prefs: scan %T, want []byte", src)
	}
	return json.Unmarshal(b, p)
}

type Profile struct {
	ID    int64 `gorm:"primaryKey"`
	Prefs Prefs `gorm:"type:jsonb"`
}

// TestUncacheableValuer: a row whose column record would not come back as it went in is
// served from Postgres, uncached and counted, rather than cached and failing (or
// differing) on every hit.
func TestUncacheableValuer(t *testing.T) {
	t.Parallel()
	e, repo := fidelityEnv[Profile](t, `CREATE TABLE profiles (id bigint PRIMARY KEY, prefs jsonb)`, readthrough.ModelOptions{})
	e.exec(t, `INSERT INTO profiles VALUES (1, '{"Theme": "dark"}')`)
	ctx := ctxT(t)
	var want Profile
	if err := e.db.First(&want, int64(1)).Error; err != nil || want.Prefs.Theme != "dark" {
		t.Fatalf("First = %+v, %v: the test's row is wrong", want, err)
	}
	for i := range 2 {
		got, ok, err := repo.Get(ctx, int64(1))
		if err != nil || !ok || got != want {
			t.Fatalf("Get #%d = %+v, %v, %v; want %+v", i+1, got, ok, err, want)
		}
	}
	if _, _, cached, err := repo.Peek(ctx, int64(1)); cached || err != nil {
		t.Fatalf("the row was cached (%v, %v)", cached, err)
	}
	if s := repo.Stats(); s.Uncacheable != 2 || s.DecodeErrors != 0 || s.Hits != 0 {
		t.Fatalf("stats %+v: want 2 uncacheable reads, no decode error, no hit", s)
	}
}
