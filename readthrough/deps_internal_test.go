package readthrough

import (
	"context"
	"net/http/httptest"
	"testing"
)

// BenchmarkNoRecorder is what a read without a response cache pays for the dependency
// hook: one ctx.Value lookup, here on a request's context (a few values deep).
func BenchmarkNoRecorder(b *testing.B) {
	ctx := httptest.NewRequest("GET", "/", nil).Context()
	ctx = context.WithValue(ctx, struct{ k int }{1}, 1)
	b.ReportAllocs()
	for b.Loop() {
		if dependencyRecorder(ctx) != nil {
			b.Fatal("recorder")
		}
	}
}
