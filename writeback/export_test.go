package writeback

// Statement exposes the SQL built for changes of one shape.
func Statement(changes []*Change) (string, []any) { return statement(changes) }

// Permanent exposes the classification of apply errors.
func Permanent(err error) bool { return permanent(err) }

// Marshal exposes the journal's encoding of a change.
func Marshal(c Change) ([]byte, error) { return c.marshal() }
