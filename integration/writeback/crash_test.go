package writeback_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pgcache/pgcache/integration"
	"github.com/pgcache/pgcache/integration/fixture"
	"github.com/pgcache/pgcache/internal/testhooks"
	"github.com/pgcache/pgcache/readthrough"
	"github.com/pgcache/pgcache/writeback"
	"github.com/pgcache/pgcache/writepolicy"
)

// The crash tests run an application in a child process (this test binary again,
// running TestHelperProcess) and kill it with SIGKILL at a chosen point.
const (
	helperMode   = "PGCACHE_WRITEBACK_HELPER"
	helperConfig = "PGCACHE_WRITEBACK_HELPER_CONFIG"
)

type helperCfg struct {
	DB, Prefix string
	// Redis is the server's address, or the Cluster masters' with Cluster set.
	Redis   []string
	Cluster bool
	// Plan is the writes to make (mode "write"), in order.
	Plan []planned
	// BatchSize of the child's flusher.
	BatchSize int
	// StopAt is where the child's flusher stops and waits to be killed:
	// "read" (entries delivered, nothing applied), "commit" (a batch committed to
	// Postgres, pending records not cleared, entries not acknowledged) or "clear"
	// (pending records cleared, entries not acknowledged).
	StopAt string
}

// planned is one write of a crash test: a save of Name, or a delete.
type planned struct {
	ID     int64
	Name   string
	Delete bool
}

// crashPlan writes rows 1-16 once each first, so that the first batch of 16 holds
// their latest writes (a replay of it must apply them again, or skip them once
// cleared), then rows 17-40 many times each, so that batches straddle versions, and
// ends by deleting row 40.
func crashPlan() []planned {
	var p []planned
	n := 0
	add := func(id int64) {
		p = append(p, planned{ID: id, Name: fmt.Sprintf("r%d-v%d", id, n)})
		n++
	}
	for id := int64(1); id <= 16; id++ {
		add(id)
	}
	for range 8 {
		for id := int64(17); id <= 40; id++ {
			add(id)
		}
	}
	return append(p, planned{ID: 40, Delete: true})
}

// TestHelperProcess is the child of the crash tests; it does nothing in a normal run.
func TestHelperProcess(t *testing.T) {
	mode := os.Getenv(helperMode)
	if mode == "" {
		return
	}
	var cfg helperCfg
	if err := json.Unmarshal([]byte(os.Getenv(helperConfig)), &cfg); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	db := openDB(t, cfg.DB)
	rdb := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: cfg.Redis, IsClusterMode: cfg.Cluster, ContextTimeoutEnabled: true})
	defer rdb.Close()

	if mode == "write" {
		c, err := readthrough.New(db, rdb, readthrough.Options{Prefix: cfg.Prefix})
		if err != nil {
			t.Fatal(err)
		}
		repo, err := readthrough.Register[Widget](c, readthrough.ModelOptions{WritePolicy: writepolicy.WriteBack})
		if err != nil {
			t.Fatal(err)
		}
		for i, w := range cfg.Plan {
			if w.Delete {
				err = repo.Delete(ctx, w.ID)
			} else {
				err = repo.Save(ctx, &Widget{ID: w.ID, Name: w.Name})
			}
			if err != nil {
				t.Fatal(err)
			}
			fmt.Printf("ack %d\n", i) // acknowledged: Save returned
		}
	}

	f, err := writeback.NewFlusher(db, rdb, writeback.FlusherOptions{
		Prefix: cfg.Prefix, BatchSize: cfg.BatchSize, FlushInterval: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	wait := func() {
		fmt.Println("stopped")
		// Wait to be killed; a child that outlives its parent's patience fails.
		<-time.After(time.Minute)
		t.Fatal("not killed")
	}
	var h testhooks.Flush
	switch cfg.StopAt {
	case "read":
		h.AfterRead = func(held int) {
			if held >= cfg.BatchSize {
				wait()
			}
		}
	case "commit":
		h.AfterCommit = wait
	case "clear":
		h.AfterClear = wait
	}
	if err := f.Run(testhooks.WithFlush(ctx, &h)); err != nil {
		t.Fatal(err)
	}
}

// runChild starts the child and returns once it printed "stopped", having seen the
// acknowledgements it printed before; then it kills the child with SIGKILL.
func runChild(t *testing.T, mode string, cfg helperCfg) (acked []int) {
	t.Helper()
	b, _ := json.Marshal(cfg)
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperMode+"="+mode, helperConfig+"="+string(b))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	timeout := time.NewTimer(60 * time.Second)
	defer timeout.Stop()
	for stopped := false; !stopped; {
		select {
		case l, ok := <-lines:
			switch {
			case !ok:
				_ = cmd.Wait()
				t.Fatalf("child exited before it stopped:\n%s", stderr.String())
			case l == "stopped":
				stopped = true
			case strings.HasPrefix(l, "ack "):
				var i int
				fmt.Sscanf(l, "ack %d", &i)
				acked = append(acked, i)
			}
		case <-timeout.C:
			_ = cmd.Process.Kill()
			t.Fatalf("child did not stop:\n%s", stderr.String())
		}
	}
	if err := cmd.Process.Kill(); err != nil { // SIGKILL: no deferred code, no graceful stop
		t.Fatal(err)
	}
	_ = cmd.Wait()
	for range lines {
	}
	return acked
}

// TestCrashMidFlush: an application acknowledges writes, then is killed with SIGKILL
// in the middle of flushing them: after a batch committed to Postgres but before its
// pending records were cleared, or after they were cleared but before the entries
// were acknowledged. Redis (appendfsync always) is restarted too. A new flusher then
// claims the dead one's entries; Postgres ends with every acknowledged write, latest
// per row, each row written once in effect: the batch committed before the kill is
// applied again with the same values (after "commit"), or not at all (after "clear"),
// and no row ever goes back to an older value. On the Cluster, Redis is not restarted.
func TestCrashMidFlush(t *testing.T) { fixture.OnBoth(t, testCrashMidFlush) }

func testCrashMidFlush(t *testing.T, top topology) {
	t.Parallel()
	var rd *integration.Redis
	if top == single {
		rd = integration.NewRedis(t, integration.RedisOptions{Persistence: integration.PersistAOFAlways})
	}
	for _, stopAt := range []string{"commit", "clear"} {
		t.Run("killed after "+stopAt, func(t *testing.T) {
			var e *env
			if rd != nil {
				e = newEnvRedis(t, rd)
			} else {
				e = newEnv(t, top)
			}
			ctx := ctxT(t)
			plan := crashPlan()
			acked := runChild(t, "write", helperCfg{DB: e.dbURL, Redis: e.redisAddrs, Cluster: e.cluster, Prefix: e.prefix,
				Plan: plan, BatchSize: 16, StopAt: stopAt})
			if len(acked) != len(plan) {
				t.Fatalf("%d writes acknowledged, want %d", len(acked), len(plan))
			}
			// The first batch: 16 entries, one of each journal shard; those superseded
			// by later writes of their rows were not applied.
			first := e.rows(t)
			if len(first) == 0 || len(first) > 16 {
				t.Fatalf("%d rows in Postgres when the child died, want its first batch's (1 to 16)", len(first))
			}
			if rd != nil {
				if err := rd.Stop(ctx); err != nil {
					t.Fatal(err)
				}
				if err := rd.Start(ctx); err != nil {
					t.Fatal(err)
				}
			}

			f := e.flusher(t, writeback.FlusherOptions{ClaimAfter: 100 * time.Millisecond, BatchSize: 16})
			drain(t, f)
			if s := f.Stats(); s.Claimed < 16 {
				t.Errorf("stats %+v: the dead flusher's 16 entries were not claimed", s)
			}

			// Every acknowledged write, latest per row.
			want := make(map[int64]string)
			for _, i := range acked {
				if plan[i].Delete {
					delete(want, plan[i].ID)
				} else {
					want[plan[i].ID] = plan[i].Name
				}
			}
			rows := e.rows(t)
			if len(rows) != len(want) {
				t.Errorf("%d rows in Postgres, want %d", len(rows), len(want))
			}
			for id, name := range want {
				if rows[id].Name != name {
					t.Errorf("row %d = %q, want %q", id, rows[id].Name, name)
				}
			}
			// Once in effect: never an older value after a newer one; the replayed
			// batch written again only when it was not cleared.
			for id, names := range e.applications(t) {
				for i := 1; i < len(names); i++ {
					if names[i] != "" && version(names[i]) < version(names[i-1]) {
						t.Errorf("row %d went back from %q to %q", id, names[i-1], names[i])
					}
				}
				wantWrites := 1
				if _, ok := first[id]; ok && stopAt == "commit" {
					wantWrites = 2
				}
				if id == 40 {
					// Deleted last: applied once, or its last value and then the
					// delete when they fell in two batches.
					if last := names[len(names)-1]; last != "" || len(names) > 2 {
						t.Errorf("row 40 written %q, want at most a value then the delete", names)
					}
					continue
				}
				if len(names) != wantWrites {
					t.Errorf("row %d written %d times (%q), want %d", id, len(names), names, wantWrites)
				}
			}
			if keys := e.pendingKeys(ctx); len(keys) != 0 {
				t.Errorf("pending records left: %q", keys)
			}
		})
	}
}

// TestFlusherKilledHoldingEntries: a flusher killed after entries were delivered to
// it, before it applied them; another flusher claims them once they have been idle for
// ClaimAfter, and applies them.
func TestFlusherKilledHoldingEntries(t *testing.T) {
	fixture.OnBoth(t, testFlusherKilledHoldingEntries)
}

func testFlusherKilledHoldingEntries(t *testing.T, top topology) {
	t.Parallel()
	e := newEnv(t, top)
	ctx := ctxT(t)
	repo := e.widgets(t)
	for id := int64(1); id <= 8; id++ {
		if err := repo.Save(ctx, &Widget{ID: id, Name: fmt.Sprintf("w%d", id)}); err != nil {
			t.Fatal(err)
		}
	}
	runChild(t, "flush", helperCfg{DB: e.dbURL, Redis: e.redisAddrs, Cluster: e.cluster, Prefix: e.prefix, BatchSize: 8, StopAt: "read"})
	if n := len(e.rows(t)); n != 0 {
		t.Fatalf("the child applied %d rows; it should have died holding them", n)
	}
	var pending int64
	for _, st := range e.shards() {
		for _, g := range e.rdb.XInfoGroups(ctx, st).Val() {
			pending += g.Pending
		}
	}
	if pending != 8 {
		t.Fatalf("%d entries pending in the consumer groups, want 8 at the dead consumer", pending)
	}

	f := e.flusher(t, writeback.FlusherOptions{ClaimAfter: 100 * time.Millisecond})
	drain(t, f)
	if s := f.Stats(); s.Claimed != 8 || s.Applied != 8 {
		t.Fatalf("stats %+v, want the 8 entries claimed and applied", s)
	}
	if n := len(e.rows(t)); n != 8 {
		t.Fatalf("%d rows in Postgres, want 8", n)
	}

	// Stopped flushers, the dead child emptied by the claim and the first flusher, are
	// removed from the group once idle for ten times ClaimAfter; a live one stays.
	survivor := e.flusher(t, writeback.FlusherOptions{ClaimAfter: 100 * time.Millisecond, Consumer: "survivor"})
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- survivor.Run(rctx) }()
	consumers := func() ([]string, error) {
		var names []string
		for _, st := range e.shards() {
			cs, err := e.rdb.XInfoConsumers(ctx, st, "pgcache-flushers").Result()
			if err != nil {
				return nil, err
			}
			for _, c := range cs {
				names = append(names, c.Name)
			}
		}
		return names, nil
	}
	err := poll(30*time.Second, func() (bool, error) {
		cs, err := consumers()
		return len(cs) == len(e.shards()) && !slices.ContainsFunc(cs, func(n string) bool { return n != "survivor" }), err
	})
	cancel()
	if rerr := <-done; rerr != nil {
		t.Fatal(rerr)
	}
	if err != nil {
		cs, _ := consumers()
		t.Fatalf("stopped consumers not removed: %v (%v)", err, cs)
	}
}
