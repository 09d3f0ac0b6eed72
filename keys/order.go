package keys

import "slices"

// Order returns the order in which Space.Key takes the values of a key of several
// columns, given the columns' names: out[i] is the index in columns of the i-th value.
// Values go in the order of their column names, byte by byte, because that is the one
// order both sides know: the application declares its key fields in any order, and a
// table may list the key's columns in another (a migration that created
// (line_no, order_id) for fields OrderID, LineNo), while both see the names.
func Order(columns []string) []int {
	out := make([]int, len(columns))
	for i := range out {
		out[i] = i
	}
	slices.SortStableFunc(out, func(a, b int) int {
		switch {
		case columns[a] < columns[b]:
			return -1
		case columns[a] > columns[b]:
			return 1
		}
		return 0
	})
	return out
}
