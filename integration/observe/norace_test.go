//go:build !race

package observe_test

// raceAllocs: see race_test.go.
const raceAllocs = 0
