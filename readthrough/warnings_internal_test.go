package readthrough

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"gorm.io/gorm"
)

// TestWarningsShared checks that a repository's copies (clone, WithDB, In) share its
// warning limits: a burst of Redis failures through every copy logs one warning, and so
// does a burst of uncacheable rows.
func TestWarningsShared(t *testing.T) {
	var buf bytes.Buffer
	r := &Repository[struct{}]{
		log:      slog.New(slog.NewTextHandler(&buf, nil)),
		stats:    new(counters),
		warnings: newWarnings(),
	}
	copies := []*Repository[struct{}]{
		r,
		r.clone(),
		r.WithDB(&gorm.DB{Statement: &gorm.Statement{}}),
		r.In(&Tx{}),
		r.In(&Tx{}).WithDB(&gorm.DB{Statement: &gorm.Statement{}}),
	}
	for _, c := range copies {
		if c.warnings != r.warnings {
			t.Fatal("a copy of the repository has warning limits of its own")
		}
		c.redisFailed(errors.New("connection refused"))
		c.uncacheable(errors.New("a time in another zone"))
	}
	out := buf.String()
	if n := strings.Count(out, "redis unavailable"); n != 1 {
		t.Errorf("%d Redis warnings from %d copies in a burst, want 1:\n%s", n, len(copies), out)
	}
	if n := strings.Count(out, "without caching"); n != 1 {
		t.Errorf("%d uncacheable-row warnings from %d copies in a burst, want 1:\n%s", n, len(copies), out)
	}
	if got := r.Stats(); got.Errors != uint64(len(copies)) || got.Uncacheable != uint64(len(copies)) {
		t.Errorf("Stats %+v: every failure counts, logged or not", got)
	}
}
