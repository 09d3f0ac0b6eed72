package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/pgcache/pgcache/internal/store"
)

// TestJournalNoGroup: reading or claiming the journal of a group that does not exist
// (the journal was deleted) fails with ErrNoGroup; once the group exists, a claim scan
// of an empty group ends at once, with the cursor "".
func TestJournalNoGroup(t *testing.T) {
	t.Parallel()
	rd := servers.Redis(t)
	st := store.New(rd.Client(t), 5*time.Second, "test")
	ctx := context.Background()
	journal := rd.Prefix(t) + ":journal"
	if _, err := st.ReadJournals(ctx, []string{journal}, "g", "c", 10, 0, true); !errors.Is(err, store.ErrNoGroup) {
		t.Errorf("ReadJournals without a group: %v, want ErrNoGroup", err)
	}
	if _, _, err := st.ClaimJournal(ctx, journal, "g", "c", time.Millisecond, "", 10); !errors.Is(err, store.ErrNoGroup) {
		t.Errorf("ClaimJournal without a group: %v, want ErrNoGroup", err)
	}
	if err := st.CreateGroup(ctx, journal, "g"); err != nil {
		t.Fatal(err)
	}
	if got, next, err := st.ClaimJournal(ctx, journal, "g", "c", time.Millisecond, "", 10); err != nil || len(got) != 0 || next != "" {
		t.Errorf("ClaimJournal of an empty group = %v, %q, %v; want nothing, \"\"", got, next, err)
	}
}
