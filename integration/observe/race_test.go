//go:build race

package observe_test

// raceAllocs is what the race detector adds to a hit's allocations: its sync.Pool
// drops a quarter of what is put, so a hit sometimes allocates the recycled call, row
// or scratch slice again.
const raceAllocs = 1
