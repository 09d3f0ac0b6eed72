package near_test

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/pgcache/pgcache/integration"
	"github.com/pgcache/pgcache/internal/testhooks"
	"github.com/pgcache/pgcache/readthrough"
)

// Part is listed by group, through the near tier.
type Part struct {
	ID  int64 `gorm:"primaryKey"`
	Grp int64 `gorm:"index"`
}

var partsNear = readthrough.ModelOptions{Near: readthrough.NearOptions{MaxEntries: 1000}, Lists: [][]string{{"Grp"}}}

func partIDs(t *testing.T, r *readthrough.Repository[Part], grp int64) []int64 {
	t.Helper()
	rows, err := r.ListBy("Grp").Get(context.Background(), grp)
	return rowIDs(t, rows, err, func(p Part) int64 { return p.ID })
}

// rowIDs returns the ids of rows, in order, failing the test on err.
func rowIDs[T any](t *testing.T, rows []T, err error, id func(T) int64) []int64 {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	var ids []int64
	for _, r := range rows {
		ids = append(ids, id(r))
	}
	return ids
}

// listInNear reads the group's list until a read is answered in process: its entry
// and every member from the near tier.
func listInNear(t *testing.T, r *readthrough.Repository[Part], grp int64) {
	t.Helper()
	integration.Eventually(t, "the list in the near tier", func() bool {
		before := r.Stats()
		ids := partIDs(t, r, grp)
		after := r.Stats()
		return after.List.Hits > before.List.Hits && after.NearHits-before.NearHits == uint64(len(ids))+1
	})
}

// TestNearLookups: a cached list is answered in process (its entry and its rows); a
// write through one process is read at once by that process and, within the
// notification delay, by another. The race: another process's insert into the list
// lands between a read's Redis GET of the entry and its keeping the entry in process;
// the fence refuses the older entry. The control, unfenced, keeps it and lists the
// group without the new part.
func TestNearLookups(t *testing.T) {
	for _, unfenced := range []bool{false, true} {
		t.Run(fmt.Sprintf("unfenced=%v", unfenced), func(t *testing.T) {
			e := newEnv(t, nil)
			if err := e.db.AutoMigrate(&Part{}); err != nil {
				t.Fatal(err)
			}
			e.exec(t, `INSERT INTO parts (id, grp) VALUES (1, 1), (2, 1), (3, 2)`)
			a := register[Part](t, e.process(t), partsNear)
			b := register[Part](t, e.process(t), partsNear)
			ctx := context.Background()
			listInNear(t, a, 2)
			listInNear(t, b, 1)

			if err := b.Create(ctx, &Part{ID: 4, Grp: 1}); err != nil {
				t.Fatal(err)
			}
			if got := partIDs(t, b, 1); !slices.Equal(got, []int64{1, 2, 4}) {
				t.Fatalf("the writer's own next read lists %v, want [1 2 4] at once", got)
			}

			// a reads group 1 from Redis (not yet in its near tier); before it keeps the
			// entry, b inserts part 5 into the group, which deletes the entry in Redis.
			key1, _ := a.ListBy("Grp").Key(int64(1))
			key2, _ := a.ListBy("Grp").Key(int64(2))
			partIDs(t, b, 1) // the entry back in Redis
			raced := false
			hooks := &testhooks.Read{NearUnfenced: unfenced, BeforeNearStore: func(key string) {
				if key != key1 || raced {
					return
				}
				raced = true
				if err := b.Create(ctx, &Part{ID: 5, Grp: 1}); err != nil {
					t.Error(err)
				}
				// Group 2's entry deleted after the insert's: once a drops it, a has the
				// insert's message too.
				e.rdb.Del(ctx, key2)
				integration.Eventually(t, "a to drop group 2's entry", func() bool {
					before := a.Stats().NearMisses
					partIDs(t, a, 2)
					return a.Stats().NearMisses > before
				})
			}}
			rows, err := a.ListBy("Grp").Get(testhooks.WithRead(ctx, hooks), int64(1))
			if err != nil || !raced {
				t.Fatalf("racing read: %v (raced %v)", err, raced)
			}
			if len(rows) != 3 {
				t.Fatalf("racing read listed %d parts, want the 3 Redis gave it", len(rows))
			}
			got := partIDs(t, a, 1)
			switch {
			case !unfenced && !slices.Equal(got, []int64{1, 2, 4, 5}):
				t.Fatalf("after the race a lists %v: the near tier kept an entry older than an invalidation it had received", got)
			case unfenced && !slices.Equal(got, []int64{1, 2, 4}):
				t.Fatalf("control: without the fence the near tier should have kept [1 2 4], got %v: the test cannot fail", got)
			}
			if !unfenced {
				integration.Eventually(t, "b's own list", func() bool { return slices.Equal(partIDs(t, b, 1), []int64{1, 2, 4, 5}) })
				listInNear(t, a, 1)
			}
		})
	}
}

// Person is found by email, through the near tier.
type Person struct {
	ID    int64  `gorm:"primaryKey"`
	Email string `gorm:"uniqueIndex"`
	Name  string
}

var peopleNear = readthrough.ModelOptions{Near: readthrough.NearOptions{MaxEntries: 1000}, Unique: [][]string{{"Email"}}}

// peopleBy returns the ids of the people a unique GetMany by emails returns, in order.
func peopleBy(t *testing.T, ctx context.Context, r *readthrough.Repository[Person], emails ...any) []int64 {
	t.Helper()
	rows, err := r.By("Email").GetMany(ctx, emails...)
	return rowIDs(t, rows, err, func(p Person) int64 { return p.ID })
}

// TestNearUniqueGetMany: a unique lookup's GetMany answers from the near tier the
// entries and rows it holds, and reads the rest from Redis and keeps them; another
// process's writes reach it. The race: another process's insert of a person lands
// between the GetMany's read of the email's entry ("no such person") and its keeping
// the entry in process; the fence refuses the older entry. The control, unfenced,
// keeps it and keeps answering that no one has the email.
func TestNearUniqueGetMany(t *testing.T) {
	for _, unfenced := range []bool{false, true} {
		t.Run(fmt.Sprintf("unfenced=%v", unfenced), func(t *testing.T) {
			e := newEnv(t, nil)
			if err := e.db.AutoMigrate(&Person{}); err != nil {
				t.Fatal(err)
			}
			e.exec(t, `INSERT INTO people (id, email, name) SELECT g, 'p' || g || '@x', 'P' FROM generate_series(1, 4) g`)
			a := register[Person](t, e.process(t), peopleNear)
			b := register[Person](t, e.process(t), peopleNear)
			ctx := context.Background()
			emails := []any{"p1@x", "p2@x", "p3@x", "p4@x", "nobody@x"}
			integration.Eventually(t, "GetMany answered in process", func() bool {
				before := a.Stats().NearHits
				if got := peopleBy(t, ctx, a, emails...); !slices.Equal(got, []int64{1, 2, 3, 4}) {
					t.Fatalf("GetMany = %v, want [1 2 3 4]", got)
				}
				return a.Stats().NearHits-before == 9 // five entries, four rows
			})
			if err := b.Delete(ctx, int64(3)); err != nil {
				t.Fatal(err)
			}
			integration.Eventually(t, "GetMany to see the other process's delete", func() bool {
				return slices.Equal(peopleBy(t, ctx, a, emails...), []int64{1, 2, 4})
			})

			// a reads race@x's entry from Redis ("no such person"); before it keeps the
			// entry, b creates a person with that email, which deletes the entry.
			if got := peopleBy(t, ctx, b, "race@x"); len(got) != 0 {
				t.Fatalf("race@x = %v before the insert", got)
			}
			raceKey, _ := a.By("Email").Key("race@x")
			p2Key, _ := a.By("Email").Key("p2@x")
			raced := false
			hooks := &testhooks.Read{NearUnfenced: unfenced, BeforeNearStore: func(key string) {
				if key != raceKey || raced {
					return
				}
				raced = true
				if err := b.Create(ctx, &Person{ID: 9, Email: "race@x", Name: "R"}); err != nil {
					t.Error(err)
				}
				// p2's entry deleted after the insert's: once a drops it, a has the
				// insert's message too.
				e.rdb.Del(ctx, p2Key)
				integration.Eventually(t, "a to drop p2's entry", func() bool {
					before := a.Stats().NearMisses
					peopleBy(t, ctx, a, "p2@x")
					return a.Stats().NearMisses > before
				})
			}}
			got := peopleBy(t, testhooks.WithRead(ctx, hooks), a, "p1@x", "race@x")
			if !raced || !slices.Equal(got, []int64{1}) {
				t.Fatalf("racing GetMany = %v (raced %v), want [1]: what Redis held when read", got, raced)
			}
			got = peopleBy(t, ctx, a, "p1@x", "race@x")
			switch {
			case !unfenced && !slices.Equal(got, []int64{1, 9}):
				t.Fatalf("after the race GetMany = %v: the near tier kept an entry older than an invalidation it had received", got)
			case unfenced && !slices.Equal(got, []int64{1}):
				t.Fatalf("control: without the fence the near tier should have kept race@x's entry, got %v: the test cannot fail", got)
			}
		})
	}
}
