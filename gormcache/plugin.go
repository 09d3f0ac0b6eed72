package gormcache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/time/rate"
	"gorm.io/gorm"
	"gorm.io/gorm/schema"

	"github.com/pgcache/pgcache/readthrough"
	"github.com/pgcache/pgcache/writepolicy"
)

// Errors returned by the package.
var (
	// ErrConfig reports a setup the plugin cannot serve correctly; the message says
	// what to change.
	ErrConfig = errors.New("gormcache: bad configuration")
	// ErrResolver reports GORM's dbresolver on the *gorm.DB: it sends reads to
	// replicas, and a replica that lags would fill the cache with rows older than the
	// invalidations already made, which nothing would remove until their TTL.
	ErrResolver = errors.New("gormcache: GORM's dbresolver is registered: reads sent to replicas would fill the cache with rows older than the invalidations already made")
)

// resolverCallback is the name under which gorm.io/plugin/dbresolver registers its
// query callback.
const resolverCallback = "gorm:db_resolver"

// Plugin is the GORM plugin: install it with db.Use after registering models with
// Register (or before: registration may come at any time). Get one from New. It is
// safe for concurrent use.
type Plugin struct {
	db     *gorm.DB
	bypass *gorm.DB
	cache  *readthrough.Cache
	log    *slog.Logger

	mu     sync.Mutex                              // serialises Register
	models atomic.Pointer[map[reflect.Type]*model] // copied on write: read by every query

	used  atomic.Bool
	next  callbacks // GORM's callbacks the plugin wraps
	stats counters
	warns *rate.Sometimes
}

// callbacks are the GORM callbacks the plugin replaces with its own, which call them.
type callbacks struct {
	query, create, update, delete func(*gorm.DB)
}

// bypassKey marks the statements of the plugin's own Cache (see New), in
// gorm.Statement.Settings: the plugin leaves them alone.
type bypassKey struct{}

// New returns a plugin for db, caching in rdb with the options of a readthrough.Cache
// (opts.Prefix must be the invalidator's). It makes the Cache its models are
// registered on (see Cache); install the plugin with db.Use(plugin).
func New(db *gorm.DB, rdb redis.UniversalClient, opts readthrough.Options) (*Plugin, error) {
	if db == nil || rdb == nil {
		return nil, fmt.Errorf("%w: New needs a *gorm.DB and a Redis client", ErrConfig)
	}
	p := &Plugin{db: db, log: opts.Logger, warns: &rate.Sometimes{Interval: time.Minute}}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	// The Cache reads through a session the plugin does not serve: a repository's load
	// on a miss is itself a lookup by primary key, which the plugin would otherwise
	// answer by calling the repository again, waiting on its own fill.
	// A session with a statement of its own, which every query from it copies.
	p.bypass = db.Session(&gorm.Session{Context: context.Background()})
	p.bypass.Statement.Settings.Store(bypassKey{}, p)
	cache, err := readthrough.New(p.bypass, rdb, opts)
	if err != nil {
		return nil, err
	}
	p.cache = cache
	empty := map[reflect.Type]*model{}
	p.models.Store(&empty)
	return p, nil
}

// Cache returns the readthrough.Cache the plugin's models are registered on. Its
// repositories read through a session of the *gorm.DB that the plugin does not serve.
// Do not make another Cache over the plugin's *gorm.DB: its repositories' loads would
// be lookups the plugin answers through its own repository, waiting for their fills.
func (p *Plugin) Cache() *readthrough.Cache { return p.cache }

// Register makes the plugin serve model T and invalidate the rows GORM writes, and
// returns T's repository (registered on the plugin's Cache), which may be used
// directly too. Models with AfterFind hooks are refused: a hook runs on the load, so
// its effects would be cached with the row and then applied again on each hit. So
// are write-back models: GORM's writes go to Postgres, past the journal whose pending
// writes readers see first.
func Register[T any](p *Plugin, opts readthrough.ModelOptions) (*readthrough.Repository[T], error) {
	var zero T
	stmt := &gorm.Statement{DB: p.db}
	if err := stmt.Parse(&zero); err != nil {
		return nil, fmt.Errorf("gormcache: parse model %T: %w", zero, err)
	}
	sch := stmt.Schema
	switch {
	case sch.AfterFind:
		return nil, fmt.Errorf("%w: model %s has an AfterFind hook, whose effects a cached row would carry and a hit would apply again: move the hook's work out of AfterFind, or leave the model unregistered",
			ErrConfig, sch.Name)
	case opts.WritePolicy == writepolicy.WriteBack:
		return nil, fmt.Errorf("%w: model %s: write-back writes must go through Repository.Save, since GORM's writes reach Postgres past the journal whose pending writes readers see; use writepolicy.Invalidate or WriteThrough",
			ErrConfig, sch.Name)
	}
	repo, err := readthrough.Register[T](p.cache, opts)
	if err != nil {
		return nil, err
	}
	m := newModel(sch, repo, opts.WritePolicy == writepolicy.WriteThrough)
	withLookups(m, repo, opts)
	p.add(m)
	return repo, nil
}

// add publishes m to the queries, by copying the map.
func (p *Plugin) add(m *model) {
	p.mu.Lock()
	defer p.mu.Unlock()
	old := *p.models.Load()
	next := make(map[reflect.Type]*model, len(old)+1)
	for t, o := range old {
		next[t] = o
	}
	next[m.typ] = m
	p.models.Store(&next)
}

// model returns the registered model of sch, or nil.
func (p *Plugin) model(sch *schema.Schema) *model {
	if sch == nil {
		return nil
	}
	return (*p.models.Load())[sch.ModelType]
}

// Name is the plugin's name for GORM.
func (p *Plugin) Name() string { return "pgcache:gormcache" }

// Initialize installs the plugin on db; db.Use calls it. db must be the *gorm.DB given
// to New, outside a transaction, without dbresolver; on any other *gorm.DB it does
// nothing (GORM initialises a Config's plugins on every database opened with it).
func (p *Plugin) Initialize(db *gorm.DB) error {
	if db.Config != p.db.Config {
		// GORM initialises the plugins of a Config again for every database opened with
		// it (dbresolver opens its sources and replicas so): those are not served.
		p.log.Warn("gormcache: the plugin was initialised on another *gorm.DB than the one given to New; it does nothing there")
		return nil
	}
	switch {
	case resolving(db):
		return fmt.Errorf("%w; use the plugin on a *gorm.DB without dbresolver (one opened on the primary)", ErrResolver)
	case !p.used.CompareAndSwap(false, true):
		return fmt.Errorf("%w: the plugin is installed already", ErrConfig)
	}
	if _, inTx := db.Statement.ConnPool.(gorm.TxCommitter); inTx {
		return fmt.Errorf("%w: db.Use was called on a transaction; call it on the *gorm.DB from gorm.Open", ErrConfig)
	}
	cb := db.Callback()
	p.next = callbacks{
		query:  cb.Query().Get("gorm:query"),
		create: cb.Create().Get("gorm:create"),
		update: cb.Update().Get("gorm:update"),
		delete: cb.Delete().Get("gorm:delete"),
	}
	if p.next.query == nil || p.next.create == nil || p.next.update == nil || p.next.delete == nil {
		return fmt.Errorf("%w: GORM's default callbacks (gorm:query, gorm:create, gorm:update, gorm:delete) are missing", ErrConfig)
	}
	// Writes must be seen committing: every transaction begun from now on is begun on
	// the wrapped pool.
	wrapped := &pool{ConnPool: db.Config.ConnPool}
	db.Config.ConnPool = wrapped
	db.Statement.ConnPool = wrapped
	for _, err := range []error{
		cb.Query().Replace("gorm:query", p.query),
		cb.Create().Replace("gorm:create", func(db *gorm.DB) { p.write(db, p.next.create) }),
		cb.Update().Replace("gorm:update", func(db *gorm.DB) { p.write(db, p.next.update) }),
		cb.Delete().Replace("gorm:delete", func(db *gorm.DB) { p.write(db, p.next.delete) }),
	} {
		if err != nil {
			return fmt.Errorf("gormcache: install callbacks: %w", err)
		}
	}
	return nil
}

// resolving reports whether dbresolver's query callback is registered on db.
func resolving(db *gorm.DB) bool {
	return db.Callback().Query().Get(resolverCallback) != nil
}

// bypassed reports whether stmt comes from the plugin's own Cache.
func (p *Plugin) bypassed(stmt *gorm.Statement) bool {
	v, ok := stmt.Settings.Load(bypassKey{})
	return ok && v == p
}

// Stats counts what the plugin did. Counters only grow. The repositories' own Stats
// (Register's result) count hits, misses, loads and fills.
type Stats struct {
	Served      uint64 // queries of registered models answered through their repository
	Passed      uint64 // queries of registered models sent to Postgres untouched (not provably a lookup by key, or in a transaction)
	Invalidated uint64 // rows invalidated after the writes that touched them committed
	Unknown     uint64 // writes of registered models whose rows the plugin could not learn (prepared statements, untracked transactions, key changes through Where): left to the invalidator
	Errors      uint64 // invalidations Redis failed: left to the invalidator and the entries' TTL
}

type counters struct {
	served, passed, invalidated, unknown, errors atomic.Uint64
}

// Stats returns a snapshot of the plugin's counters.
func (p *Plugin) Stats() Stats {
	return Stats{
		Served:      p.stats.served.Load(),
		Passed:      p.stats.passed.Load(),
		Invalidated: p.stats.invalidated.Load(),
		Unknown:     p.stats.unknown.Load(),
		Errors:      p.stats.errors.Load(),
	}
}

// warn logs at most once a minute.
func (p *Plugin) warn(msg string, attrs ...slog.Attr) {
	p.warns.Do(func() { p.log.LogAttrs(context.Background(), slog.LevelWarn, msg, attrs...) })
}
