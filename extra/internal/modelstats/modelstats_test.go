package modelstats

import (
	"sync"
	"testing"

	"github.com/pgcache/pgcache/readthrough"
)

func TestPerModelMakesOnce(t *testing.T) {
	made := map[string]int{}
	var mu sync.Mutex
	p := NewPerModel(func(model string) *string {
		mu.Lock()
		made[model]++
		mu.Unlock()
		return &model
	})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for _, m := range []string{"a", "b", "a", "c"} {
				if got := p.Get(m); *got != m {
					t.Errorf("Get(%q) = %q", m, *got)
				}
			}
		})
	}
	wg.Wait()
	first, again := p.Get("a"), p.Get("a")
	if first != again {
		t.Error("Get returned two entries for one model")
	}
	for m, n := range made {
		if n != 1 {
			t.Errorf("model %q made %d times, want once", m, n)
		}
	}
}

func TestCountersNamedOnce(t *testing.T) {
	seen := map[string]bool{}
	s := readthrough.Stats{Hits: 1, Unique: readthrough.LookupStats{Hits: 2}, List: readthrough.LookupStats{Hits: 3}}
	for _, c := range Counters() {
		if seen[c.Name] || c.Help == "" || c.Value == nil {
			t.Errorf("counter %q: repeated, or without help or value", c.Name)
		}
		seen[c.Name] = true
	}
	if got := Counters()[0].Value(s); got != 1 {
		t.Errorf("%s = %d, want 1", Counters()[0].Name, got)
	}
	hits := LookupCounters()[0]
	if u, l := hits.ValueOf(s, KindUnique), hits.ValueOf(s, KindList); u != 2 || l != 3 {
		t.Errorf("lookup %s = unique %d, list %d; want 2, 3", hits.Name, u, l)
	}
}
