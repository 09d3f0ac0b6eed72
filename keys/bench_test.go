package keys_test

import (
	"testing"

	"github.com/pgcache/pgcache/keys"
)

func BenchmarkKey(b *testing.B) {
	s := mustSpace(b, "app:", "public.users", "v1")
	b.ReportAllocs()
	for b.Loop() {
		_ = s.Key("1234567").Value()
	}
}

func BenchmarkKeyComposite(b *testing.B) {
	s := mustSpace(b, "app:", `Sales."Order Items"`, "v1")
	b.ReportAllocs()
	for b.Loop() {
		_ = s.Key("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "12.5", "west coast").Value()
	}
}

func BenchmarkFromGoInt(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		_, _ = keys.FromGo(keys.Int, int64(1234567))
	}
}

func BenchmarkFromTextInt(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		_, _ = keys.FromText(keys.Int, "1234567")
	}
}
