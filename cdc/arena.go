package cdc

// arena hands out the small slices every change needs (its rows' column descriptions
// and its key) from chunks shared by many changes, so that a change costs one
// allocation of its own (its rows' text) rather than one per slice. Each slice handed
// out is capped at its length, so appending to it cannot reach another's, and nothing
// writes to it once the change is decoded. A chunk stays in memory while any
// transaction holding a slice of it does: a few tens of kilobytes.
type arena struct {
	cols []rowCol
	strs []string
}

const (
	// arenaCols and arenaStrings are the sizes of the chunks, in elements: 32 KB of
	// column descriptions (some hundreds of changes), 16 KB of key strings.
	arenaCols    = 4096
	arenaStrings = 1024
	// maxCapHint bounds the capacity a transaction's Changes start with (Decoder.capHint):
	// 160 KB of Change values.
	maxCapHint = 1024
)

// rowCols returns n column descriptions.
func (a *arena) rowCols(n int) []rowCol {
	if n > len(a.cols) {
		if n > arenaCols/4 {
			return make([]rowCol, n) // a very wide row would waste a chunk
		}
		a.cols = make([]rowCol, arenaCols)
	}
	c := a.cols[:n:n]
	a.cols = a.cols[n:]
	return c
}

// strings returns n empty strings.
func (a *arena) strings(n int) []string {
	if n > len(a.strs) {
		if n > arenaStrings/4 {
			return make([]string, n)
		}
		a.strs = make([]string, arenaStrings)
	}
	s := a.strs[:n:n]
	a.strs = a.strs[n:]
	return s
}
