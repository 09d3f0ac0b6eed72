package readthrough

import "context"

// Entry returns the cache entry of row, as a fill would store it.
func Entry[T any](r *Repository[T], row T) ([]byte, error) {
	return r.encode(context.Background(), &row, true)
}

// SetAfterLoad makes f run after every miss has read the database and before it stores
// the row. Set it before the repository is used.
func SetAfterLoad[T any](r *Repository[T], f func(key string)) {
	if r.hooks == nil {
		r.hooks = new(hooks)
	}
	r.hooks.afterLoad = f
}

// SetUnfenced makes fills plain SETs, like caches without fencing.
func SetUnfenced[T any](r *Repository[T]) {
	if r.hooks == nil {
		r.hooks = new(hooks)
	}
	r.hooks.unfenced = true
}

// SetAfterCommit makes f run after every write committed, before its cache effects.
// Set it before the repository is used.
func SetAfterCommit[T any](r *Repository[T], f func(key string)) {
	if r.hooks == nil {
		r.hooks = new(hooks)
	}
	r.hooks.afterCommit = f
}

// SetJoined makes f run once a miss has joined (or begun) its key's flight. Set it
// before the repository is used.
func SetJoined[T any](r *Repository[T], f func(key string)) {
	if r.hooks == nil {
		r.hooks = new(hooks)
	}
	r.hooks.joined = f
}

// SetBeforeLoad makes f run before every miss reads the database, after it took its
// lease if it takes one. Set it before the repository is used.
func SetBeforeLoad[T any](r *Repository[T], f func(key string)) {
	if r.hooks == nil {
		r.hooks = new(hooks)
	}
	r.hooks.beforeLoad = f
}
