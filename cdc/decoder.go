package cdc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pglogrepl"
)

// LSN is a position in the write-ahead log. It is pglogrepl's type, so callers can print
// and compare it without importing pglogrepl.
type LSN = pglogrepl.LSN

// Column is one column of a [Relation], as the relation message describes it.
type Column struct {
	Name    string
	TypeOID uint32
	// BaseTypeOID is the type the column's values are spelled as: TypeOID, or for a
	// domain its base type (through domains over domains), as the decoder was told
	// ([Decoder.SetDomains]). Postgres names the domain in TypeOID and prints values
	// as its base type does: a key built from them must read them as the base type,
	// as the application side does from the catalog.
	BaseTypeOID uint32
	// Key reports whether the column is part of the table's replica identity: the
	// primary key under REPLICA IDENTITY DEFAULT, the index's columns under USING
	// INDEX, every column under FULL. Which columns form the primary key is what
	// [Relation.KeyColumns] says.
	Key bool
}

// Relation is a published table as the stream last described it. Postgres sends a
// relation message before the first change of a table on each connection and again after
// its definition changes; a Relation is replaced then, never modified, so a Relation held
// by a delivered [Change] stays valid. It is safe for concurrent reads.
type Relation struct {
	ID      uint32
	Schema  string
	Name    string
	Columns []Column
	// ReplicaIdentity is the table's REPLICA IDENTITY setting: 'd' (default: the
	// primary key), 'n' (nothing), 'f' (full) or 'i' (index).
	ReplicaIdentity byte

	keyIdx []int // indexes into Columns of the primary-key columns, in column order
	// partition: the relation is a partition of the table it is named as.
	partition bool
}

// KeyColumns returns the primary-key columns, in column order: the columns the
// decoder was told form the table's primary key ([Decoder.SetPrimaryKey]), or, for a
// table it was not told of, the replica identity's columns under REPLICA IDENTITY
// DEFAULT (which are the primary key's). It is empty when the primary key is unknown:
// a table not described through SetPrimaryKey under FULL, USING INDEX or NOTHING, or
// one whose primary-key columns are not all in the relation. It returns a new slice.
func (r *Relation) KeyColumns() []Column {
	cols := make([]Column, len(r.keyIdx))
	for i, j := range r.keyIdx {
		cols[i] = r.Columns[j]
	}
	return cols
}

// ChangeKind says what a [Change] did. The zero value is not a valid kind.
type ChangeKind uint8

// The kinds of change.
const (
	Insert ChangeKind = iota + 1
	Update
	Delete
	Truncate
)

func (k ChangeKind) String() string {
	switch k {
	case Insert:
		return "insert"
	case Update:
		return "update"
	case Delete:
		return "delete"
	case Truncate:
		return "truncate"
	}
	return fmt.Sprintf("ChangeKind(%d)", uint8(k))
}

// Change is one row change, or the truncation of one table. Key values are exactly the
// text Postgres prints for the column type (for example 42, a UUID in lower-case
// hyphenated form, a text value byte for byte).
type Change struct {
	Kind     ChangeKind
	Relation *Relation
	// Key holds the primary-key values ([Relation.KeyColumns]), as Postgres text, in
	// column order: of the new row for Insert and Update, of the old row for Delete.
	// It is nil for Truncate, and also when the row's key cannot be known: the primary
	// key is unknown (see KeyColumns), or a key column arrived null (the old row of a
	// table whose replica identity lacks it) or as an unchanged TOAST value that the
	// old row does not supply. A handler must treat a change with a nil Key as touching
	// every row of the table.
	Key []string
	// OldKey is set for an Update that changed the key: the key of the old row, which
	// Postgres sends only when it differs. It is nil otherwise.
	OldKey []string
	// New holds the new row's values for Insert and Update. Old holds the old row's
	// values where the message carries the old row: for Delete, and for an Update
	// under REPLICA IDENTITY FULL (always), or one that changed the replica
	// identity's columns (then only those columns are sent: the others are
	// ValueNotSent). Either is the zero Row (Len 0) when the change has no such row,
	// and both are for Truncate and the changes of a Whole transaction. An unchanged
	// TOAST value of New is ValueUnchangedTOAST even when Old holds it.
	New, Old Row
}

// String describes the change for logs and tests: its kind, table and key, such as
// `update public.items ["7"] from ["6"]`.
func (c Change) String() string {
	s := fmt.Sprintf("%s %s.%s %q", c.Kind, c.Relation.Schema, c.Relation.Name, c.Key)
	if c.OldKey != nil {
		s += fmt.Sprintf(" from %q", c.OldKey)
	}
	return s
}

// Tx is one committed transaction of the published tables. Nothing modifies a Tx after
// it is returned, so a handler may keep it and read it from any goroutine.
type Tx struct {
	XID uint32
	// CommitLSN is the position of the commit record; EndLSN the position just past
	// it, the one confirmed to the slot once the transaction is handled.
	CommitLSN  LSN
	EndLSN     LSN
	CommitTime time.Time
	Changes    []Change
	// rowBytes: the bytes of the values the changes' rows keep.
	rowBytes int
	// Whole reports that the transaction had more row changes than the decoder keeps
	// (Options.MaxTxChanges): Changes holds one change per table, with a nil Key.
	Whole bool
}

// Decoder turns pgoutput (protocol version 1) messages into transactions. It keeps the
// relations the stream described and buffers the changes of the transaction in progress.
// It does no I/O, so it is tested on bytes. The zero value is not ready; use
// [NewDecoder]. A Decoder is not safe for concurrent use. Each connection needs a new
// Decoder: relations and a transaction in progress do not carry over.
type Decoder struct {
	relations map[uint32]*Relation
	tx        *Tx
	// primaryKeys: the primary-key columns of tables, by [schema, name].
	primaryKeys map[[2]string][]string
	// partitions: the partitioned table each known partition belongs to, by [schema,
	// name] of the partition; roots lists those partitioned tables.
	partitions map[[2]string][2]string
	roots      [][2]string
	// others: published tables known not to be partitions of roots.
	others map[[2]string]bool
	// maxChanges: past this many changes a transaction keeps one keyless change per
	// table (see SetMaxChanges); 0 for no limit. whole: the tables that have one, for
	// the transaction in progress.
	maxChanges int
	whole      map[[2]string]bool
	// domains: the base type of each domain, by the domain's type OID.
	domains map[uint32]uint32
	// oldTuple and newTuple are reused by every change: a tuple's values alias the
	// message only while it is decoded, and are copied into a Row.
	oldTuple, newTuple []tupleCol
	// arena hands out the changes' row columns and key slices from shared chunks.
	arena arena
	// capHint: the capacity the next transaction's Changes start with, from the size
	// of the last one (bounded), which spares a backlog of like transactions the
	// slice's growth.
	capHint int
	// lastEnd: the end of the last transaction committed.
	lastEnd LSN
}

// NewDecoder returns a Decoder with no relations and no transaction in progress.
func NewDecoder() *Decoder {
	return &Decoder{relations: make(map[uint32]*Relation)}
}

// SetPrimaryKey tells the decoder the names of the primary-key columns of the table
// schema.name, as the catalog lists them. Changes to the table then carry their primary
// key in [Change.Key] whatever the table's replica identity: under FULL and USING INDEX
// the relation message marks other columns as the identity, and only the primary key
// names a row the same way on both sides. Call it before the table's relation message
// is decoded.
func (d *Decoder) SetPrimaryKey(schema, name string, columns []string) {
	if d.primaryKeys == nil {
		d.primaryKeys = make(map[[2]string][]string)
	}
	d.primaryKeys[[2]string{schema, name}] = slices.Clone(columns)
}

// SetPartitions tells the decoder the partitions of the partitioned table root, at
// every level. A publication without publish_via_partition_root sends the changes of a
// partitioned table under the names of its partitions (and a TRUNCATE of one partition
// only so: with publish_via_partition_root it is not sent at all). The decoder reports
// them as changes of root: their Relation is named as root, with the partition's own
// columns. Each partition must be described to SetPrimaryKey too.
//
// Once SetPartitions was called, a relation the decoder was told of by neither
// SetPrimaryKey nor SetOthers (a partition attached since the catalog was read, say)
// makes Decode fail with an error wrapping [ErrCatalogChanged]: its changes could belong
// to root, and the catalog must be read again before they are decoded.
func (d *Decoder) SetPartitions(rootSchema, rootName string, partitions [][2]string) {
	if d.partitions == nil {
		d.partitions = make(map[[2]string][2]string)
	}
	root := [2]string{rootSchema, rootName}
	if !slices.Contains(d.roots, root) {
		d.roots = append(d.roots, root)
	}
	for _, p := range partitions {
		d.partitions[p] = root
	}
}

// SetDomains tells the decoder the base type of domains, by the domain's type OID
// (pg_type.typbasetype, resolved through domains over domains), for
// [Column.BaseTypeOID]. Call it before the relation messages are decoded.
func (d *Decoder) SetDomains(base map[uint32]uint32) { d.domains = base }

// SetMaxChanges bounds the memory a transaction takes: once it has n row changes, the
// decoder keeps one change per table it touched, with a nil Key (touching every row of
// the table), instead of one per row, and sets [Tx.Whole]. A backfill or migration of
// tens of millions of rows then costs the decoder a few bytes per table, and the handler
// one whole-table invalidation per table. n <= 0 means no bound.
func (d *Decoder) SetMaxChanges(n int) { d.maxChanges = n }

// SetOthers tells the decoder of published tables that are not partitions of the
// tables given to SetPartitions (see there).
func (d *Decoder) SetOthers(tables [][2]string) {
	if d.others == nil {
		d.others = make(map[[2]string]bool)
	}
	for _, t := range tables {
		d.others[t] = true
	}
}

// InTransaction reports whether a Begin was decoded and its Commit was not.
func (d *Decoder) InTransaction() bool { return d.tx != nil }

// position returns how far in the WAL the stream has come: the commit position of the
// open transaction (a Begin names it), or the end of the last one committed; 0 before
// either.
func (d *Decoder) position() LSN {
	if d.tx != nil {
		return d.tx.CommitLSN
	}
	return d.lastEnd
}

// changes returns the number of changes of the open transaction decoded so far.
func (d *Decoder) changes() int {
	if d.tx == nil {
		return 0
	}
	return len(d.tx.Changes)
}

// Relation returns the relation the stream last described under id.
func (d *Decoder) Relation(id uint32) (*Relation, bool) {
	r, ok := d.relations[id]
	return r, ok
}

// Decode decodes one message, the WALData of one XLogData message. It returns the
// transaction when msg is its Commit, and nil otherwise. A malformed or unexpected
// message is an error wrapping [ErrProtocol]; after an error the Decoder should be
// discarded with its connection. Decode keeps no reference to msg.
func (d *Decoder) Decode(msg []byte) (*Tx, error) {
	if len(msg) == 0 {
		return nil, fmt.Errorf("%w: empty message", ErrProtocol)
	}
	r := &reader{b: msg, off: 1}
	typ := msg[0]
	var tx *Tx
	var err error
	switch typ {
	case 'B':
		err = d.begin(r)
	case 'C':
		tx, err = d.commit(r)
	case 'R':
		err = d.relation(r)
	case 'I', 'U', 'D':
		err = d.change(typ, r)
	case 'T':
		err = d.truncate(r)
	case 'O': // origin of a replicated transaction: nothing to do
		r.u64()
		r.cstring()
		if d.tx == nil {
			err = fmt.Errorf("origin outside a transaction")
		}
	case 'Y': // type description: keys are taken as text, so nothing to do
		r.u32()
		r.cstring()
		r.cstring()
	case 'M': // logical decoding message: not requested, ignored if sent anyway
		r.u8()
		r.u64()
		r.cstring()
		r.bytes(int(r.u32()))
	default:
		return nil, fmt.Errorf("%w: unsupported message type %q (protocol version 1 without streaming or two-phase is requested)", ErrProtocol, typ)
	}
	if err == nil {
		err = r.finish()
	}
	if errors.Is(err, ErrCatalogChanged) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s message: %v", ErrProtocol, messageName(typ), err)
	}
	return tx, nil
}

func messageName(typ byte) string {
	if typ == 'M' {
		return "logical decoding"
	}
	return pglogrepl.MessageType(typ).String()
}

func (d *Decoder) begin(r *reader) error {
	finalLSN := r.u64()
	r.u64() // commit time, sent again with the commit
	xid := r.u32()
	if r.err != nil {
		return r.err
	}
	if d.tx != nil {
		return fmt.Errorf("begin of xid %d inside xid %d", xid, d.tx.XID)
	}
	d.tx = &Tx{XID: xid, CommitLSN: LSN(finalLSN)}
	return nil
}

func (d *Decoder) commit(r *reader) (*Tx, error) {
	r.u8() // flags, unused
	commitLSN := r.u64()
	endLSN := r.u64()
	commitTime := r.u64()
	if err := r.finish(); err != nil {
		return nil, err
	}
	if d.tx == nil {
		return nil, fmt.Errorf("commit outside a transaction")
	}
	tx := d.tx
	d.tx, d.whole = nil, nil
	d.capHint = min(len(tx.Changes), maxCapHint)
	tx.CommitLSN = LSN(commitLSN)
	tx.EndLSN = LSN(endLSN)
	d.lastEnd = tx.EndLSN
	tx.CommitTime = pgTime(int64(commitTime))
	return tx, nil
}

// pgTime converts microseconds since 2000-01-01 UTC.
func pgTime(us int64) time.Time {
	const unixToY2K = 946684800 * 1000000
	return time.UnixMicro(us + unixToY2K)
}

func (d *Decoder) relation(r *reader) error {
	rel := &Relation{ID: r.u32()}
	rel.Schema = r.cstring()
	rel.Name = r.cstring()
	rel.ReplicaIdentity = r.u8()
	n := int(r.u16())
	if r.err != nil {
		return r.err
	}
	if rel.Schema == "" {
		rel.Schema = "pg_catalog" // pgoutput sends pg_catalog as the empty string
	}
	const minColumn = 1 + 1 + 4 + 4 // flags, name terminator, type, modifier
	if n*minColumn > r.remaining() {
		return fmt.Errorf("%d columns do not fit in %d bytes", n, r.remaining())
	}
	rel.Columns = make([]Column, n)
	for i := range rel.Columns {
		flags := r.u8()
		c := Column{Name: r.cstring(), TypeOID: r.u32(), Key: flags&1 != 0}
		c.BaseTypeOID = c.TypeOID
		if base, ok := d.domains[c.TypeOID]; ok {
			c.BaseTypeOID = base
		}
		rel.Columns[i] = c
		r.u32() // type modifier
	}
	if r.err != nil {
		return r.err
	}
	name := [2]string{rel.Schema, rel.Name}
	_, known := d.primaryKeys[name]
	if !known && len(d.roots) > 0 && !d.others[name] {
		return fmt.Errorf("%w: relation %s.%s, not in the catalog as read when the stream started", ErrCatalogChanged, rel.Schema, rel.Name)
	}
	rel.keyIdx = d.primaryKey(rel)
	if root, ok := d.partitions[name]; ok {
		rel.Schema, rel.Name, rel.partition = root[0], root[1], true
	}
	d.relations[rel.ID] = rel
	return nil
}

// primaryKey returns the indexes of rel's primary-key columns, or nil when they are
// not known.
func (d *Decoder) primaryKey(rel *Relation) []int {
	names, ok := d.primaryKeys[[2]string{rel.Schema, rel.Name}]
	if !ok {
		if rel.ReplicaIdentity != 'd' {
			return nil
		}
		var idx []int
		for i, c := range rel.Columns {
			if c.Key {
				idx = append(idx, i)
			}
		}
		return idx
	}
	idx := make([]int, 0, len(names))
	for i, c := range rel.Columns {
		if slices.Contains(names, c.Name) {
			idx = append(idx, i)
		}
	}
	if len(idx) != len(names) {
		return nil // the primary key changed since the catalog was read
	}
	return idx
}

func (d *Decoder) rel(id uint32) (*Relation, error) {
	rel, ok := d.relations[id]
	if !ok {
		return nil, fmt.Errorf("relation %d was not described", id)
	}
	return rel, nil
}

func (d *Decoder) change(typ byte, r *reader) error {
	id := r.u32()
	kind := r.u8()
	if r.err != nil {
		return r.err
	}
	if d.tx == nil {
		return fmt.Errorf("change outside a transaction")
	}
	rel, err := d.rel(id)
	if err != nil {
		return err
	}
	// The tuples alias msg, of which Decode keeps no reference.
	defer func() { clear(d.oldTuple); clear(d.newTuple) }()
	var old, cur []tupleCol
	switch {
	case typ == 'I' && kind == 'N':
		cur, err = r.tuple(rel, &d.newTuple)
	case typ == 'U' && (kind == 'K' || kind == 'O'):
		if old, err = r.tuple(rel, &d.oldTuple); err != nil {
			return err
		}
		if b := r.u8(); r.err == nil && b != 'N' {
			return fmt.Errorf("tuple type %q after the old tuple, want 'N'", b)
		}
		cur, err = r.tuple(rel, &d.newTuple)
	case typ == 'U' && kind == 'N':
		cur, err = r.tuple(rel, &d.newTuple)
	case typ == 'D' && (kind == 'K' || kind == 'O'):
		old, err = r.tuple(rel, &d.oldTuple)
	default:
		return fmt.Errorf("unexpected tuple type %q", kind)
	}
	if err != nil {
		return err
	}
	if d.whole != nil {
		// Past maxChanges: the table's change has no key and no rows.
		d.addWhole(Change{Kind: changeKinds[typ], Relation: rel})
		return nil
	}

	// The rows are kept within maxChanges: past it, add drops this change for a
	// keyless one, and the rows with it. The key's values are taken from the rows'
	// text where the rows keep them.
	c := Change{Relation: rel}
	keep := d.maxChanges <= 0 || len(d.tx.Changes) < d.maxChanges
	c.New, c.Old = d.arena.rows(rel, cur, old, kind == 'K', keep, &d.tx.rowBytes)
	switch typ {
	case 'I':
		c.Kind = Insert
		c.Key = d.arena.key(rel, cur, nil, c.New, Row{})
	case 'U':
		c.Kind = Update
		c.Key = d.arena.key(rel, cur, old, c.New, c.Old)
		if old != nil {
			// A 'K' tuple comes only when the key changed, but an 'O' tuple (REPLICA
			// IDENTITY FULL) comes always: compare. An old key that cannot be read
			// leaves the new key unknown too, so the handler covers the whole table.
			oldKey := d.arena.key(rel, old, nil, c.Old, Row{})
			switch {
			case oldKey == nil && len(rel.keyIdx) > 0:
				c.Key = nil
			case c.Key != nil && !equalKeys(oldKey, c.Key):
				c.OldKey = oldKey
			}
		}
	case 'D':
		c.Kind = Delete
		c.Key = d.arena.key(rel, old, nil, c.Old, Row{})
	}
	d.add(c)
	return nil
}

var changeKinds = [256]ChangeKind{'I': Insert, 'U': Update, 'D': Delete}

// add adds a row change to the transaction, or a keyless change of its table once the
// transaction is past maxChanges.
func (d *Decoder) add(c Change) {
	if d.whole == nil && (d.maxChanges <= 0 || len(d.tx.Changes) < d.maxChanges) {
		if d.tx.Changes == nil && d.capHint > 0 {
			d.tx.Changes = make([]Change, 0, d.capHint)
		}
		d.tx.Changes = append(d.tx.Changes, c)
		return
	}
	if d.whole == nil {
		d.tx.Whole = true
		d.whole = make(map[[2]string]bool)
		rows := d.tx.Changes
		d.tx.Changes, d.tx.rowBytes = nil, 0
		for _, c := range rows {
			d.addWhole(c)
		}
	}
	d.addWhole(c)
}

func (d *Decoder) addWhole(c Change) {
	name := [2]string{c.Relation.Schema, c.Relation.Name}
	if c.Kind == Truncate {
		d.tx.Changes = append(d.tx.Changes, c)
		return
	}
	if !d.whole[name] {
		d.whole[name] = true
		d.tx.Changes = append(d.tx.Changes, Change{Kind: c.Kind, Relation: c.Relation})
	}
}

func (d *Decoder) truncate(r *reader) error {
	n := int(r.u32())
	r.u8() // options: CASCADE, RESTART IDENTITY
	if r.err != nil {
		return r.err
	}
	if d.tx == nil {
		return fmt.Errorf("truncate outside a transaction")
	}
	if n < 0 || n*4 > r.remaining() {
		return fmt.Errorf("%d relations do not fit in %d bytes", n, r.remaining())
	}
	for range n {
		rel, err := d.rel(r.u32())
		if err != nil {
			return err
		}
		if rel.partition && d.truncated(rel) {
			continue // another partition of the table was truncated in this message
		}
		d.tx.Changes = append(d.tx.Changes, Change{Kind: Truncate, Relation: rel})
	}
	return nil
}

// truncated reports whether the transaction already truncated the table rel is named as.
func (d *Decoder) truncated(rel *Relation) bool {
	for _, c := range d.tx.Changes {
		if c.Kind == Truncate && c.Relation.Schema == rel.Schema && c.Relation.Name == rel.Name {
			return true
		}
	}
	return false
}

// tupleCol is one column of a tuple. data aliases the message.
type tupleCol struct {
	kind byte // 'n' null, 'u' unchanged TOAST, 't' text, 'b' binary
	data []byte
}

func (c tupleCol) hasValue() bool { return c.kind == 't' || c.kind == 'b' }

// key returns the values of rel's key columns in t, taking an unchanged TOAST value
// from fallback (the old row) when it has one. It returns nil when the relation has no
// key columns or a key value is missing. tRow and fallbackRow are the Rows of t and
// fallback: a value they keep is shared rather than copied.
func (a *arena) key(rel *Relation, t, fallback []tupleCol, tRow, fallbackRow Row) []string {
	if len(rel.keyIdx) == 0 {
		return nil
	}
	for _, j := range rel.keyIdx {
		c := t[j]
		if c.kind == 'u' && fallback != nil {
			c = fallback[j]
		}
		if !c.hasValue() {
			return nil
		}
	}
	k := a.strings(len(rel.keyIdx))
	for i, j := range rel.keyIdx {
		c, r := t[j], tRow
		if c.kind == 'u' && fallback != nil {
			c, r = fallback[j], fallbackRow
		}
		if v, ok := r.kept(j); ok {
			k[i] = v
		} else {
			k[i] = string(c.data)
		}
	}
	return k
}

func equalKeys(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// reader reads big-endian protocol fields. The first short read sets err; later reads
// return zero values, so a message is checked once at its end.
type reader struct {
	b   []byte
	off int
	err error
}

func (r *reader) remaining() int { return len(r.b) - r.off }

func (r *reader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > r.remaining() {
		r.err = fmt.Errorf("truncated at byte %d: need %d more, have %d", r.off, n, r.remaining())
		return nil
	}
	b := r.b[r.off : r.off+n : r.off+n]
	r.off += n
	return b
}

func (r *reader) u8() byte {
	if b := r.take(1); b != nil {
		return b[0]
	}
	return 0
}

func (r *reader) u16() uint16 {
	if b := r.take(2); b != nil {
		return binary.BigEndian.Uint16(b)
	}
	return 0
}

func (r *reader) u32() uint32 {
	if b := r.take(4); b != nil {
		return binary.BigEndian.Uint32(b)
	}
	return 0
}

func (r *reader) u64() uint64 {
	if b := r.take(8); b != nil {
		return binary.BigEndian.Uint64(b)
	}
	return 0
}

func (r *reader) bytes(n int) []byte { return r.take(n) }

func (r *reader) cstring() string {
	if r.err != nil {
		return ""
	}
	for i := r.off; i < len(r.b); i++ {
		if r.b[i] == 0 {
			s := string(r.b[r.off:i])
			r.off = i + 1
			return s
		}
	}
	r.err = fmt.Errorf("string at byte %d is not terminated", r.off)
	return ""
}

// tuple reads a TupleData of rel, which must have one value per column of rel, into
// *buf, which it grows as needed, and returns it.
func (r *reader) tuple(rel *Relation, buf *[]tupleCol) ([]tupleCol, error) {
	n := int(r.u16())
	if r.err != nil {
		return nil, r.err
	}
	if n != len(rel.Columns) {
		return nil, fmt.Errorf("tuple of %d columns for relation %d (%s.%s) of %d columns", n, rel.ID, rel.Schema, rel.Name, len(rel.Columns))
	}
	if cap(*buf) < n {
		*buf = make([]tupleCol, n)
	}
	t := (*buf)[:n]
	clear(t)
	for i := range t {
		t[i].kind = r.u8()
		switch t[i].kind {
		case 'n', 'u':
		case 't', 'b':
			size := r.u32()
			if r.err == nil && uint64(size) > uint64(r.remaining()) {
				return nil, fmt.Errorf("column %d: value of %d bytes, %d left", i, size, r.remaining())
			}
			t[i].data = r.take(int(size))
		default:
			if r.err == nil {
				return nil, fmt.Errorf("column %d: unknown value kind %q", i, t[i].kind)
			}
		}
		if r.err != nil {
			return nil, r.err
		}
	}
	return t, nil
}

func (r *reader) finish() error {
	if r.err != nil {
		return r.err
	}
	if r.remaining() != 0 {
		return fmt.Errorf("%d bytes left over", r.remaining())
	}
	return nil
}
