package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/pgcache/pgcache/internal/testhooks"
	"github.com/pgcache/pgcache/keys"
)

// Server-assisted client-side caching (the near tier's invalidation).
//
// A Tracker owns one connection, made by a client of its own from the options of the
// caller's client. On every (re)connect, before subscribing, it asks Redis for its
// CLIENT ID and turns tracking on for itself, redirected to itself:
//
//	CLIENT TRACKING ON REDIRECT <own id> BCAST PREFIX <prefix>
//
// then subscribes to __redis__:invalidate. In BCAST mode Redis sends the name of every
// key under the prefix that changes, whoever changed it (a write through any process,
// the invalidator's DEL, a TTL expiry, an eviction under maxmemory), and a null
// message on FLUSHDB/FLUSHALL. Tracking and its redirect target being one connection,
// they live and die together: there is no "tracking-redir-broken" state to miss (it
// is what Redis reports to a tracking client whose separate redirect target died), and
// any failure of the connection (killed by CLIENT KILL, by Redis' output buffer limit
// for pub/sub clients when it falls behind, a Redis restart or failover) ends the
// session: the handler's Down runs, and Up only once a new connection has tracking on
// and its SUBSCRIBE was acknowledged. A connection that stops answering (a partition
// without a reset) is declared lost when a PING gets no reply within the health
// interval.
//
// A connection can also outlive its server's part: after a Sentinel failover the old
// master may keep its clients for a while (until the sentinels turn it into a replica,
// seconds later) or for ever (while they cannot reach it), and a tracking connection
// there hears nothing of the writes sent to the new master. So for a single-node or
// Sentinel client the tracker compares, every health interval, the run id of the server
// its connection reached (read when it connected) with the run id of the server the
// caller's client sends its commands to, and ends the session when they differ; the
// next connection is dialled to the master the sentinels give.
//
// RESP2 is used on purpose: go-redis delivers the redirected messages as pub/sub
// messages there, and its own RESP3 client-side cache (experimental in v9.23) owns
// RESP3's invalidation pushes.

// invalidateChannel is where Redis sends the keys of a redirected tracking client.
const invalidateChannel = "__redis__:invalidate"

// TrackingName is the client name of the tracking connection (CLIENT LIST shows it).
const TrackingName = "pgcache-near"

// TrackingHandler receives what a Tracker sees. The functions run on the tracker's
// goroutine, one at a time, in the order Redis sent what they report (Down also runs
// when a connection is dialled, before tracking is turned on); none may be nil.
type TrackingHandler struct {
	// Up: tracking is on; every change of a key under the prefix from now on is
	// reported by Invalidate (or the session ends with Down).
	Up func()
	// Down: the session ended (err says why); messages may have been lost.
	Down func(err error)
	// Invalidate: these keys changed.
	Invalidate func(keys []string)
	// Flush: the database was flushed (FLUSHDB, FLUSHALL); tracking stays on.
	Flush func()
}

// Tracker reports the changes of the keys under a prefix (see above): over one
// connection for a single server or a Sentinel client, over one connection per master
// for a Cluster client (see clusterTracker). Run it; it stops when Run's context ends.
type Tracker struct {
	node    *nodeTracker
	cluster *clusterTracker
}

// nodeTracker follows one server over one connection.
type nodeTracker struct {
	client *redis.Client
	h      TrackingHandler
	log    *slog.Logger
	health time.Duration
	// master, when set, returns the run id of the server the caller's client sends its
	// commands to; tracked holds the run id of the tracking connection's server (a
	// string), read when it connected. The session ends when they differ.
	master  func(context.Context) (string, error)
	tracked atomic.Value
}

// ErrTrackingUnsupported reports a client the tracker cannot follow: a Ring client (its
// shards are chosen by the client, not by Redis, and are not tracked) or an unknown
// implementation.
var ErrTrackingUnsupported = errors.New("store: near-cache tracking needs a single-node, Sentinel or Cluster client (*redis.Client or *redis.ClusterClient); Ring clients are not supported: use a Cluster")

// NewTracker returns a tracker of the keys of p, over connections of its own to the
// server (or, for a Cluster client, to every master) of the Store's client. health
// bounds how long a silent connection is trusted: after that long without a message
// it is pinged, and after as long again without a reply it is dropped; a Cluster's
// masters are re-read as often.
func (s *Store) NewTracker(p keys.Prefix, h TrackingHandler, health time.Duration, log *slog.Logger) (*Tracker, error) {
	switch rdb := s.rdb.(type) {
	case *redis.Client:
		t := newNodeTracker(*rdb.Options(), string(p), h, health, log)
		t.master = s.ServerIDs // one id: the client has one server
		return &Tracker{node: t}, nil
	case *redis.ClusterClient:
		return &Tracker{cluster: &clusterTracker{rdb: rdb, prefix: string(p), h: h, health: health, log: log}}, nil
	}
	return nil, fmt.Errorf("%w (got %T)", ErrTrackingUnsupported, s.rdb)
}

// Run follows the tracking connections until ctx ends, reconnecting with backoff after
// each failure; the handler's Down runs after every session, the last included. It
// returns nil once ctx ended.
func (t *Tracker) Run(ctx context.Context) error {
	if t.cluster != nil {
		return t.cluster.run(ctx)
	}
	return t.node.run(ctx)
}

// newNodeTracker returns a tracker over a client of its own made from opt, the
// options of the server's client.
func newNodeTracker(opt redis.Options, prefix string, h TrackingHandler, health time.Duration, log *slog.Logger) *nodeTracker {
	t := &nodeTracker{h: h, log: log.With(slog.String("redis", opt.Addr)), health: health}
	user := opt.OnConnect
	// go-redis' PubSub reconnects by itself as soon as it finds its connection broken,
	// before it returns the error (or, after a read that timed out, without one): the
	// messages sent to the old connection are lost. So every dial reports Down first.
	dial := opt.Dialer
	if dial == nil {
		dial = redis.NewDialer(&opt)
	}
	opt.Dialer = func(ctx context.Context, network, addr string) (net.Conn, error) {
		h.Down(errNewConnection)
		return dial(ctx, network, addr)
	}
	opt.OnConnect = func(ctx context.Context, cn *redis.Conn) error {
		if user != nil {
			if err := user(ctx, cn); err != nil {
				return err
			}
		}
		id, err := cn.ClientID(ctx).Result()
		if err != nil {
			return fmt.Errorf("store: tracking: CLIENT ID: %w", err)
		}
		if t.master != nil {
			info, err := cn.Info(ctx, "server").Result()
			if err != nil {
				return fmt.Errorf("store: tracking: INFO server (allow INFO to the user: the near cache checks that it tracks the client's master): %w", err)
			}
			run, ok := infoField(info, "run_id")
			if !ok {
				return errors.New("store: tracking: INFO server has no run_id")
			}
			t.tracked.Store(run)
		}
		if err := cn.Do(ctx, "CLIENT", "TRACKING", "ON", "REDIRECT", id, "BCAST", "PREFIX", prefix).Err(); err != nil {
			return fmt.Errorf("store: tracking: CLIENT TRACKING ON (Redis 6 or later, and the CLIENT command allowed to the user): %w", err)
		}
		return nil
	}
	opt.Protocol = 2
	opt.ClientName = TrackingName
	opt.PoolSize, opt.MinIdleConns, opt.MaxIdleConns, opt.MaxActiveConns = 1, 0, 0, 0
	opt.ClientSideCache, opt.ClientSideCacheConfig = nil, nil
	// A config of its own: opt was copied from a live client (a Cluster's node), whose
	// config go-redis still writes through the shared pointer while NewClient would
	// read it; and maintenance notifications need RESP3, which tracking does not use.
	opt.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	t.client = redis.NewClient(&opt)
	return t
}

var errNewConnection = errors.New("store: tracking: a new connection: messages to the old one may be lost")

// run follows the tracking connection until ctx ends (see Tracker.Run).
func (t *nodeTracker) run(ctx context.Context) error {
	defer t.client.Close()
	wait := 50 * time.Millisecond
	for {
		began := time.Now()
		up, err := t.session(ctx)
		t.h.Down(err)
		if ctx.Err() != nil {
			return nil
		}
		t.log.Warn("near cache: tracking connection lost; the near cache is empty and bypassed until it is back",
			slog.Any("error", err), slog.Bool("was_up", up))
		if up && time.Since(began) > 10*time.Second {
			wait = 50 * time.Millisecond
		}
		// Equal jitter: processes that lost Redis together do not come back together.
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

// session subscribes on a new connection and hands its messages to the handler until
// the connection fails or ctx ends. up reports whether tracking was ever on. A new
// connection made within the session (go-redis reconnects on its own) reports Down
// from OnConnect and Up once subscribed, so messages lost in between are covered.
func (t *nodeTracker) session(ctx context.Context) (up bool, err error) {
	ps := t.client.Subscribe(ctx, invalidateChannel)
	defer ps.Close()
	// Closing the subscription ends a blocked read at once when ctx ends.
	stop := context.AfterFunc(ctx, func() { ps.Close() })
	defer stop()
	moved := make(chan error, 1)
	if t.master != nil {
		fctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		defer func() { cancel(); <-done }()
		go func() {
			defer close(done)
			if err := t.follow(fctx); err != nil {
				moved <- err
				ps.Close()
			}
		}()
	}
	pinged := false
	for {
		msg, err := ps.ReceiveTimeout(ctx, t.health)
		if err != nil {
			select {
			case err := <-moved: // follow closed the subscription
				return up, err
			default:
			}
		}
		switch {
		case err == nil:
		case isTimeout(err) && !pinged:
			if err := ps.Ping(ctx); err != nil {
				return up, fmt.Errorf("store: tracking: ping: %w", err)
			}
			pinged = true
			continue
		case isTimeout(err):
			return up, fmt.Errorf("store: tracking: no reply to a ping within %v", t.health)
		case up && isFlush(err):
			// The message was read whole: the connection is still in step.
			t.h.Flush()
			continue
		default:
			if ctx.Err() != nil {
				return up, ctx.Err()
			}
			return up, fmt.Errorf("store: tracking: %w", err)
		}
		pinged = false
		switch m := msg.(type) {
		case *redis.Subscription:
			// Every connection's SUBSCRIBE is acknowledged, a reconnect's too, after its
			// dial reported Down and OnConnect turned tracking on.
			if m.Kind == "subscribe" && m.Channel == invalidateChannel {
				up = true
				t.h.Up()
			}
		case *redis.Message:
			if !up {
				continue
			}
			if len(m.PayloadSlice) > 0 {
				t.h.Invalidate(m.PayloadSlice)
			} else if m.Payload != "" {
				t.h.Invalidate([]string{m.Payload})
			}
		}
	}
}

// follow returns an error once the caller's client sends its commands to another server
// than the tracking connection's (see the top of this file), nil when ctx ends. A
// failure to ask the client is not the tracking connection's: it is tried again at the
// next interval.
func (t *nodeTracker) follow(ctx context.Context) error {
	tick := time.NewTicker(t.health)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		cctx, cancel := context.WithTimeout(ctx, t.health)
		master, err := t.master(cctx)
		cancel()
		tracked, _ := t.tracked.Load().(string)
		if err != nil || tracked == "" || master == tracked || testhooks.NearFixedMasters(ctx) {
			continue
		}
		return fmt.Errorf("store: tracking: the client now sends its commands to server %s, not to the tracked server %s (a failover): tracking moves to the new master", master, tracked)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// isFlush reports the error go-redis (v9.23) returns for the null invalidation message
// of FLUSHDB/FLUSHALL, which it cannot turn into a Message. Were its wording to
// change, the error would end the session instead: Down, then Up, which empties the
// near tier just the same.
func isFlush(err error) bool {
	return strings.Contains(err.Error(), "unsupported pubsub message payload: <nil>")
}

// GetWithTTL returns the entry stored at the row's value key and how long it has to
// live (0 when it has no expiry or is gone), in one round trip: the near tier keeps a
// copy no longer than Redis keeps the entry.
func (s *Store) GetWithTTL(ctx context.Context, k keys.Key) ([]byte, time.Duration, bool, error) {
	out, ttls, err := s.GetManyWithTTL(ctx, []keys.Key{k})
	if err != nil {
		return nil, 0, false, err
	}
	return out[0], ttls[0], out[0] != nil, nil
}

// GetManyWithTTL is GetMany with each entry's remaining time to live (see GetWithTTL).
func (s *Store) GetManyWithTTL(ctx context.Context, ks []keys.Key) (_ [][]byte, _ []time.Duration, err error) {
	gp, err := s.gate.enter()
	if err != nil {
		return nil, nil, err
	}
	defer func(parent context.Context) { err = s.gate.leave(parent, gp, err) }(ctx)
	ctx, cancel := s.readCtx(ctx, gp)
	defer cancel()
	gets := make([]*redis.StringCmd, len(ks))
	ttls := make([]*redis.DurationCmd, len(ks))
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, k := range ks {
			gets[i] = p.Get(ctx, k.Value())
			ttls[i] = p.PTTL(ctx, k.Value())
		}
		return nil
	})
	if err != nil && err != redis.Nil {
		return nil, nil, fmt.Errorf("store: get %d keys: %w", len(ks), err)
	}
	out := make([][]byte, len(ks))
	left := make([]time.Duration, len(ks))
	for i := range ks {
		if b, err := gets[i].Bytes(); err == nil {
			out[i] = b
			left[i] = max(ttls[i].Val(), 0)
		}
	}
	return out, left, nil
}
