package httpcache

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/pgcache/pgcache/internal/store"
	"github.com/pgcache/pgcache/keys"
	"github.com/pgcache/pgcache/readthrough"
)

// recorder is a render's readthrough.DependencyRecorder: it registers every row,
// lookup entry and table the handler reads before the read, and keeps their epochs
// and tags. It is safe for concurrent use (a handler may read in goroutines).
type recorder struct {
	st  *store.Store
	ttl time.Duration

	mu     sync.Mutex
	seen   map[string]bool
	deps   []store.Dep
	tags   []string
	failed bool // a registration failed: the response must not be stored
}

var _ readthrough.DependencyRecorder = (*recorder)(nil)

func (r *recorder) Depend(ctx context.Context, space keys.Space, ks []keys.Key) {
	var names, tags []string
	r.mu.Lock()
	if r.seen == nil {
		r.seen = make(map[string]bool)
	}
	if td := space.TableDeps(); td != "" && !r.seen[td] {
		r.seen[td] = true
		names, tags = append(names, td), append(tags, space.TableTag())
	}
	for _, k := range ks {
		if d := k.Deps(); d != "" && !r.seen[d] {
			r.seen[d] = true
			names, tags = append(names, d), append(tags, k.Tag())
		}
	}
	r.mu.Unlock()
	if len(names) == 0 {
		return
	}
	// Registered before the read; a key seen before was registered before its first
	// read, and its epoch guards every later one too.
	deps, err := r.st.RegisterDeps(ctx, names, r.ttl)
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.failed = true
		return
	}
	r.deps = append(r.deps, deps...)
	r.tags = append(r.tags, tags...)
}

func (r *recorder) Unrecordable(context.Context, keys.Space) {
	r.mu.Lock()
	r.failed = true
	r.mu.Unlock()
}

// result returns the dependencies and the sorted tags, and false when a registration
// failed.
func (r *recorder) result() ([]store.Dep, []string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	tags := slices.Clone(r.tags)
	slices.Sort(tags)
	return slices.Clone(r.deps), slices.Compact(tags), !r.failed
}
