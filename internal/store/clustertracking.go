package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pgcache/pgcache/internal/testhooks"
)

// Tracking a Redis Cluster.
//
// Redis tracks keys per server: a master reports the changes of its own keys only. So
// a clusterTracker runs one nodeTracker per master, each with its own connection and
// tracking redirected to itself, exactly as for a single server, and reports Up only
// while every one of them is up: a key of any slot may be in the near tier, and a
// master whose messages may have been lost could be the one holding it. Any master's
// session ending reports Down at once.
//
// The masters are those of the Cluster client's own view of the topology, re-read
// (ForEachMaster reloads it with CLUSTER SLOTS) every health interval and as soon as a
// master's tracking connection drops. When the set of masters changed (a master
// added or removed, a replica promoted by a failover), every tracker is stopped, Down
// reported, and new ones started for the new set: the tier is empty and bypassed
// until all of them are up. A master that joins the Cluster is tracked within one
// health interval of the client seeing it; a fill from it before then can be missed
// by the near tier until it is (keys reach a new master only by slot migration, whose
// MIGRATE deletes them on the old one, which is tracked).

// clusterTracker follows every master of a Cluster client (see above).
type clusterTracker struct {
	rdb    *redis.ClusterClient
	prefix string
	h      TrackingHandler
	health time.Duration
	log    *slog.Logger
}

var errTopology = errors.New("store: tracking: the Cluster's masters changed: their trackers restart")

// run follows the masters until ctx ends; the handler's Down runs after every round
// (one tracker per master of one topology), the last included.
func (t *clusterTracker) run(ctx context.Context) error {
	wait := 50 * time.Millisecond
	for {
		masters, err := t.masters(ctx)
		if err == nil {
			err = t.round(ctx, masters)
			wait = 50 * time.Millisecond
		}
		t.h.Down(err)
		if ctx.Err() != nil {
			return nil
		}
		if !errors.Is(err, errTopology) {
			t.log.Warn("near cache: cannot follow the Redis Cluster's masters; the near cache is empty and bypassed until it can", slog.Any("error", err))
			d := wait/2 + rand.N(wait/2+1)
			timer := time.NewTimer(d)
			select {
			case <-ctx.Done():
				timer.Stop()
				return nil
			case <-timer.C:
			}
			wait = min(2*wait, 5*time.Second)
		}
	}
}

// masters returns the options of every master's client, sorted by address, as the
// Cluster client sees them after reloading the topology.
func (t *clusterTracker) masters(ctx context.Context) ([]redis.Options, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*t.health)
	defer cancel()
	var (
		mu  sync.Mutex
		out []redis.Options
	)
	err := t.rdb.ForEachMaster(ctx, func(_ context.Context, c *redis.Client) error {
		mu.Lock()
		defer mu.Unlock()
		out = append(out, *c.Options())
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: tracking: read the Cluster's masters: %w", err)
	}
	if len(out) == 0 {
		return nil, errors.New("store: tracking: the Cluster has no masters")
	}
	slices.SortFunc(out, func(a, b redis.Options) int { return strings.Compare(a.Addr, b.Addr) })
	return out, nil
}

func addrs(masters []redis.Options) []string {
	out := make([]string, len(masters))
	for i, m := range masters {
		out[i] = m.Addr
	}
	return out
}

// round runs one tracker per master until ctx ends (nil error) or the set of masters
// changed (errTopology), re-reading it on a timer and whenever a master's session
// drops.
func (t *clusterTracker) round(ctx context.Context, masters []redis.Options) error {
	rctx, cancel := context.WithCancel(ctx)
	agg := &aggregate{h: t.h, up: make([]bool, len(masters)), nudge: make(chan struct{}, 1)}
	var wg sync.WaitGroup
	defer func() {
		agg.close()
		cancel()
		wg.Wait()
	}()
	for i, opt := range masters {
		nt := newNodeTracker(opt, t.prefix, agg.handler(i), t.health, t.log)
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = nt.run(rctx) // returns nil once rctx ended; failures are logged and retried
		}()
	}
	want := addrs(masters)
	tick := time.NewTicker(t.health)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-agg.nudge:
		}
		now, err := t.masters(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			t.log.Warn("near cache: cannot re-read the Redis Cluster's masters", slog.Any("error", err))
			continue // the trackers keep their state; the next tick tries again
		}
		if got := addrs(now); !slices.Equal(got, want) && !testhooks.NearFixedMasters(ctx) {
			t.log.Info("near cache: the Redis Cluster's masters changed; tracking restarts on the new set",
				slog.Any("was", want), slog.Any("now", got))
			return errTopology
		}
	}
}

// aggregate turns the reports of one tracker per master into one: Up once every
// master's tracker is up, Down as soon as one is not. Its handler's functions run one
// at a time (TrackingHandler's promise), whichever master reports.
type aggregate struct {
	h      TrackingHandler
	nudge  chan struct{} // a master's session dropped: re-read the masters
	mu     sync.Mutex
	up     []bool
	nUp    int
	closed bool // the round ended: reports of its trackers, stopping, are ignored
}

func (a *aggregate) close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.closed = true
}

func (a *aggregate) handler(i int) TrackingHandler {
	return TrackingHandler{
		Up: func() {
			a.mu.Lock()
			defer a.mu.Unlock()
			if a.closed || a.up[i] {
				return
			}
			a.up[i] = true
			a.nUp++
			if a.nUp == len(a.up) {
				a.h.Up()
			}
		},
		Down: func(err error) {
			a.mu.Lock()
			defer a.mu.Unlock()
			if a.closed {
				return
			}
			if a.up[i] {
				a.up[i] = false
				a.nUp--
				select {
				case a.nudge <- struct{}{}:
				default:
				}
			}
			a.h.Down(err)
		},
		Invalidate: func(ks []string) {
			a.mu.Lock()
			defer a.mu.Unlock()
			a.h.Invalidate(ks)
		},
		Flush: func() {
			a.mu.Lock()
			defer a.mu.Unlock()
			a.h.Flush()
		},
	}
}
