package writeback

// Hooks stop a flusher at the points where crashes and races matter. Each may be nil.
type Hooks struct {
	// AfterRead runs after entries were read or claimed; held is the batch so far.
	AfterRead func(held int)
	// BeforeApply runs after a batch's versions were checked, before its transaction.
	BeforeApply func()
	// BeforeCommit runs inside a batch's transaction, after its statements ran and its
	// versions matched, before the commit.
	BeforeCommit func()
	// AfterCommit runs after a batch committed, before its pending records are cleared.
	AfterCommit func()
	// AfterClear runs after the pending records were cleared, before the entries are
	// acknowledged.
	AfterClear func()
}

// SetHooks installs h on f. Call it before Run.
func SetHooks(f *Flusher, h Hooks) {
	f.hooks = &hooks{afterRead: h.AfterRead, beforeApply: h.BeforeApply, beforeCommit: h.BeforeCommit, afterCommit: h.AfterCommit, afterClear: h.AfterClear}
}

// Statement exposes the SQL built for changes of one shape.
func Statement(changes []*Change) (string, []any) { return statement(changes) }

// Permanent exposes the classification of apply errors.
func Permanent(err error) bool { return permanent(err) }

// Marshal exposes the journal's encoding of a change.
func Marshal(c Change) ([]byte, error) { return c.marshal() }
