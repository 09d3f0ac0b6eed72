package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/pgcache/pgcache/integration"
	"github.com/pgcache/pgcache/integration/fixture"
	"github.com/pgcache/pgcache/readthrough"
)

// helperEnv, set to 1, makes the test binary run as the worker (see TestMain).
const helperEnv = "PGCACHE_WORKER_TEST_AS_WORKER"

// proc is a worker running as a process of its own, so that a test can kill it with
// SIGKILL: the test binary re-executed in worker mode, which runs what main runs.
type proc struct {
	cmd   *exec.Cmd
	addr  string
	logs  *integration.LogBuffer
	done  chan struct{} // closed once the process has exited
	state *os.ProcessState
}

var httpClient = &http.Client{Timeout: 2 * time.Second}

// startWorker starts a worker process with the worker's flags (-listen is added). It is
// killed when the test ends, and its logs are shown if the test failed.
func startWorker(t *testing.T, args ...string) *proc {
	t.Helper()
	addr := freeAddr(t)
	cmd := exec.Command(os.Args[0], append(slices.Clone(args), "-listen", addr)...)
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	p := &proc{cmd: cmd, addr: addr, logs: new(integration.LogBuffer), done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.logs, p.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = cmd.Wait()
		p.state = cmd.ProcessState
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("logs of worker process %d:\n%s", cmd.Process.Pid, p.logs.String())
		}
	})
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proc) get(path string) (int, string) {
	resp, err := httpClient.Get("http://" + p.addr + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (p *proc) ready() bool {
	code, _ := p.get("/readyz")
	return code == http.StatusOK
}

// waitReady waits until /readyz answers 200.
func (p *proc) waitReady(t *testing.T) {
	t.Helper()
	integration.Eventually(t, "the worker to be ready", func() bool {
		if p.exited() {
			t.Fatalf("the worker exited (%v) before it was ready", p.state)
		}
		return p.ready()
	})
}

// kill kills the process with SIGKILL and waits for it to be gone.
func (p *proc) kill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	p.wait(t)
}

// terminate sends SIGTERM and returns the exit code.
func (p *proc) terminate(t *testing.T) int {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	return p.wait(t)
}

// wait waits for the process to exit and returns its exit code (-1 if a signal killed it).
func (p *proc) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-p.done:
		return p.state.ExitCode()
	case <-time.After(20 * time.Second):
		t.Fatal("the worker process did not exit")
		return 0
	}
}

// metric returns the value of an unlabelled metric from /metrics, or -1.
func (p *proc) metric(name string) float64 {
	code, body := p.get("/metrics")
	if code != http.StatusOK {
		return -1
	}
	for line := range strings.Lines(body) {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				return -1
			}
			return f
		}
	}
	return -1
}

// widgets is a widgets table of rows 1..n ("v0") and its repository, cached under a
// Redis prefix of the test's own, and the address of that Redis for the worker.
type widgets struct {
	*fixture.Table
	redisAddr string
}

func newWidgets(t *testing.T, n int) *widgets {
	t.Helper()
	pg := servers.Postgres(t).NewDatabase(t)
	rd := servers.Redis(t)
	return &widgets{Table: fixture.New(t, pg, rd, n), redisAddr: rd.Addr()}
}

// workerArgs returns the flags of a worker on the fixture, connected as the
// non-superuser REPLICATION role.
func (f *widgets) workerArgs(slot string) []string {
	return []string{
		"-postgres", f.PG.RoleURL, "-redis", f.redisAddr, "-prefix", f.Prefix,
		"-tables", "widgets", "-slot", slot, "-status-interval", "100ms",
	}
}

// randomDelay returns a duration in [lo, hi): where in a burst a fault lands.
func randomDelay(lo, hi time.Duration) time.Duration { return lo + rand.N(hi-lo) }

// TestKilledMidBurst kills the worker process with SIGKILL at random moments while rows
// are updated with raw SQL and read through the cache, and restarts it. Once the last
// worker has caught up, no cached row may differ from the database: every transaction
// confirmed to the slot had its keys deleted, and the ones not confirmed were delivered
// again. The worker connects as the non-superuser REPLICATION role.
func TestKilledMidBurst(t *testing.T) {
	t.Parallel()
	// Each row is updated about once, so that an invalidation lost at a kill is not
	// covered up by a later update of the same row; the readers keep the rows cached.
	const (
		rows    = 2000
		barrier = rows + 1
		kills   = 3
	)
	f := newWidgets(t, rows+1)
	slot := f.Slot("kill")
	args := f.workerArgs(slot)
	w := startWorker(t, args...)
	w.waitReady(t) // the slot exists, and its gap (nothing cached yet) is behind us
	f.FillAll(t, rows)

	ctx, stopLoad := context.WithCancel(context.Background())
	defer stopLoad()
	var (
		wg      sync.WaitGroup
		commits atomic.Int64
		version atomic.Int64
		// written holds, for each row, the number in the name of its last committed
		// update; confirmed a copy of it that the worker has confirmed (see below).
		mu        sync.Mutex
		written   = make(map[int64]int64)
		confirmed atomic.Pointer[map[int64]int64]
		confirms  atomic.Int64
	)
	confirmed.Store(&map[int64]int64{})
	// The writer: single-row updates, and now and then a transaction of several.
	wg.Go(func() {
		for ctx.Err() == nil {
			n := 1
			if rand.N(5) == 0 {
				n = 5
			}
			done := make(map[int64]int64, n)
			err := f.DB.Transaction(func(tx *gorm.DB) error {
				for range n {
					id, v := int64(1+rand.N(rows)), version.Add(1)
					if err := tx.Exec(`UPDATE widgets SET name = ? WHERE id = ?`, fmt.Sprint("v", v), id).Error; err != nil {
						return err
					}
					done[id] = v
				}
				return nil
			})
			if err != nil {
				t.Errorf("writer: %v", err)
				return
			}
			mu.Lock()
			maps.Copy(written, done)
			mu.Unlock()
			commits.Add(1)
		}
	})
	// The confirmer: the worker confirms a position to the slot only once Redis has
	// deleted the keys of every transaction before it. So once the slot's confirmed
	// position passes a WAL position taken after a set of commits returned, no cached
	// entry holds a row older than those commits, and a read begun afterwards must
	// return each row at least as new as its last write among them. (Each worker kill
	// holds this back; that is the lag the promise allows.)
	wg.Go(func() {
		for ctx.Err() == nil {
			mu.Lock()
			snap := maps.Clone(written)
			mu.Unlock()
			lsn, err := fixture.WALInsert(ctx, f.DB)
			if err != nil {
				if ctx.Err() == nil {
					t.Errorf("confirmer: %v", err)
				}
				return
			}
			for ctx.Err() == nil {
				pos, _, err := fixture.SlotConfirmed(ctx, f.DB, slot)
				passed := pos >= lsn
				if err != nil {
					if ctx.Err() == nil {
						t.Errorf("confirmer: %v", err)
					}
					return
				}
				if passed {
					confirmed.Store(&snap)
					confirms.Add(1)
					break
				}
				select {
				case <-ctx.Done():
				case <-time.After(20 * time.Millisecond):
				}
			}
		}
	})
	// The readers keep the cache full: a lost invalidation shows only on a cached row.
	// A read whose database load outlived its LoadTimeout (a loaded machine, the
	// worker restarting beside it) is slowness, not a violation: it is counted and the
	// reader goes on. Every read that succeeds is checked: no row is ever deleted here,
	// so each must come back, holding a name some commit wrote, and not older than what
	// the worker had confirmed when the read began.
	var reads, timeouts atomic.Int64
	for range 2 {
		wg.Go(func() {
			ids := make([]any, 50)
			for ctx.Err() == nil {
				for i := range ids {
					ids[i] = int64(1 + rand.N(rows))
				}
				floor := *confirmed.Load()
				got, err := f.Repo.GetMany(ctx, ids...)
				switch {
				case ctx.Err() != nil:
					return
				case errors.Is(err, context.DeadlineExceeded):
					timeouts.Add(1)
					continue
				case err != nil:
					t.Errorf("reader: %v", err)
					return
				}
				reads.Add(1)
				if msg := checkRead(ids, got, version.Load(), floor); msg != "" {
					t.Errorf("reader: %s", msg)
					return
				}
			}
		})
	}

	pause := func(d time.Duration) {
		select {
		case <-time.After(d):
		case <-t.Context().Done():
		}
	}
	for i := range kills {
		pause(randomDelay(100*time.Millisecond, 700*time.Millisecond))
		handled := w.metric("pgcache_transactions_total")
		w.kill(t)
		t.Logf("kill %d after %d commits; the worker had handled %v transactions", i+1, commits.Load(), handled)
		pause(randomDelay(0, 300*time.Millisecond)) // writes go on with no worker
		w = startWorker(t, args...)
		w.waitReady(t)
	}
	pause(randomDelay(100*time.Millisecond, 500*time.Millisecond))
	stopLoad()
	wg.Wait()
	if t.Failed() {
		return
	}

	f.Barrier(t, barrier)
	stale, cached := f.Stale(t, rows)
	t.Logf("%d commits, %d kills; %d reads checked (against %d confirmed positions), %d timed out; %d of %d rows cached at the end; the last worker handled %v transactions",
		commits.Load(), kills, reads.Load(), confirms.Load(), timeouts.Load(), cached, rows, w.metric("pgcache_transactions_total"))
	if len(stale) > 0 {
		t.Errorf("%d stale rows after catch-up:\n%s", len(stale), strings.Join(stale[:min(len(stale), 20)], "\n"))
	}
	if commits.Load() < 100 {
		t.Errorf("only %d commits during the burst; the test did not exercise the worker", commits.Load())
	}
	if cached < rows/10 {
		t.Errorf("only %d rows cached at the end; the staleness check checked little", cached)
	}
}

// checkRead checks a read of TestKilledMidBurst: every id asked for came back (no row
// is deleted there), and each row holds "v0" or a name written by one of the first
// written updates, not older than "v<floor[id]>", the row's last write the worker had
// confirmed when the read began. It returns what is wrong, or "".
func checkRead(ids []any, got []fixture.Widget, written int64, floor map[int64]int64) string {
	byID := make(map[int64]string, len(got))
	for _, w := range got {
		byID[w.ID] = w.Name
	}
	for _, id := range ids {
		name, ok := byID[id.(int64)]
		if !ok {
			return fmt.Sprintf("row %d, which exists, missing from a read", id)
		}
		n, err := strconv.ParseInt(strings.TrimPrefix(name, "v"), 10, 64)
		if !strings.HasPrefix(name, "v") || err != nil || n < 0 || n > written {
			return fmt.Sprintf("row %d read as %q, which no commit wrote (%d updates so far)", id, name, written)
		}
		if least := floor[id.(int64)]; n < least {
			return fmt.Sprintf("row %d read as %q, stale: the worker had confirmed the commit of v%d, so its key was deleted, before the read began", id, name, least)
		}
	}
	return ""
}

// TestKilledMidBurstReads is the control of TestKilledMidBurst's readers: a read whose
// load outlives LoadTimeout (here, behind a lock on the table) fails with an error
// that is context.DeadlineExceeded, which they count as slowness; and checkRead finds
// a row missing from a read, a name no commit wrote, and a row older than the floor.
func TestKilledMidBurstReads(t *testing.T) {
	t.Parallel()
	f := newWidgets(t, 10)
	cache, err := readthrough.New(f.DB, f.Redis, readthrough.Options{Prefix: f.Prefix, RedisTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	slow, err := readthrough.Register[fixture.Widget](cache, readthrough.ModelOptions{LoadTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	tx := f.DB.Begin()
	defer tx.Rollback()
	// A second connection, idle in the pool, so the read waits for the lock and not
	// for a new connection.
	if err := f.DB.Exec(`SELECT 1`).Error; err != nil {
		t.Fatal(err)
	}
	if err := tx.Exec(`LOCK TABLE widgets IN ACCESS EXCLUSIVE MODE`).Error; err != nil {
		t.Fatal(err)
	}
	_, err = slow.GetMany(context.Background(), int64(1), int64(2))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a load past LoadTimeout failed with %v; TestKilledMidBurst's readers would take it for a violation", err)
	}
	t.Logf("a load past LoadTimeout: %v", err)

	ids := []any{int64(1), int64(2)}
	for _, c := range []struct {
		got  []fixture.Widget
		want string
	}{
		{[]fixture.Widget{{ID: 1, Name: "v0"}, {ID: 2, Name: "v7"}}, ""},
		{[]fixture.Widget{{ID: 1, Name: "v0"}}, "row 2, which exists, missing"},
		{[]fixture.Widget{{ID: 1, Name: "v0"}, {ID: 2, Name: "v9"}}, "which no commit wrote"},
		{[]fixture.Widget{{ID: 1, Name: "x"}, {ID: 2, Name: "v1"}}, "which no commit wrote"},
		{[]fixture.Widget{{ID: 1, Name: "v0"}, {ID: 2, Name: "v4"}}, "stale: the worker had confirmed the commit of v5"},
	} {
		if msg := checkRead(ids, c.got, 8, map[int64]int64{2: 5}); c.want == "" && msg != "" || !strings.Contains(msg, c.want) {
			t.Errorf("checkRead(%+v) = %q, want %q", c.got, msg, c.want)
		}
	}
}

// TestKilledMidBurstStale is the control of TestKilledMidBurst's staleness check: a
// cache whose invalidations are lost (under a prefix the worker does not serve) keeps
// a row's old value after the worker confirmed its update, and the check says so.
func TestKilledMidBurstStale(t *testing.T) {
	t.Parallel()
	f := newWidgets(t, 2)
	slot := f.Slot("stale")
	w := startWorker(t, f.workerArgs(slot)...)
	w.waitReady(t)
	// The worker's own applications cache too: with its registry missing it would
	// refuse to confirm changes to a table another prefix caches (ErrWrongPrefix).
	f.Fill(t, 1)
	cache, err := readthrough.New(f.DB, f.Redis, readthrough.Options{Prefix: f.Prefix + "lost", RedisTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	lost, err := readthrough.Register[fixture.Widget](cache, readthrough.ModelOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ids := []any{int64(1), int64(2)}
	if _, err := lost.GetMany(ctx, ids...); err != nil {
		t.Fatal(err)
	}
	f.Exec(t, `UPDATE widgets SET name = 'v1' WHERE id = 2`)
	lsn, err := fixture.WALInsert(ctx, f.DB)
	if err != nil {
		t.Fatal(err)
	}
	integration.Eventually(t, "the worker to confirm the update", func() bool {
		pos, _, err := fixture.SlotConfirmed(ctx, f.DB, slot)
		if err != nil {
			t.Fatal(err)
		}
		return pos >= lsn
	})
	got, err := lost.GetMany(ctx, ids...)
	if err != nil {
		t.Fatal(err)
	}
	if msg := checkRead(ids, got, 1, map[int64]int64{2: 1}); !strings.Contains(msg, "stale") {
		t.Fatalf("read %+v of a cache that lost the invalidation: check said %q, want stale", got, msg)
	}
}

// TestSlotDroppedWhileDown drops the worker's slot while it is stopped and changes a
// cached row meanwhile: the restarted worker creates the slot again and flushes the
// table before /readyz answers 200.
func TestSlotDroppedWhileDown(t *testing.T) {
	t.Parallel()
	const (
		rows = 200
		// Entries of ids with no row, enough that the flush takes a while: a flush
		// racing the readiness report would be caught midway.
		extra = 50000
	)
	f := newWidgets(t, rows)
	slot := f.Slot("dropped")
	args := f.workerArgs(slot)
	w := startWorker(t, args...)
	w.waitReady(t)
	if code := w.terminate(t); code != exitOK {
		t.Fatalf("exit %d after SIGTERM, want %d; logs:\n%s", code, exitOK, w.logs.String())
	}

	admin := fixture.Open(t, f.PG.URL)
	integration.Eventually(t, "the slot to be dropped", func() bool {
		return admin.Exec(`SELECT pg_drop_replication_slot(?)`, slot).Error == nil
	})

	// Cached while no slot records changes: one row changes unseen, the others stay,
	// and one is cached as absent and then inserted.
	f.FillAll(t, rows)
	f.Fill(t, 4040)
	ctx := context.Background()
	extraKeys := make([]string, extra)
	for i := range extraKeys {
		k, err := f.Repo.Key(int64(100000 + i))
		if err != nil {
			t.Fatal(err)
		}
		extraKeys[i] = k
	}
	// Cached as absent by reads, which add them to the table's index as any fill does.
	for lo := 0; lo < extra; lo += 5000 {
		ids := make([]any, 0, 5000)
		for i := lo; i < lo+5000; i++ {
			ids = append(ids, int64(100000+i))
		}
		if _, err := f.Repo.GetMany(ctx, ids...); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := f.Redis.Exists(ctx, extraKeys...).Result(); err != nil || n != extra {
		t.Fatalf("%d of %d entries of absent ids cached (%v)", n, extra, err)
	}
	f.Exec(t, `UPDATE widgets SET name = 'changed with no slot' WHERE id = 1`)
	f.Exec(t, `INSERT INTO widgets (id, name) VALUES (4040, 'inserted with no slot')`)

	w = startWorker(t, args...)
	integration.Eventually(t, "the worker to be ready", func() bool {
		if w.exited() {
			t.Fatalf("the worker exited (%v)", w.state)
		}
		return w.ready()
	})
	// No waiting from here on: ready means the gap has been invalidated.
	if f.Cached(t, 4040) {
		t.Error("row 4040, cached as absent, still cached when the worker reported ready after its slot was dropped")
	}
	if _, cached := f.Stale(t, rows); cached > 0 {
		t.Errorf("%d of %d rows still cached when the worker reported ready after its slot was dropped", cached, rows)
	}
	if n, err := f.Redis.Exists(ctx, extraKeys...).Result(); err != nil || n > 0 {
		t.Errorf("%d of %d other entries of the table still cached when the worker reported ready (%v)", n, extra, err)
	}
	if logs := w.logs.String(); !strings.Contains(logs, `"reason":"slot created"`) {
		t.Errorf("no gap with reason %q in the logs:\n%s", "slot created", logs)
	}
	if got, _, err := f.Repo.Get(context.Background(), int64(1)); err != nil || got.Name != "changed with no slot" {
		t.Errorf("Get(1) = %+v, %v after the gap", got, err)
	}
	if v := w.metric("pgcache_tables_flushed_total"); v != 1 {
		t.Errorf("pgcache_tables_flushed_total = %v, want 1", v)
	}
}

// TestStandbyTakeover runs two worker processes on one slot: the second waits while the
// first streams, and after the first is killed with SIGKILL it takes the slot over and
// invalidates a change committed after the kill, within 10s of the kill. The workers run
// with the binary's default backoff, and the standby has waited long enough for an
// uncapped backoff to have grown to seconds.
func TestStandbyTakeover(t *testing.T) {
	t.Parallel()
	f := newWidgets(t, 2)
	args := f.workerArgs(f.Slot("standby"))
	active := startWorker(t, args...)
	active.waitReady(t)
	standby := startWorker(t, args...)
	// Let the standby wait until its next wait would be the default MaxBackoff, 10s,
	// were waits on a slot in use not capped.
	integration.Eventually(t, "the standby to retry", func() bool {
		if standby.exited() {
			t.Fatalf("the standby exited (%v) while the slot was in use", standby.state)
		}
		return standby.metric("pgcache_reconnects_total") >= 8
	})
	if standby.ready() {
		t.Fatal("the standby reports ready while the active worker holds the slot")
	}
	f.Fill(t, 1)
	f.Exec(t, `UPDATE widgets SET name = 'seen by the active worker' WHERE id = 1`)
	integration.Eventually(t, "the active worker to invalidate row 1", func() bool { return !f.Cached(t, 1) })

	f.Fill(t, 2)
	active.kill(t)
	killed := time.Now()
	f.Exec(t, `UPDATE widgets SET name = 'seen by the standby' WHERE id = 2`)
	var readyAfter time.Duration
	integration.Eventually(t, "the standby to invalidate row 2", func() bool {
		if readyAfter == 0 && standby.ready() {
			readyAfter = time.Since(killed)
		}
		return !f.Cached(t, 2)
	})
	took := time.Since(killed)
	t.Logf("after the active worker was killed, the standby was ready within %v and invalidated the new change within %v", readyAfter, took)
	switch {
	case took > 10*time.Second:
		t.Errorf("the standby took %v to invalidate a change after the active worker died; the bound is 10s", took)
	case took > 5*time.Second:
		t.Errorf("the standby took %v to invalidate a change after the active worker died; it polls the slot every second, so it should take about that long", took)
	}
	// The counter is raised when the delete's reply arrives, which can be just after
	// this process saw the key gone.
	integration.Eventually(t, "the standby to count the keys it deleted", func() bool {
		return standby.metric("pgcache_keys_deleted_total") >= 1
	})
	if v := standby.metric("pgcache_tables_flushed_total"); v != 0 {
		t.Errorf("the standby flushed %v tables on taking over, want 0: the slot was never lost", v)
	}
}
