package gormcache_test

import (
	"slices"
	"testing"

	"gorm.io/gorm"
)

// Player is Account with soft deletes: a DELETE through GORM is an UPDATE of
// deleted_at, and a restore sets it back to NULL.
type Player struct {
	ID        int64  `gorm:"primaryKey"`
	Email     string `gorm:"uniqueIndex"`
	Team      int    `gorm:"index"`
	DeletedAt gorm.DeletedAt
}

func (m Player) rowID() int64 { return m.ID }

// TestPluginSoftDeleteLookups: a soft delete through the plugin is an UPDATE; another
// process's lookups leave the row out at once (the unique email finds nothing, the
// team's list drops it), and after a restore through the plugin (deleted_at set back
// to NULL, Unscoped) they return it again, in a transaction too, with no invalidator
// running. The restore needs its row read back: the entries of its email and its team
// were filled while it was deleted, without it, and only the row's values name them
// (with the read-back skipped, the checks after the restores fail). The control
// soft-deletes without the plugin: the other process goes on reading its cached answer.
func TestPluginSoftDeleteLookups(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if err := e.plain.AutoMigrate(&Player{}); err != nil {
		t.Fatal(err)
	}
	e.exec(t, `INSERT INTO players (id, email, team) VALUES (1, 'ann@x', 1), (2, 'bob@x', 1), (3, 'cat@x', 2)`)
	writer, reader := newLookupProc[Player](t, e), newLookupProc[Player](t, e)
	ctx := ctxT(t)
	check := func(when string, annFound bool, team1 []int64) {
		t.Helper()
		if _, ok := reader.byEmail(t, "ann@x"); ok != annFound {
			t.Errorf("%s: ann@x found %t, want %t", when, ok, annFound)
		}
		if got := reader.team(t, ctx, 1); !slices.Equal(got, team1) {
			t.Errorf("%s: team 1 lists %v, want %v", when, got, team1)
		}
	}
	restore := func(db *gorm.DB) error {
		return db.Unscoped().Model(&Player{ID: 1}).Update("deleted_at", nil).Error
	}

	check("at first", true, []int64{1, 2})
	if err := writer.db.Delete(&Player{}, 1).Error; err != nil {
		t.Fatal(err)
	}
	check("after player 1 was soft-deleted", false, []int64{2})
	if err := restore(writer.db); err != nil {
		t.Fatal(err)
	}
	check("after player 1 was restored", true, []int64{1, 2})
	if err := writer.db.Transaction(func(tx *gorm.DB) error { return tx.Where("team = ?", 1).Delete(&Player{}).Error }); err != nil {
		t.Fatal(err)
	}
	check("after team 1 was soft-deleted in a transaction", false, nil)
	if err := writer.db.Transaction(func(tx *gorm.DB) error { return restore(tx) }); err != nil {
		t.Fatal(err)
	}
	check("after player 1 was restored in a transaction", true, []int64{1})

	// The control: a soft delete without the plugin, which the reader does not see.
	if err := e.plain.Delete(&Player{}, 1).Error; err != nil {
		t.Fatal(err)
	}
	if _, ok := reader.byEmail(t, "ann@x"); !ok {
		t.Error("control: ann@x's soft delete without the plugin was seen at once; the test cannot tell the plugin's work")
	}
}
