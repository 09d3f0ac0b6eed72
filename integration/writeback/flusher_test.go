package writeback_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/pgcache/pgcache/integration/fixture"
	"github.com/pgcache/pgcache/internal/testhooks"
	"github.com/pgcache/pgcache/readthrough"
	"github.com/pgcache/pgcache/writeback"
	"github.com/pgcache/pgcache/writepolicy"
)

// TestFlushAppliesLatest: writes journaled before a flusher runs reach Postgres
// coalesced per row (each row written once, with its latest value), deletes included,
// and leave no pending record behind.
func TestFlushAppliesLatest(t *testing.T) { fixture.OnBoth(t, testFlushAppliesLatest) }

func testFlushAppliesLatest(t *testing.T, top topology) {
	t.Parallel()
	e := newEnv(t, top)
	ctx := ctxT(t)
	e.db.Exec(`INSERT INTO widgets (id, name, price) SELECT g, 'old', 1 FROM generate_series(1, 5) g`)
	e.db.Exec(`TRUNCATE audit`)
	repo := e.widgets(t)
	want := make(map[int64]Widget)
	n := 0
	for range 5 {
		for id := int64(1); id <= 20; id++ {
			w := Widget{ID: id, Name: fmt.Sprintf("r%d-v%d", id, n), Price: n}
			if err := repo.Save(ctx, &w); err != nil {
				t.Fatal(err)
			}
			want[id] = w
			n++
		}
	}
	for _, id := range []int64{20, 99} { // 99 does not exist anywhere
		if err := repo.Delete(ctx, id); err != nil {
			t.Fatal(err)
		}
		delete(want, id)
	}
	f := e.flusher(t, writeback.FlusherOptions{BatchSize: 7}) // versions of a row straddle batches
	drain(t, f)

	got := e.rows(t)
	if len(got) != len(want) {
		t.Fatalf("%d rows in Postgres, want %d", len(got), len(want))
	}
	for id, w := range want {
		if got[id] != w {
			t.Errorf("row %d = %+v, want %+v", id, got[id], w)
		}
	}
	for id, names := range e.applications(t) {
		if len(names) != 1 {
			t.Errorf("row %d written %d times in Postgres (%q), want once: coalescing failed", id, len(names), names)
		}
	}
	s := f.Stats()
	if s.Applied != 21 || s.Superseded != uint64(n+2-21) || s.DeadLettered != 0 {
		t.Errorf("stats %+v, want 21 applied (20 rows and one absent delete) and %d superseded", s, n+2-21)
	}
	for id := int64(1); id <= 20; id++ {
		key, _ := repo.Key(id)
		if p := strings.TrimSuffix(key, ":v") + ":p"; e.rdb.Exists(ctx, p).Val() != 0 {
			t.Errorf("pending record %s left after the flush", p)
		}
	}
	for id, w := range want {
		if r, ok, err := repo.Get(ctx, id); err != nil || !ok || r != w {
			t.Errorf("Get(%d) = %+v, %v, %v; want %+v", id, r, ok, err, w)
		}
	}
	if _, ok, _ := repo.Get(ctx, int64(20)); ok {
		t.Error("deleted row 20 still read")
	}
}

// TestTwoFlushersRace: flusher A has checked that write v1 of a row is current and is
// about to apply it, when v2 is written and flusher B applies it and clears the
// pending record. A must not commit v1 over v2: its second check, made holding the
// row's lock, sees v1 superseded and rolls it back. The control
// (testhooks.Flush.NoRecheck) commits without that check: v1 replaces v2 in Postgres.
func TestTwoFlushersRace(t *testing.T) { fixture.OnBoth(t, testTwoFlushersRace) }

func testTwoFlushersRace(t *testing.T, top topology) {
	withControl(t, "rechecked", "control-no-recheck", func(t *testing.T, control bool) { twoFlushersRace(t, top, control) })
}

func twoFlushersRace(t *testing.T, top topology, control bool) {
	e := newEnv(t, top)
	ctx := ctxT(t)
	repo := e.widgets(t)
	if err := repo.Save(ctx, &Widget{ID: 1, Name: "v1"}); err != nil {
		t.Fatal(err)
	}
	a := e.flusher(t, writeback.FlusherOptions{Consumer: "a"})
	b := e.flusher(t, writeback.FlusherOptions{Consumer: "b"})
	var once sync.Once
	// A reads no further while its batch applies: v2 is B's to flush.
	hooks := &testhooks.Flush{NoRecheck: control, NoReadAhead: true, BeforeApply: func() {
		once.Do(func() {
			if err := repo.Save(ctx, &Widget{ID: 1, Name: "v2"}); err != nil {
				t.Error(err)
			}
			bctx, cancel := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- b.Run(bctx) }()
			if err := poll(10*time.Second, func() (bool, error) { return b.Stats().Applied == 1, nil }); err != nil {
				t.Errorf("flusher b did not apply v2: %v", err)
			}
			cancel()
			if err := <-done; err != nil {
				t.Error(err)
			}
		})
	}}
	drainHooked(t, a, hooks)
	got := e.rows(t)[1]
	if control {
		if got.Name != "v1" {
			t.Fatalf("control: Postgres holds %q, want v1 committed over v2 without the second check", got.Name)
		}
		return
	}
	if got.Name != "v2" {
		t.Fatalf("Postgres holds %q after both flushes, want v2: an older write was committed over a newer one", got.Name)
	}
	if apps := e.applications(t)[1]; !slices.Equal(apps, []string{"v2"}) {
		t.Fatalf("row written as %q, want only v2", apps)
	}
	if s := a.Stats(); s.Applied != 0 || s.Superseded == 0 {
		t.Fatalf("flusher a stats %+v: want v1 superseded, nothing applied", s)
	}
	if w, _, _ := repo.Get(ctx, int64(1)); w.Name != "v2" {
		t.Fatalf("Get = %+v, want v2", w)
	}
}

// TestUpsertDeleteRace: flusher A inserts a row (write v1) and is about to commit when
// the row is deleted (write v2) and flusher B applies the delete. Postgres' DELETE
// does not wait for an INSERT of the same key that has not committed: without a lock
// of its own, B deletes nothing and commits, and A's commit brings back a row whose
// deletion was acknowledged. The flushers' per-row advisory lock makes B wait for A.
func TestUpsertDeleteRace(t *testing.T) { fixture.OnBoth(t, testUpsertDeleteRace) }

func testUpsertDeleteRace(t *testing.T, top topology) {
	t.Parallel()
	e := newEnv(t, top)
	ctx := ctxT(t)
	repo := e.widgets(t)
	if err := repo.Save(ctx, &Widget{ID: 7, Name: "v1"}); err != nil {
		t.Fatal(err)
	}
	a := e.flusher(t, writeback.FlusherOptions{Consumer: "a"})
	b := e.flusher(t, writeback.FlusherOptions{Consumer: "b"})
	waiting := func() (bool, error) {
		var n int
		err := e.db.Raw(`SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
			AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&n).Error
		return n > 0, err
	}
	bctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	var once sync.Once
	// A reads no further while its batch applies: the delete is B's to flush.
	hooks := &testhooks.Flush{NoReadAhead: true, BeforeCommit: func() {
		once.Do(func() {
			if err := repo.Delete(ctx, int64(7)); err != nil {
				t.Error(err)
			}
			go func() { done <- b.Run(bctx) }()
			// B either applies the delete now, or waits for A's lock on the row.
			err := poll(10*time.Second, func() (bool, error) {
				if b.Stats().Applied == 1 {
					return true, nil
				}
				return waiting()
			})
			if err != nil {
				t.Errorf("flusher b neither applied the delete nor waited: %v", err)
			}
		})
	}}
	drainHooked(t, a, hooks)
	if err := poll(10*time.Second, func() (bool, error) { return b.Stats().Applied == 1, nil }); err != nil {
		t.Errorf("flusher b did not apply the delete: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Error(err)
	}
	if w, ok := e.rows(t)[7]; ok {
		t.Fatalf("Postgres holds %+v after both flushes; the acknowledged delete was lost", w)
	}
	if _, ok, _ := repo.Get(ctx, int64(7)); ok {
		t.Fatal("Get finds row 7 after its delete was flushed")
	}
}

// TestVersionsWriteOneRow: during a rolling deploy two schema versions of a model
// write the same row under different keys. A batch holding both applies the later
// write only (one statement cannot upsert a row twice, and key order is not journal
// order), and clears both versions' pending records. (Write-back keys are now shared
// by every schema version, with the version in the entry; builds of pgcache before
// that journaled writes under keys of their own, which the flusher still coalesces.)
func TestVersionsWriteOneRow(t *testing.T) { fixture.OnBoth(t, testVersionsWriteOneRow) }

func testVersionsWriteOneRow(t *testing.T, top topology) {
	t.Parallel()
	e := newEnv(t, top)
	ctx := ctxT(t)
	repo := func(version string) *readthrough.Repository[Widget] {
		c, err := readthrough.New(e.db, e.rdb, readthrough.Options{Prefix: e.prefix, RedisTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		r, err := readthrough.Register[Widget](c, readthrough.ModelOptions{WritePolicy: writepolicy.WriteBack, Version: version})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	older, newer := repo("a"), repo("b")
	// Keys sort by version, so the newer deploy's write sorts last for one row and
	// first for the other.
	saves := []struct {
		repo *readthrough.Repository[Widget]
		w    Widget
	}{
		{older, Widget{ID: 1, Name: "a1"}}, {newer, Widget{ID: 1, Name: "b1"}},
		{newer, Widget{ID: 2, Name: "b2"}}, {older, Widget{ID: 2, Name: "a2"}},
	}
	for _, sv := range saves {
		if err := sv.repo.Save(ctx, &sv.w); err != nil {
			t.Fatal(err)
		}
	}
	f := e.flusher(t, writeback.FlusherOptions{})
	drain(t, f)
	if got := e.rows(t); got[1].Name != "b1" || got[2].Name != "a2" {
		t.Fatalf("Postgres holds %+v, want each row's last write (b1, a2)", got)
	}
	for _, sv := range saves {
		k, _ := sv.repo.Key(sv.w.ID)
		pending := k[:len(k)-1] + "p" // as keys.Key.Pending
		if n := e.rdb.Exists(ctx, pending).Val(); n != 0 {
			t.Errorf("pending record %s remains after the flush", pending)
		}
	}
}

// TestPoisonDeadLetter: a write that violates a CHECK constraint goes to the
// dead-letter stream with the reason; the other writes of its batch are applied;
// readers of the poisoned row see Postgres' row again.
func TestPoisonDeadLetter(t *testing.T) { fixture.OnBoth(t, testPoisonDeadLetter) }

func testPoisonDeadLetter(t *testing.T, top topology) {
	t.Parallel()
	e := newEnv(t, top)
	ctx := ctxT(t)
	e.db.Exec(`INSERT INTO widgets (id, name, price) VALUES (5, 'before', 7)`)
	repo := e.widgets(t)
	for id := int64(1); id <= 10; id++ {
		w := Widget{ID: id, Name: fmt.Sprintf("w%d", id), Price: int(id)}
		if id == 5 {
			w.Price = -1
		}
		if err := repo.Save(ctx, &w); err != nil {
			t.Fatal(err)
		}
	}
	if w, _, _ := repo.Get(ctx, int64(5)); w.Price != -1 {
		t.Fatalf("before the flush Get = %+v, want the pending write", w)
	}
	var called []writeback.DeadLetter
	f := e.flusher(t, writeback.FlusherOptions{MaxAttempts: 2,
		OnDeadLetter: func(d writeback.DeadLetter) { called = append(called, d) }})
	drain(t, f)

	rows := e.rows(t)
	for id := int64(1); id <= 10; id++ {
		want := Widget{ID: id, Name: fmt.Sprintf("w%d", id), Price: int(id)}
		if id == 5 {
			want = Widget{ID: 5, Name: "before", Price: 7}
		}
		if rows[id] != want {
			t.Errorf("row %d = %+v, want %+v", id, rows[id], want)
		}
	}
	dead, err := f.DeadLetters(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := repo.Key(int64(5))
	if len(dead) != 1 || dead[0].Key != key || !strings.Contains(dead[0].Reason, "price_not_negative") ||
		dead[0].Attempts != 2 || dead[0].Table != `"public"."widgets"` || !strings.Contains(dead[0].Change, ":i-1") {
		t.Fatalf("dead letters %+v, want the row 5 write with the CHECK violation", dead)
	}
	if len(called) != 1 || called[0].Key != key {
		t.Fatalf("OnDeadLetter called with %+v", called)
	}
	if s := f.Stats(); s.DeadLettered != 1 || s.Applied != 9 {
		t.Fatalf("stats %+v, want 9 applied and 1 dead-lettered", s)
	}
	if w, _, err := repo.Get(ctx, int64(5)); err != nil || w.Price != 7 {
		t.Fatalf("after the dead letter Get = %+v, %v; want Postgres' row", w, err)
	}
}

// TestUndecodableEntry: a journal entry no flusher can decode (corrupted, or written
// by something else) goes to the dead-letter stream when it is a row's current write,
// and is skipped when no pending record vouches for it; neither stops the others.
func TestUndecodableEntry(t *testing.T) { fixture.OnBoth(t, testUndecodableEntry) }

func testUndecodableEntry(t *testing.T, top topology) {
	t.Parallel()
	e := newEnv(t, top)
	ctx := ctxT(t)
	repo := e.widgets(t)
	if err := repo.Save(ctx, &Widget{ID: 1, Name: "fine"}); err != nil {
		t.Fatal(err)
	}
	e.rdb.XAdd(ctx, &redis.XAddArgs{Stream: e.shard("nonsense"), Values: []any{"k", "nonsense", "d", "{}"}})
	// Row 2's current write, corrupted: its pending record holds the entry's id.
	key2, _ := repo.Key(int64(2))
	id := e.rdb.XAdd(ctx, &redis.XAddArgs{Stream: e.shard(key2), Values: []any{"k", key2, "d", "not json"}}).Val()
	e.rdb.HSet(ctx, strings.TrimSuffix(key2, ":v")+":p", "v", id, "e", `v{"ID":2,"Name":"corrupt"}`)
	// Row 3: an entry without a pending record was never acknowledged to anyone: it
	// never lands, and is given up on after LandingTimeout.
	key3, _ := repo.Key(int64(3))
	e.rdb.XAdd(ctx, &redis.XAddArgs{Stream: e.shard(key3), Values: []any{"k", key3, "d", "not json"}})

	f := e.flusher(t, writeback.FlusherOptions{LandingTimeout: 100 * time.Millisecond})
	drain(t, f)
	if rows := e.rows(t); len(rows) != 1 || rows[1].Name != "fine" {
		t.Fatalf("rows %+v, want row 1 only", rows)
	}
	dead, _ := f.DeadLetters(ctx, 10)
	if len(dead) != 2 || dead[0].Key != "" || dead[1].Key != key2 {
		t.Fatalf("dead letters %+v, want the bad key and row 2's write", dead)
	}
	for _, d := range dead {
		if !strings.Contains(d.Reason, "bad change") {
			t.Errorf("reason %q", d.Reason)
		}
	}
	if _, ok, _ := repo.Get(ctx, int64(2)); ok {
		t.Error("row 2's undecodable pending write is still read")
	}
}

// TestGracefulStop: a flusher whose context ends applies the entries it holds before
// Run returns.
func TestGracefulStop(t *testing.T) { fixture.OnBoth(t, testGracefulStop) }

func testGracefulStop(t *testing.T, top topology) {
	t.Parallel()
	e := newEnv(t, top)
	ctx := ctxT(t)
	repo := e.widgets(t)
	for id := int64(1); id <= 5; id++ {
		if err := repo.Save(ctx, &Widget{ID: id, Name: "held"}); err != nil {
			t.Fatal(err)
		}
	}
	f := e.flusher(t, writeback.FlusherOptions{FlushInterval: time.Hour})
	var held atomic.Int64
	hooks := &testhooks.Flush{AfterRead: func(n int) { held.Store(int64(n)) }}
	runCtx, stop := context.WithCancel(testhooks.WithFlush(ctx, hooks))
	done := make(chan error, 1)
	go func() { done <- f.Run(runCtx) }()
	if err := poll(10*time.Second, func() (bool, error) { return held.Load() == 5, nil }); err != nil {
		t.Fatal(err)
	}
	if n := len(e.rows(t)); n != 0 {
		t.Fatalf("%d rows applied before the stop; the test needs them held", n)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := len(e.rows(t)); n != 5 {
		t.Fatalf("%d rows in Postgres after a graceful stop, want the 5 held", n)
	}
	if n, _ := f.Backlog(ctx); n != 0 {
		t.Fatalf("backlog %d after a graceful stop", n)
	}
}

// Gadget has a column of every kind a journal must carry unchanged.
type Gadget struct {
	ID        uuid.UUID `gorm:"type:uuid;primaryKey"`
	Name      *string
	Note      string
	Blob      []byte
	On        bool
	Ratio     float64
	Big       int64
	Small     int16
	At        time.Time
	Maybe     *time.Time
	Tags      string `gorm:"type:jsonb"`
	CreatedAt time.Time
	UpdatedAt time.Time
	Ignored   string `gorm:"-"`
	ReadOnly  string `gorm:"->;default:'db'"`
}

// TestRoundTripTypes: a row written back reads back from Postgres as it was saved.
func TestRoundTripTypes(t *testing.T) { fixture.OnBoth(t, testRoundTripTypes) }

func testRoundTripTypes(t *testing.T, top topology) {
	t.Parallel()
	e := newEnv(t, top)
	ctx := ctxT(t)
	if err := e.db.AutoMigrate(&Gadget{}); err != nil {
		t.Fatal(err)
	}
	c, err := readthrough.New(e.db, e.rdb, readthrough.Options{Prefix: e.prefix, RedisTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	repo, err := readthrough.Register[Gadget](c, readthrough.ModelOptions{WritePolicy: writepolicy.WriteBack})
	if err != nil {
		t.Fatal(err)
	}
	name := "näme, \"quoted\""
	at := time.Date(2024, 2, 29, 12, 30, 45, 123456000, time.UTC)
	in := Gadget{ID: uuid.New(), Name: &name, Note: "", Blob: []byte{0, 1, 2, 255}, On: true, Ratio: 0.1, Big: -1 << 62,
		Small: -7, At: at, Tags: `{"a": [1, 2]}`, Ignored: "not a column"}
	if err := repo.Save(ctx, &in); err != nil {
		t.Fatal(err)
	}
	if in.CreatedAt.IsZero() || in.UpdatedAt.IsZero() {
		t.Fatalf("autoCreateTime/autoUpdateTime not set: %+v", in)
	}
	cached, ok, err := repo.Get(ctx, in.ID)
	if err != nil || !ok || cached.Ratio != 0.1 || *cached.Name != name {
		t.Fatalf("Get before the flush = %+v, %v, %v", cached, ok, err)
	}
	drain(t, e.flusher(t, writeback.FlusherOptions{}))
	var out Gadget
	if err := e.db.First(&out, "id = ?", in.ID).Error; err != nil {
		t.Fatal(err)
	}
	if out.ID != in.ID || *out.Name != name || out.Note != "" || string(out.Blob) != string(in.Blob) || !out.On ||
		out.Ratio != 0.1 || out.Big != in.Big || out.Small != -7 || !out.At.Equal(at) || out.Maybe != nil ||
		!out.CreatedAt.Equal(in.CreatedAt.Truncate(time.Microsecond)) || out.ReadOnly != "db" || !strings.Contains(out.Tags, `"a"`) {
		t.Fatalf("read back %+v\nsaved       %+v", out, in)
	}

	// A second save updates, keeping the creation time.
	created := out.CreatedAt
	in.CreatedAt = time.Time{}
	in.Note = "again"
	if err := repo.Save(ctx, &in); err != nil {
		t.Fatal(err)
	}
	drain(t, e.flusher(t, writeback.FlusherOptions{}))
	if err := e.db.First(&out, "id = ?", in.ID).Error; err != nil {
		t.Fatal(err)
	}
	if out.Note != "again" || !out.CreatedAt.Equal(created) {
		t.Fatalf("after an update: note %q, created %v (was %v)", out.Note, out.CreatedAt, created)
	}
}

// TestZeroKey: write-back cannot take a key from Postgres later.
func TestZeroKey(t *testing.T) { fixture.OnBoth(t, testZeroKey) }

func testZeroKey(t *testing.T, top topology) {
	t.Parallel()
	e := newEnv(t, top)
	err := e.widgets(t).Save(ctxT(t), &Widget{Name: "no id"})
	if !errors.Is(err, readthrough.ErrZeroKey) {
		t.Fatalf("Save with a zero key: %v, want ErrZeroKey", err)
	}
}

// TestRunStopsPromptly: Run returns soon after its context ends even while it waits
// for new journal entries, here with FlushInterval and ClaimAfter so long that its
// blocking read of the journal could last a minute: a read waits at most a quarter of
// a second (go-redis does not end a blocked read when its context ends). The control
// (testhooks.Flush.UncappedBlock) lets the read wait as long as the batch allows: Run
// has not returned seconds after the cancel, until the test unblocks the read itself.
// (On a Cluster reads of the journal do not block in Redis: nothing to test there.)
func TestRunStopsPromptly(t *testing.T) {
	withControl(t, "capped", "control-uncapped", func(t *testing.T, control bool) { runStopsPromptly(t, control) })
}

func runStopsPromptly(t *testing.T, control bool) {
	e := newEnv(t, single)
	// The flusher's connections carry a name of their own, to find its blocked read
	// among those of the tests running in parallel.
	name := "stop-" + e.prefix
	rdb := redis.NewClient(&redis.Options{Addr: e.redisAddrs[0], ClientName: name})
	t.Cleanup(func() { rdb.Close() })
	f, err := writeback.NewFlusher(e.db, rdb, writeback.FlusherOptions{
		Prefix: e.prefix, FlushInterval: time.Minute, ClaimAfter: 10 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	blocked := func() ([]int64, error) {
		list, err := e.rdb.ClientList(context.Background()).Result()
		if err != nil {
			return nil, err
		}
		var ids []int64
		for _, line := range strings.Split(list, "\n") {
			fields := make(map[string]string)
			for _, kv := range strings.Fields(line) {
				k, v, _ := strings.Cut(kv, "=")
				fields[k] = v
			}
			if fields["name"] == name && fields["cmd"] == "xreadgroup" && strings.Contains(fields["flags"], "b") {
				var id int64
				if _, err := fmt.Sscan(fields["id"], &id); err == nil {
					ids = append(ids, id)
				}
			}
		}
		return ids, nil
	}
	ctx, cancel := context.WithCancel(testhooks.WithFlush(context.Background(), &testhooks.Flush{UncappedBlock: control}))
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	err = poll(20*time.Second, func() (bool, error) {
		ids, err := blocked()
		return len(ids) > 0, err
	})
	cancel()
	if err != nil {
		t.Fatalf("the flusher did not block reading the journal: %v", err)
	}
	if control {
		select {
		case err := <-done:
			t.Fatalf("control: Run returned (%v) while its read of the journal was blocked", err)
		case <-time.After(2 * time.Second):
		}
		ids, err := blocked()
		if err != nil || len(ids) == 0 {
			t.Fatalf("control: the flusher's read is no longer blocked (%v)", err)
		}
		for _, id := range ids {
			if err := e.rdb.ClientUnblock(context.Background(), id).Err(); err != nil {
				t.Fatal(err)
			}
		}
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return within 30s of its context's end; its read of the journal blocks for a minute")
	}
}
