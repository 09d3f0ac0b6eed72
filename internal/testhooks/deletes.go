package testhooks

import "context"

// Deletes holds a switch of the invalidator's key deletions (package invalidator). It
// applies to batches handled with a context from WithDeletes.
type Deletes struct {
	// Unwaited makes a batch return once its last delete pipeline has started, without
	// waiting for the pipelines still in flight, to show that the test of a batch's
	// acknowledgement after all of its deletions can fail.
	Unwaited bool
}

type deletesKey struct{}

// WithDeletes returns a context carrying h.
func WithDeletes(ctx context.Context, h *Deletes) context.Context {
	return context.WithValue(ctx, deletesKey{}, h)
}

// DeletesUnwaited reports whether ctx asks delete pipelines not to be waited for.
func DeletesUnwaited(ctx context.Context) bool {
	h, _ := ctx.Value(deletesKey{}).(*Deletes)
	return h != nil && h.Unwaited
}
