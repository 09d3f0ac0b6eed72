package cdc

import (
	"fmt"
	"strings"
)

// MaxValueLen is the longest column value, in bytes of Postgres text, that a [Row]
// keeps; a longer one is [ValueNotKept]. It bounds the memory of a change whatever
// its row holds (a document, an image), while keeping every value a lookup can use:
// a btree index entry, and so a unique value, cannot exceed about 2.7 KB.
const MaxValueLen = 4 << 10

// maxTxRowBytes bounds the row values a transaction keeps: past it, the rows of its
// further changes are [ValueNotKept] (their keys are kept). With the pipeline's own
// bound (maxQueuedRowBytes) it keeps the rows of a session within some tens of
// megabytes, as the changes' keys are.
const maxTxRowBytes = 32 << 20

// ValueKind says what a [Row] holds for a column. The zero value is not a valid kind.
type ValueKind uint8

// The kinds of value.
const (
	// ValueText: the value, as Postgres text (Value.Text).
	ValueText ValueKind = iota + 1
	// ValueNull: SQL NULL.
	ValueNull
	// ValueUnchangedTOAST: an UPDATE left a TOASTed (large, stored out of line) value
	// unchanged, and Postgres does not send it ('u'). The old row may hold it, under
	// REPLICA IDENTITY FULL.
	ValueUnchangedTOAST
	// ValueNotKept: the value was sent but not kept: longer than MaxValueLen, in
	// binary form, or beyond the transaction's bound on row bytes.
	ValueNotKept
	// ValueNotSent: the old row of an UPDATE or DELETE carries only the replica
	// identity's columns (the primary key under DEFAULT, the index's columns under
	// USING INDEX); the others are not sent (Postgres sends them as nulls).
	ValueNotSent
)

func (k ValueKind) String() string {
	switch k {
	case ValueText:
		return "text"
	case ValueNull:
		return "null"
	case ValueUnchangedTOAST:
		return "unchanged toast"
	case ValueNotKept:
		return "not kept"
	case ValueNotSent:
		return "not sent"
	}
	return fmt.Sprintf("ValueKind(%d)", uint8(k))
}

// Value is one column's value in a [Row].
type Value struct {
	Kind ValueKind
	// Text is the value as Postgres prints it, when Kind is ValueText; "" otherwise.
	Text string
}

// Row holds the column values of one version of a row, in [Relation.Columns] order. The
// zero Row has no columns: the change carries no such row. A Row is immutable and
// safe for concurrent reads.
type Row struct {
	// text holds the kept values end to end; cols[i].end is where column i's ends,
	// and it starts where column i-1's ends. With n > 0 and cols nil, no value was
	// kept.
	text string
	cols []rowCol
	n    int
}

type rowCol struct {
	end  uint32
	kind ValueKind
}

// Len returns the number of columns of the row, 0 when the change has no such row.
func (r Row) Len() int { return r.n }

// Value returns the value of column i, for 0 <= i < Len().
func (r Row) Value(i int) Value {
	if i < 0 || i >= r.n {
		panic(fmt.Sprintf("cdc: Row.Value(%d) of a row of %d columns", i, r.n))
	}
	if r.cols == nil {
		return Value{Kind: ValueNotKept}
	}
	c := r.cols[i]
	if c.kind != ValueText {
		return Value{Kind: c.kind}
	}
	var start uint32
	if i > 0 {
		start = r.cols[i-1].end
	}
	return Value{Kind: ValueText, Text: r.text[start:c.end]}
}

// kept returns the text of column i if the row keeps it.
func (r Row) kept(i int) (string, bool) {
	if r.cols == nil || i >= len(r.cols) || r.cols[i].kind != ValueText {
		return "", false
	}
	return r.Value(i).Text, true
}

// String renders the row for logs and tests: its values quoted, NULL, and <kind> for
// the others, such as `("7" NULL <unchanged toast>)`.
func (r Row) String() string {
	var b strings.Builder
	b.WriteByte('(')
	for i := range r.n {
		if i > 0 {
			b.WriteByte(' ')
		}
		switch v := r.Value(i); v.Kind {
		case ValueText:
			fmt.Fprintf(&b, "%q", v.Text)
		case ValueNull:
			b.WriteString("NULL")
		default:
			fmt.Fprintf(&b, "<%s>", v.Kind)
		}
	}
	b.WriteByte(')')
	return b.String()
}

// rows builds the Rows of a change's tuples read by reader.tuple: cur, the new row,
// and old, either nil when the message has no such row. identityOnly: old is the old
// row of a 'K' message, whose columns outside the replica identity are not sent. keep:
// the values may be kept (the transaction is within its bound on row bytes); *bytes
// grows by what is kept. Both rows' values share one string, the change's only
// allocation of its own; their columns come from the arena.
func (a *arena) rows(rel *Relation, cur, old []tupleCol, identityOnly, keep bool, bytes *int) (newRow, oldRow Row) {
	newSize, keepNew := rowSize(cur, keep, bytes)
	oldSize, keepOld := rowSize(old, keep, bytes)
	newRow, oldRow = Row{n: len(cur)}, Row{n: len(old)}
	if !keepNew && !keepOld {
		return newRow, oldRow
	}
	var b strings.Builder
	b.Grow(newSize + oldSize)
	if keepNew {
		newRow.cols = a.rowCols(len(cur))
		writeRow(&b, rel, cur, false, newRow.cols)
	}
	if keepOld {
		oldRow.cols = a.rowCols(len(old))
		writeRow(&b, rel, old, identityOnly, oldRow.cols)
	}
	text := b.String()
	if keepNew {
		newRow.text = text[:newSize]
	}
	if keepOld {
		oldRow.text = text[len(text)-oldSize:]
	}
	return newRow, oldRow
}

// rowSize returns the bytes of t's values a Row keeps, and whether it keeps them: t is
// a row (not nil), keep allows it and the transaction's bound on row bytes has room,
// which *bytes then takes.
func rowSize(t []tupleCol, keep bool, bytes *int) (int, bool) {
	if t == nil || !keep {
		return 0, false
	}
	size := 0
	for _, c := range t {
		if c.kind == 't' && len(c.data) <= MaxValueLen {
			size += len(c.data)
		}
	}
	if *bytes+size > maxTxRowBytes {
		return 0, false
	}
	*bytes += size
	return size, true
}

// writeRow writes the kept values of t to b and describes each column in cols, whose
// ends count from the row's first value, written at b's current length.
func writeRow(b *strings.Builder, rel *Relation, t []tupleCol, identityOnly bool, cols []rowCol) {
	start := b.Len()
	for i, c := range t {
		var kind ValueKind
		switch {
		case identityOnly && !rel.Columns[i].Key:
			kind = ValueNotSent
		case c.kind == 'n':
			kind = ValueNull
		case c.kind == 'u':
			kind = ValueUnchangedTOAST
		case c.kind == 't' && len(c.data) <= MaxValueLen:
			kind = ValueText
			b.Write(c.data)
		default: // too long, or binary (never requested)
			kind = ValueNotKept
		}
		cols[i] = rowCol{end: uint32(b.Len() - start), kind: kind}
	}
}
