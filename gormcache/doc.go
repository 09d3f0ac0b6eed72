// Package gormcache is pgcache as a GORM plugin: one db.Use line makes existing
// db.First(&user, id) calls read through pgcache's coherent cache, and GORM's writes
// invalidate the rows they touch after their commit.
//
//	plugin, err := gormcache.New(db, rdb, readthrough.Options{Prefix: "shop"})
//	users, err := gormcache.Register[User](plugin, readthrough.ModelOptions{TTL: 10 * time.Minute})
//	err = db.Use(plugin)
//
//	db.First(&u, 42)                    // from Redis, filled from Postgres on a miss
//	db.Model(&u).Update("name", "Ann") // invalidates user 42 once the update committed
//
// # Reads
//
// The plugin serves from the cache only the queries it can prove are lookups of a
// registered model by primary key, and serves them through the model's
// readthrough.Repository (fenced fills, stampede protection, negative caching, soft
// deletes in the default scope): First, Take, Last and Find with a key or keys
// (db.First(&u, 42), db.Find(&us, []int64{1, 2})), a destination struct whose key is
// set (u := User{ID: 42}; db.First(&u)), Where("id = ?", v), Where("id IN ?", vs),
// Where(map or struct of the key), and for composite keys an equality on every key
// column; and, for a model registered with lookups (readthrough.ModelOptions.Unique),
// Where("email = ?", v) by a single-column unique lookup's column, into a struct,
// served through Repository.By. The answer is GORM's: the same row or rows, RowsAffected, and
// gorm.ErrRecordNotFound from First, Take and Last when there is no row. SQL gives
// rows without ORDER BY no order; Find with several keys returns them in the order of
// the keys.
//
// Every other query goes to Postgres untouched: Select, Omit, Distinct, Joins,
// Preload, locking and other clauses (Clauses(clause.Locking{...})), Unscoped, another Table,
// Group and Having, Order, Offset and Limit beyond what the lookup implies, scopes or
// conditions on other columns, Or and Not, raw SQL, destinations of another type
// (Model(&User{}).Find(&dto)), First/Take/Last of several keys, queries inside a
// transaction, DryRun, and models that are not registered. Stats counts both.
//
// # Writes
//
// Create, Save, Update, Updates and Delete through GORM (single rows, batches,
// Where(...) on any column, soft deletes) invalidate the cached rows they touched once
// their transaction committed: GORM's own transaction around a single write, or
// db.Transaction's and Begin's commit, seen through the connection pool, which the
// plugin wraps. A rollback drops them; a failed commit still invalidates, since it
// may have committed. Updates and deletes learn their rows from Postgres itself: the
// plugin adds RETURNING with the primary key to the statement it sends, so
// Where("age > ?", 30).Delete(&User{}) invalidates exactly the rows it deleted.
// Models under writepolicy.WriteThrough are filled again after the invalidation. For a
// model with lookups (ModelOptions.Unique, Lists) the written rows are read back after
// the invalidation and the lookup entries their values name are deleted, so a row
// that took a unique value cached as absent, or joined a cached list, is read at once
// in every process; entries a row left are dropped when read (lookups check the rows
// they return), so rows a DELETE removed are not read back.
//
// Left to the invalidator (pgcache-worker), which sees every committed change: raw SQL
// (db.Exec), writes through sessions derived before db.Use or inside transactions
// begun on a connection the plugin did not wrap, updates that change a primary key
// through Where (the old key), and writes through a session made with
// gorm.Session{PrepareStmt: true}, whose prepared-statement pool sits above the
// plugin's and sends the statement unextended (gorm.Config.PrepareStmt is fine: its
// pool sits below). Stats.Unknown counts those writes.
//
// # Setup
//
// Call db.Use right after gorm.Open, before sessions are derived from db: the plugin
// replaces the connection pool of db, and sessions derived earlier keep the old one.
// The Cache the plugin makes (Plugin.Cache) reads through a session of db that the
// plugin leaves alone, so its repositories may be used directly too. Models with
// AfterFind hooks and write-back models are refused at Register (the hook's effects
// would be cached with the row; GORM's writes bypass write-back's journal), and so is
// GORM's dbresolver: reads it sends to replicas would fill the cache with rows older
// than the invalidations already made.
package gormcache
