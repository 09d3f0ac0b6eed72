package readthrough_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pgcache/pgcache/integration"
	"github.com/pgcache/pgcache/readthrough"
)

// TestBreakerPausedRedis: with Redis paused, the first reads wait RedisTimeout and
// fail (Stats.Errors); after Failures of them the breaker opens and the rest read
// Postgres without trying Redis (Stats.RedisSkipped). A write made while the breaker is
// open, with Redis back, still deletes the row's entry, so once reads come back to
// Redis (after the cooldown, through a probe) they get the written row, not the one
// cached before. The control, with the breaker off, pays the timeout on every read.
func TestBreakerPausedRedis(t *testing.T) {
	t.Parallel()
	const reads, failures = 30, 3
	for _, on := range []bool{true, false} {
		name := map[bool]string{true: "breaker", false: "control without breaker"}[on]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			e.exec(t, `INSERT INTO widgets (id, name) VALUES (1, 'old')`)
			br := readthrough.BreakerOptions{Failures: failures, Cooldown: 2 * time.Second}
			if !on {
				br.Failures = -1
			}
			rd, rdb, register := e.smallPool(t, &redis.Options{}, readthrough.Options{RedisTimeout: 100 * time.Millisecond, Breaker: br})
			repo := register(false, readthrough.ModelOptions{})
			ctx := ctxT(t)
			cacheOn(t, rdb, repo, 1) // cached: 'old'

			if err := rd.Pause(ctx); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = rd.Unpause(context.Background()) })
			before := repo.Stats()
			for i := range reads {
				w, ok, err := repo.Get(ctx, int64(1))
				if err != nil || !ok || w.Name != "old" {
					t.Fatalf("read %d with Redis paused: Get = %+v, %v, %v; want the row from Postgres", i, w, ok, err)
				}
			}
			s := repo.Stats()
			timedOut, skipped := s.Errors-before.Errors, s.RedisSkipped-before.RedisSkipped
			t.Logf("%d reads with Redis paused: %d waited for RedisTimeout, %d skipped Redis", reads, timedOut, skipped)
			if timedOut+skipped != reads {
				t.Fatalf("%d timed out + %d skipped, want %d reads accounted for", timedOut, skipped, reads)
			}
			if !on {
				if timedOut != reads {
					t.Fatalf("control: %d of %d reads paid the timeout, want all (else this test cannot tell the breaker helps)", timedOut, reads)
				}
				return
			}
			// Failures opened it; each cooldown that passed (on a very slow machine) adds
			// one probe.
			if timedOut < failures || timedOut > reads/3 {
				t.Fatalf("%d of %d reads paid the timeout, want %d (and a probe per cooldown passed)", timedOut, reads, failures)
			}

			if err := rd.Unpause(ctx); err != nil {
				t.Fatal(err)
			}
			// The breaker is still open (unless the machine is very slow): the write's
			// invalidation is sent all the same.
			if err := repo.Save(ctx, &Widget{ID: 1, Name: "new"}); err != nil {
				t.Fatal(err)
			}
			hits := repo.Stats().Hits
			integration.Eventually(t, "reads to come back to Redis", func() bool {
				w, _, err := repo.Get(ctx, int64(1))
				if err != nil || w.Name != "new" {
					t.Fatalf("after the write Get = %+v, %v; want 'new'", w, err)
				}
				return repo.Stats().Hits > hits
			})
			if s := repo.Stats(); s.Errors != before.Errors+timedOut {
				t.Fatalf("stats %+v: Redis errors after it came back", s)
			}
		})
	}
}
