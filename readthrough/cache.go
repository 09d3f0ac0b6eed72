package readthrough

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"reflect"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"gorm.io/gorm"

	"github.com/pgcache/pgcache/internal/store"
	"github.com/pgcache/pgcache/internal/testhooks"
	"github.com/pgcache/pgcache/writeback"
	"github.com/pgcache/pgcache/writepolicy"
)

// Errors returned by the package.
var (
	// ErrConfig reports options that cannot work; the message says which and why.
	ErrConfig = errors.New("readthrough: bad configuration")
	// ErrRegistered reports a model registered twice on one Cache.
	ErrRegistered = errors.New("readthrough: model already registered")
	// ErrUntrackedTx reports a write inside a transaction the repository cannot see
	// commit (a repository from WithDB(tx)): its cache effects must wait for the
	// commit. Use Transaction and In, or WrapTx and AfterCommit.
	ErrUntrackedTx = errors.New("readthrough: write inside a transaction whose commit the cache cannot see")
	// ErrWriteBackInTx reports a write of a write-back model inside a transaction:
	// write-back writes go to Redis, which cannot join a Postgres transaction.
	ErrWriteBackInTx = errors.New("readthrough: write-back writes cannot join a transaction")
	// ErrZeroKey reports a write-back write of a row whose primary key is not set: the
	// row reaches Postgres later, so Postgres cannot assign the key.
	ErrZeroKey = errors.New("readthrough: write-back needs the primary key set before the write")
	// ErrRedisUnavailable reports a read of a write-back model while Redis does not
	// answer. Postgres may lack writes already acknowledged and not yet flushed, so the
	// read fails rather than return an older row; models under the other policies read
	// Postgres instead.
	ErrRedisUnavailable = errors.New("readthrough: Redis unavailable; a write-back model is not read from Postgres alone")
	// ErrOtherVersionPending reports a read or a soft delete of a write-back row whose
	// pending write was made by another schema version of the model (another build,
	// during a rolling deploy), which this build cannot decode: the read waited
	// WaitTimeout for a flusher to apply it. Postgres lacks that write, so the row is
	// not read from there; retry once it is flushed, or run a flusher.
	ErrOtherVersionPending = errors.New("readthrough: the row's pending write-back write was made by another schema version of the model")
)

// Options configure a Cache. The zero value is ready to use.
type Options struct {
	// Prefix starts every key, like Django's KEY_PREFIX: [A-Za-z0-9_.:-], at most 64
	// bytes. Default "pgc". Applications and the invalidator must use the same one.
	Prefix string
	// RedisTimeout bounds each Redis operation, on top of the caller's context; when it
	// passes, a read falls back to Postgres. Default 100ms. ModelOptions may override it.
	// It includes the wait for a connection from the client's pool: size PoolSize for
	// the reads you run at once (concurrent Gets of one key share one GET). A read that
	// waited for a connection and got none waits and tries again, up to the model's
	// WaitTimeout, rather than fall back; go-redis reports such a wait as such only when
	// its PoolTimeout passes first, so set PoolTimeout below RedisTimeout if the client
	// serves other work too.
	//
	// The bound reaches the network only if the client honours context deadlines: set
	// ContextTimeoutEnabled in the go-redis options. Without it a hung Redis holds a read
	// for the client's ReadTimeout (3s by default), and New logs a warning saying so.
	RedisTimeout time.Duration
	// Breaker configures the circuit breaker that makes reads skip a Redis that does
	// not answer (see BreakerOptions). The zero value turns it on with its defaults.
	Breaker BreakerOptions
	// Logger receives warnings (Redis unreachable, undecodable entries), at most one a
	// second per model. Default: none.
	Logger *slog.Logger
	// NoAutoPipeline turns off the batching of concurrent reads. By default, while a
	// Get is reading Redis, the Gets that come meanwhile are sent together as one
	// pipeline on the client's go-redis AutoPipeliner (its AsyncAutoPipeline, with the
	// client's AutoPipelineOptions if it has some), one round trip and a few system
	// calls for many: at 16 goroutines reading different rows that is over twice the
	// hits per second of as many plain GETs (docs/BENCHMARKS.md). A lone Get is sent
	// alone, as before. A batched read waits at most 1.25 RedisTimeout (the batched
	// reads of a quarter of it share one timer), and reads are batched only while
	// Redis answers; go-redis runs the client's pipeline hooks for them (its process
	// hooks for a batch of one). Only a single server's client batches (Sentinel's
	// included). The pipeliner's goroutine is the client's: closing the client stops
	// it. go-redis marks its AutoPipeliner experimental.
	NoAutoPipeline bool
	// Observer is told how reads went and of misses, fills and writes, for metrics
	// and traces (see Observer; packages extra/pgcacheprom and extra/pgcacheotel).
	// Default nil: off, and a hit costs nothing more.
	Observer Observer
}

// ModelOptions configure one model. The zero value gives the defaults.
type ModelOptions struct {
	// TTL is how long a cached row lives. Default 1h.
	TTL time.Duration
	// TTLJitter spreads expiries: each entry lives TTL plus or minus up to this fraction
	// of it, so rows filled together do not expire together. 0..1, default 0.1; a
	// negative value turns jitter off.
	TTLJitter float64
	// NegativeTTL is how long "no such row" is cached. Default 1m; negative turns
	// negative caching off. An insert through the library or seen by the invalidator
	// clears it earlier.
	NegativeTTL time.Duration
	// Codec chooses the bytes of a cached row's column record (see Codec). Default
	// Binary{}, the fastest; JSON{} is readable in redis-cli; Msgpack{} is MessagePack.
	// Each gives back exactly what it was given, so a hit equals a load whichever is
	// used.
	Codec Codec
	// LoadTimeout bounds one database load on a miss. Default 3s.
	LoadTimeout time.Duration
	// FenceDuration is how long a fill's lease lives; it must exceed LoadTimeout, since
	// a fill that outlives its lease is refused. Default LoadTimeout + 2s.
	FenceDuration time.Duration
	// WaitTimeout bounds how long a reader waits for another process's fill of the same
	// row before it loads the row itself (without caching it). Default 1s.
	WaitTimeout time.Duration
	// RedisTimeout overrides Options.RedisTimeout for this model.
	RedisTimeout time.Duration
	// Version overrides the schema version derived from the model (like Django's
	// cache VERSION). Change it to drop every cached row of the model at once. "_wb"
	// is reserved: write-back models keep their schema version in each entry and
	// "_wb" in their keys, which every version of the model shares.
	Version string
	// Schema is the Postgres schema of the model's table when its table name is not
	// qualified. By default it is the schema in which the connection's search_path
	// finds the table, as GORM's queries do; when set, GORM's queries must reach the
	// same table (Register checks). Register reads the table's primary key from the
	// catalog, so the table must exist by then.
	Schema string
	// WritePolicy says what Create, Save and Delete do to the cache:
	// writepolicy.Invalidate (the default) deletes the row's entry after the commit,
	// writepolicy.WriteThrough fills it again from Postgres after the commit, and
	// writepolicy.WriteBack writes to Redis only, for a flusher to apply to Postgres
	// later (see packages writepolicy and writeback for what each promises). Every
	// process that writes the model must use the same policy, and every process that
	// reads a write-back model must register it as write-back too: its entries are
	// kept under keys of their own, and its reads must not fall back to Postgres.
	WritePolicy writepolicy.Policy
	// WriteBack configures the timeout and durability of write-back writes; it is
	// used only under writepolicy.WriteBack.
	WriteBack writeback.WriteOptions
	// Unique registers cached lookups by unique values (Repository.By): each is one
	// field, or the fields of a composite unique index in any order, by Go field name
	// or column name. The table must have a unique index over exactly those columns
	// (see lookup.go for what Register checks). Not with write-back.
	Unique [][]string
	// Lists registers cached has-many lists (Repository.ListBy): each is the field or
	// fields (usually one foreign key) whose values select the rows. Not with
	// write-back.
	Lists [][]string
	// ListCap is the most members a cached list holds: a longer list is read from
	// Postgres on every read, not cached, and counted in Stats.List.OverCap.
	// Default 1000.
	ListCap int
	// Near turns on the model's near cache, a bounded in-process tier in front of
	// Redis kept coherent by Redis' invalidation messages (see NearOptions). Off by
	// default; not with write-back, nor on a Cluster client. A Cache with near caches
	// runs a goroutine until Close.
	Near NearOptions
}

func (o ModelOptions) withDefaults(c *Cache) (ModelOptions, error) {
	if o.TTL == 0 {
		o.TTL = time.Hour
	}
	if o.TTLJitter == 0 {
		o.TTLJitter = 0.1
	}
	if o.TTLJitter < 0 {
		o.TTLJitter = 0
	}
	if o.NegativeTTL == 0 {
		o.NegativeTTL = time.Minute
	}
	if o.Codec == nil {
		o.Codec = Binary{}
	}
	if o.LoadTimeout == 0 {
		o.LoadTimeout = 3 * time.Second
	}
	if o.FenceDuration == 0 {
		o.FenceDuration = o.LoadTimeout + 2*time.Second
	}
	if o.WaitTimeout == 0 {
		o.WaitTimeout = time.Second
	}
	if o.RedisTimeout == 0 {
		o.RedisTimeout = c.opts.RedisTimeout
	}
	if o.ListCap == 0 {
		o.ListCap = 1000
	}
	switch o.WritePolicy {
	case writepolicy.Invalidate, writepolicy.WriteThrough, writepolicy.WriteBack:
	default:
		return o, fmt.Errorf("%w: WritePolicy %v: use writepolicy.Invalidate, WriteThrough or WriteBack", ErrConfig, o.WritePolicy)
	}
	switch {
	case o.TTL < time.Millisecond:
		return o, fmt.Errorf("%w: TTL %v is below Redis' 1ms resolution", ErrConfig, o.TTL)
	case o.TTLJitter > 1 || math.IsNaN(o.TTLJitter):
		return o, fmt.Errorf("%w: TTLJitter %v must be between 0 and 1", ErrConfig, o.TTLJitter)
	case o.NegativeTTL > 0 && o.NegativeTTL < time.Millisecond:
		return o, fmt.Errorf("%w: NegativeTTL %v is below Redis' 1ms resolution", ErrConfig, o.NegativeTTL)
	case o.LoadTimeout < 0 || o.WaitTimeout < 0 || o.RedisTimeout < 0:
		return o, fmt.Errorf("%w: timeouts must not be negative", ErrConfig)
	case o.ListCap < 0:
		return o, fmt.Errorf("%w: ListCap %d is negative: give the most members a cached list may hold, or 0 for the default", ErrConfig, o.ListCap)
	case o.FenceDuration <= o.LoadTimeout:
		return o, fmt.Errorf("%w: FenceDuration %v must exceed LoadTimeout %v: a fill that outlives its lease is refused, so every slow load would be wasted",
			ErrConfig, o.FenceDuration, o.LoadTimeout)
	}
	return o, nil
}

// longestTTL is the longest an entry of the model is cached: TTL with the most jitter,
// or NegativeTTL.
func (o ModelOptions) longestTTL() time.Duration {
	return max(o.TTL+time.Duration(o.TTLJitter*float64(o.TTL))+time.Millisecond, o.NegativeTTL)
}

// Cache holds the models registered for one Postgres database and one Redis. Create it
// with New and register models with Register. It is safe for concurrent use.
type Cache struct {
	db    *gorm.DB
	store *store.Store
	opts  Options
	log   *slog.Logger

	mu     sync.Mutex
	models map[reflect.Type]statser

	near nearState // the near tier, once a model uses it (near.go)
}

type statser interface{ Stats() Stats }

// New returns a Cache reading Postgres through db and caching in rdb (a single,
// Sentinel or Cluster client).
func New(db *gorm.DB, rdb redis.UniversalClient, opts Options) (*Cache, error) {
	if db == nil || rdb == nil {
		return nil, fmt.Errorf("%w: New needs a *gorm.DB and a Redis client", ErrConfig)
	}
	if why := store.ReadsReplicas(rdb); why != "" {
		return nil, fmt.Errorf("%w: the Redis client reads from replicas (%s), which serve a row after its invalidation for as long as they lag: give pgcache a client without %[2]s", ErrConfig, why)
	}
	if opts.Prefix == "" {
		opts.Prefix = "pgc"
	}
	if opts.RedisTimeout == 0 {
		opts.RedisTimeout = 100 * time.Millisecond
	}
	if opts.RedisTimeout < 0 {
		return nil, fmt.Errorf("%w: RedisTimeout %v is negative", ErrConfig, opts.RedisTimeout)
	}
	breaker, err := opts.Breaker.withDefaults()
	if err != nil {
		return nil, err
	}
	opts.Breaker = breaker
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if !contextTimeouts(rdb) {
		log.Warn("redis client ignores context deadlines, so RedisTimeout cannot bound a hung Redis; set ContextTimeoutEnabled: true in its options",
			slog.Duration("redis_timeout", opts.RedisTimeout))
	}
	var id [8]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, fmt.Errorf("readthrough: instance id: %w", err)
	}
	st := store.New(rdb, opts.RedisTimeout, hex.EncodeToString(id[:])).WithBreaker(opts.Breaker.Failures, opts.Breaker.Cooldown)
	if !opts.NoAutoPipeline {
		ctx := db.Statement.Context
		st = st.WithAutoPipeline(ctx != nil && testhooks.UnboundedBatches(ctx))
	}
	return &Cache{
		db:     db,
		store:  st,
		opts:   opts,
		log:    log,
		models: make(map[reflect.Type]statser),
	}, nil
}

// Close stops the goroutines of the Cache's near caches (the tracking connection and
// the near tier's clean-up) and waits for them; reads then bypass the near tier, and
// are no longer batched (Options.NoAutoPipeline). The Redis client stays open. Call it
// when you are done with the Cache; it is safe to call more than once.
func (c *Cache) Close() error {
	c.store.Close()
	s := &c.near
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.tier == nil {
		return nil
	}
	s.cancel()
	<-s.done
	for _, f := range s.closers {
		f()
	}
	return nil
}

// Register makes model T cached on c and returns its repository. A model is registered
// once per Cache; registering it again returns ErrRegistered.
func Register[T any](c *Cache, opts ModelOptions) (*Repository[T], error) {
	opts, err := opts.withDefaults(c)
	if err != nil {
		return nil, err
	}
	var zero T
	typ := reflect.TypeOf(zero)
	if typ == nil || typ.Kind() != reflect.Struct {
		return nil, fmt.Errorf("%w: Register needs a struct model type, got %v", ErrConfig, typ)
	}
	m, err := parseModel(c.db, &zero, c.opts.Prefix, opts)
	if err != nil {
		return nil, err
	}
	if m.softDelete, err = softDeleteField(m.schema); err != nil {
		return nil, err
	}
	if err := m.markUnscopedFills(c.opts.Prefix, opts); err != nil {
		return nil, err
	}
	if m.lookups, err = parseLookups(c.db, m, opts); err != nil {
		return nil, err
	}
	if m.space.Version() == writeBackVersion {
		return nil, fmt.Errorf("%w: model %s: Version %q is reserved for write-back keys: choose another", ErrConfig, m.schema.Name, writeBackVersion)
	}
	if opts.WritePolicy == writepolicy.WriteBack {
		if c.store.Ring() {
			return nil, fmt.Errorf("%w: model %s: write-back needs a single Redis, Sentinel or Redis Cluster: a Ring puts a write's journal shard and row on nodes that know nothing of each other",
				ErrConfig, m.schema.Name)
		}
		if err := m.setWriteBackKeys(c.opts.Prefix); err != nil {
			return nil, err
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.models[typ]; ok {
		return nil, fmt.Errorf("%w: %v", ErrRegistered, typ)
	}
	nm, err := newNearModel[T](c, m, opts)
	if err != nil {
		return nil, err
	}
	st := c.store
	if opts.RedisTimeout != c.opts.RedisTimeout {
		st = st.WithTimeout(opts.RedisTimeout)
	}
	reg, err := withShape(withEntry(store.NewModel(m.space, opts.FenceDuration+opts.longestTTL()), m.envelope), m, opts.Codec)
	if err != nil {
		return nil, fmt.Errorf("readthrough: model %s: %w", m.schema.Name, err)
	}
	log := c.log.With(slog.String("model", m.schema.Name))
	// Every model checks its WriteBack options, whatever its policy.
	journal, err := writeback.NewJournal(c.store, reg, opts.WriteBack, log)
	if err != nil {
		return nil, fmt.Errorf("%w: WriteBack: %v", ErrConfig, err)
	}
	r := &Repository[T]{
		cache:    c,
		db:       c.db,
		base:     c.db,
		store:    st,
		model:    m,
		rec:      newRecorder(m.schema, opts.Codec),
		opts:     opts,
		log:      log,
		stats:    new(counters),
		warnings: newWarnings(),
		flights:  newFlights(c),
		reg:      reg,
		journal:  journal,
		near:     nm,
	}
	r.flights.combine = nm == nil && !st.Sharded() && m.envelope == "" && !r.flights.unshared
	c.models[typ] = r
	return r, nil
}

// Stats adds up the statistics of every registered model.
func (c *Cache) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	var s Stats
	for _, r := range c.models {
		s = s.add(r.Stats())
	}
	s.NearInvalidations, s.NearFlushes = c.nearTierStats()
	return s
}

// contextTimeouts reports whether rdb applies context deadlines to network I/O.
func contextTimeouts(rdb redis.UniversalClient) bool {
	switch c := rdb.(type) {
	case *redis.Client:
		return c.Options().ContextTimeoutEnabled
	case *redis.ClusterClient:
		return c.Options().ContextTimeoutEnabled
	case *redis.Ring:
		return c.Options().ContextTimeoutEnabled
	}
	return true // unknown implementations: assume they do
}

// withEntry returns m with the entry prefix its stored entries start with (see
// store.Model.Entry).
func withEntry(m store.Model, entry string) store.Model {
	m.Entry = entry
	return m
}
