package testhooks

import "context"

// Purge holds switches of the invalidator's purges (package invalidator, purge.go).
// They apply to batches handled with a context from WithPurge: the context given to
// Worker.Run, or to HandleBatch.
type Purge struct {
	// Undurable makes purges best effort, as they were before the retry stream: a
	// purge that fails or outlasts PurgeTimeout is dropped, not kept for retrying, to
	// show that the tests of at-least-once purging can fail.
	Undurable bool
	// Unrepeated turns the second purge (Options.RepurgeAfter) off, to show that the
	// test of the CDN in-flight race can fail.
	Unrepeated bool
}

type purgeKey struct{}

// WithPurge returns a context carrying h.
func WithPurge(ctx context.Context, h *Purge) context.Context {
	return context.WithValue(ctx, purgeKey{}, h)
}

// PurgeFrom returns ctx's purge switches, or the zero Purge (every protection on).
func PurgeFrom(ctx context.Context) Purge {
	if h, _ := ctx.Value(purgeKey{}).(*Purge); h != nil {
		return *h
	}
	return Purge{}
}

// WriteBack holds a switch of write-back writes (internal/store, writeback.go).
type WriteBack struct {
	// KeepEpoch makes write-back writes leave the row's dependency epoch
	// (keys.Key.Deps) alone, as they did before, so that cached HTTP responses showing
	// the row stay valid: it shows that the test of the epoch's deletion can fail.
	KeepEpoch bool
	// BeforeLanding, if set, makes a write-back write journal its entry and land it in
	// two steps even on a single Redis, as it does on a Cluster, and runs between the
	// two with the entry's id (see internal/store, writeback.go).
	BeforeLanding func(id string)
	// AfterPendingRead, if set, runs in a write-back soft delete after it read the
	// row's pending record and before it journals its entry built on it.
	AfterPendingRead func()
	// UncheckedBase makes a write-back soft delete land whatever the row's pending
	// record became since the delete read it, as it would without the check, to show
	// that the test of a write racing a soft delete can fail.
	UncheckedBase bool
}

type writeBackKey struct{}

// WithWriteBack returns a context carrying h.
func WithWriteBack(ctx context.Context, h *WriteBack) context.Context {
	return context.WithValue(ctx, writeBackKey{}, h)
}

// KeepEpoch reports whether ctx asks write-back writes to keep the dependency epoch.
func KeepEpoch(ctx context.Context) bool {
	h, _ := ctx.Value(writeBackKey{}).(*WriteBack)
	return h != nil && h.KeepEpoch
}

// BeforeLanding returns ctx's WriteBack.BeforeLanding hook, nil if none.
func BeforeLanding(ctx context.Context) func(id string) {
	h, _ := ctx.Value(writeBackKey{}).(*WriteBack)
	if h == nil {
		return nil
	}
	return h.BeforeLanding
}

// UncheckedBase reports whether ctx asks soft deletes to land without checking the
// pending record they were built on.
func UncheckedBase(ctx context.Context) bool {
	h, _ := ctx.Value(writeBackKey{}).(*WriteBack)
	return h != nil && h.UncheckedBase
}

// AfterPendingRead returns ctx's WriteBack.AfterPendingRead hook, nil if none.
func AfterPendingRead(ctx context.Context) func() {
	h, _ := ctx.Value(writeBackKey{}).(*WriteBack)
	if h == nil {
		return nil
	}
	return h.AfterPendingRead
}
