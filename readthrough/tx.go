package readthrough

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"sync/atomic"

	"gorm.io/gorm"
)

// Tx is a Postgres transaction that holds back the cache effects of the writes made
// in it (through repositories bound to it with In) until it commits, and drops them
// if it rolls back. Get one from Transaction, or wrap a GORM transaction you manage
// with WrapTx. A Tx is safe for concurrent use, as far as its *gorm.DB is.
//
// If your code already runs
//
//	db.Transaction(func(tx *gorm.DB) error { ... })
//
// write it as
//
//	readthrough.Transaction(ctx, db, func(tx *readthrough.Tx) error {
//		// tx.DB() is the *gorm.DB the old function got; repositories join with In:
//		return users.In(tx).Save(ctx, &u)
//	})
//
// When something else begins and commits the transaction (a framework, a middleware),
// wrap it and call AfterCommit once it committed:
//
//	rtx := readthrough.WrapTx(gtx)
//	... users.In(rtx).Save(ctx, &u) ...
//	if err := gtx.Commit().Error; err == nil {
//		rtx.AfterCommit(ctx)
//	}
type Tx struct {
	db *gorm.DB

	mu       sync.Mutex
	effects  []func(context.Context)
	keyOrder []string // effects[i] is keyOrder[i]'s
	keys     map[string]bool
	counts   []*atomic.Uint64 // one per write, for the repositories' Stats.Writes
	done     bool
}

// Transaction runs fn in a transaction on db, like db.Transaction: fn's error or
// panic rolls it back, and the error is returned. Once the transaction committed, the
// cache effects of the writes made in it run (deleting or filling the rows' entries,
// by the models' write policies); after a rollback none do. Nothing read inside it is
// cached. db must not itself be inside a transaction (see Tx.Transaction for nesting).
func Transaction(ctx context.Context, db *gorm.DB, fn func(tx *Tx) error, opts ...*sql.TxOptions) error {
	if db == nil {
		return fmt.Errorf("%w: Transaction needs a *gorm.DB", ErrConfig)
	}
	if _, inTx := db.Statement.ConnPool.(gorm.TxCommitter); inTx {
		return fmt.Errorf("%w: Transaction was given a *gorm.DB that is inside a transaction, whose commit is not the end of that transaction; use Tx.Transaction to nest", ErrUntrackedTx)
	}
	var tx *Tx
	err := db.WithContext(ctx).Transaction(func(gtx *gorm.DB) error {
		tx = WrapTx(gtx)
		return fn(tx)
	}, opts...)
	if err != nil {
		return err
	}
	tx.AfterCommit(ctx)
	return nil
}

// WrapTx returns a Tx over gtx, a GORM transaction that the caller commits or rolls
// back (from db.Begin, or the tx inside db.Transaction). After gtx committed, call
// AfterCommit; after a rollback, drop the Tx.
func WrapTx(gtx *gorm.DB) *Tx {
	return &Tx{db: gtx, keys: make(map[string]bool)}
}

// DB returns the transaction's *gorm.DB, for queries of your own inside it.
func (tx *Tx) DB() *gorm.DB { return tx.db }

// Transaction runs fn in a nested transaction (a savepoint): its writes' cache effects
// join tx's when fn succeeds and are dropped when it fails.
func (tx *Tx) Transaction(fn func(tx *Tx) error, opts ...*sql.TxOptions) error {
	var inner *Tx
	err := tx.db.Transaction(func(gtx *gorm.DB) error {
		inner = WrapTx(gtx)
		return fn(inner)
	}, opts...)
	if err != nil {
		return err
	}
	inner.mu.Lock()
	effects, ks, counts := inner.effects, inner.order(), inner.counts
	inner.done = true
	inner.mu.Unlock()
	for i, e := range effects {
		tx.onCommit(ks[i], e, nil)
	}
	tx.mu.Lock()
	if !tx.done {
		tx.counts = append(tx.counts, counts...)
	}
	tx.mu.Unlock()
	return nil
}

// AfterCommit runs the cache effects of the writes made in the transaction. Call it
// once the transaction committed, and only then; Transaction calls it itself. The
// effects run once: later calls do nothing. They are not cancelled with ctx, since the
// writes they follow have committed; Redis failures are counted and logged by the
// repositories (see Repository.Save).
func (tx *Tx) AfterCommit(ctx context.Context) {
	tx.mu.Lock()
	effects, counts := tx.effects, tx.counts
	tx.effects, tx.counts, tx.done = nil, nil, true
	tx.mu.Unlock()
	for _, c := range counts {
		c.Add(1)
	}
	ctx = context.WithoutCancel(ctx)
	for _, e := range effects {
		e(ctx)
	}
}

// onCommit adds a row's cache effect, once per row: they are all the same. count,
// if not nil, is raised by one at the commit, for every write.
func (tx *Tx) onCommit(key string, effect func(context.Context), count *atomic.Uint64) {
	tx.mu.Lock()
	defer tx.mu.Unlock()
	if tx.done {
		return
	}
	if count != nil {
		tx.counts = append(tx.counts, count)
	}
	if tx.keys[key] {
		return
	}
	tx.keys[key] = true
	tx.effects = append(tx.effects, effect)
	tx.keyOrder = append(tx.keyOrder, key)
}

func (tx *Tx) order() []string { return tx.keyOrder }

// In returns a repository that reads and writes inside tx: reads go to Postgres
// (nothing read in a transaction is cached), and the cache effects of writes wait for
// tx's commit. Write-back models cannot write in a transaction (ErrWriteBackInTx).
func (r *Repository[T]) In(tx *Tx) *Repository[T] {
	c := r.clone()
	c.db, c.inTx, c.tx = tx.db, true, tx
	return c
}
