package observe_test

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgcache/pgcache/extra/pgcacheprom"
	"github.com/pgcache/pgcache/readthrough"
)

// observers are the configurations a hit is measured under.
var observers = []struct {
	name string
	new  func(testing.TB) readthrough.Observer
}{
	{"off", func(testing.TB) readthrough.Observer { return nil }},
	{"prometheus", func(testing.TB) readthrough.Observer {
		obs := pgcacheprom.NewObserver(pgcacheprom.Options{})
		prometheus.NewRegistry().MustRegister(obs)
		return obs
	}},
	{"otel", func(tb testing.TB) readthrough.Observer { return newOtel(tb).obs }},
	{"both", func(tb testing.TB) readthrough.Observer {
		return readthrough.Observers(pgcacheprom.NewObserver(pgcacheprom.Options{}), newOtel(tb).obs)
	}},
}

// hitRepo returns Widget's repository on a Cache with obs, with row 1 cached.
func hitRepo(tb testing.TB, e *env, obs readthrough.Observer) *readthrough.Repository[Widget] {
	tb.Helper()
	r := register[Widget](tb, e.cache(tb, obs), readthrough.ModelOptions{})
	get(tb, r, 1, true)
	return r
}

// BenchmarkHitObserver measures a hit (Get of a cached row, one Redis GET) with no
// observer, and with the Prometheus and OpenTelemetry observers. Compare "off" with
// integration/readthrough's BenchmarkGetHit of a build before observers existed.
func BenchmarkHitObserver(b *testing.B) {
	e := newEnv(b)
	for _, o := range observers {
		b.Run(o.name, func(b *testing.B) {
			r := hitRepo(b, e, o.new(b))
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, ok, err := r.Get(ctx, int64(1)); err != nil || !ok {
					b.Fatal(ok, err)
				}
			}
			if s := r.Stats(); s.Misses > 1 {
				b.Fatalf("stats %+v: the benchmark missed", s)
			}
		})
	}
}

// hitAllocsBefore guards a hit's allocations with no observer: BenchmarkGetHit
// (integration/readthrough) reported 19 allocs/op before observers existed (commit
// 24c68a5), and observers off added none; the sharing of concurrent GETs of a key
// (hot keys) then added 2; sharding that group, recycling a lone reader's call and
// keeping rows and error targets off the heap took 4 off (17); bounding the GET by a
// deadline instead of context.WithTimeout, and recycling decode's row and scratch, 6
// more (11); setting the Binary codec's strings and integers on plain fields without
// a driver.Value between, one per string column (10: the GET's 7, the row's key, the
// read's deadline, the row's string); allocating the GET's arguments and the read's
// deadline together, one more (9: the GET's 7, the row's key, the row's string, as
// many as integration/readthrough's BenchmarkBaselineRedisGetDecode, a GET of the same
// entry and its decode with the default codec); an id of 100 or more no longer pays
// one more for its digits (keys.Space.KeyFromGo). Raise it only with a reason.
const hitAllocsBefore = 9

// TestHitAllocsObserverOff checks that with no observer a hit allocates no more than
// it did before observers existed, and logs what each observer adds.
func TestHitAllocsObserverOff(t *testing.T) {
	e := newEnv(t)
	allocs := map[string]float64{}
	for _, o := range observers {
		r := hitRepo(t, e, o.new(t))
		ctx := context.Background()
		allocs[o.name] = testing.AllocsPerRun(500, func() {
			if _, ok, err := r.Get(ctx, int64(1)); err != nil || !ok {
				t.Fatal(ok, err)
			}
		})
		t.Logf("hit, observer %s: %v allocs", o.name, allocs[o.name])
	}
	if allocs["off"] > hitAllocsBefore+raceAllocs {
		t.Errorf("with no observer a hit allocates %v times, more than the %v it did (see hitAllocsBefore; %d more under the race detector)", allocs["off"], hitAllocsBefore, raceAllocs)
	}
	// An id of 100 or more costs no more: its digits go straight into the key (Go
	// keeps the decimal strings of 0 to 99 ready, so row 1 cannot show it). The id is
	// a constant, which Go boxes without an allocation, as it does row 1's.
	e.exec(t, `INSERT INTO widgets (id, name, price) VALUES (123456, 'a widget of typical size for a cache benchmark', 42)`)
	r := hitRepo(t, e, nil)
	get(t, r, 123456, true)
	ctx := context.Background()
	large := testing.AllocsPerRun(500, func() {
		if _, ok, err := r.Get(ctx, int64(123456)); err != nil || !ok {
			t.Fatal(ok, err)
		}
	})
	t.Logf("hit of row 123456, observer off: %v allocs", large)
	if large > hitAllocsBefore+raceAllocs {
		t.Errorf("with no observer a hit of row 123456 allocates %v times, more than the %v of row 1 (see hitAllocsBefore; %d more under the race detector)", large, hitAllocsBefore, raceAllocs)
	}
}
