package writeback

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"time"
)

// Change is one write journaled under write-back: a whole row to upsert, or the
// primary key of a row to delete. It names its table and columns, so a Flusher applies
// it without the model's Go type (in the worker, say). Values are driver values, as
// database/sql passes them to Postgres: nil, int64, float64, bool, string, []byte or
// time.Time.
type Change struct {
	// Schema and Table name the table, unquoted ("public", "widgets").
	Schema, Table string
	// Key lists the primary-key columns. Every one of them is in Columns.
	Key []string
	// Columns lists the columns written: for an upsert every column the model writes,
	// for a delete the primary-key columns.
	Columns []string
	// Values has one driver value per column.
	Values []any
	// Update lists the columns an upsert sets when the row exists; the others (the
	// key, columns that are only written on create) are left as they are.
	Update []string
	// Delete makes the change a delete of the row with these key values.
	Delete bool
	// SoftDelete, with Delete, makes the delete a soft delete (gorm.DeletedAt): the
	// row's column SoftDelete is set to its value in Values where it is NULL, as GORM's
	// Delete does, and the row is kept. Columns are then the key and this column.
	SoftDelete string
	// Base is, for a soft delete journaled over a row's pending write, that write: it
	// is applied first, since the soft delete supersedes it in the journal. Set by the
	// Flusher from the journal entry, never marshaled with the change.
	Base *Change
}

// The journal's form of a Change is a JSON header naming the operation, table and
// columns, a newline, then one value per column, each written as its length in bytes
// (decimal), a colon and the value. A value's first byte gives its type, so that every
// driver value comes back as the same Go type: n nil, i int64, f float64, b bool (b0,
// b1), s string, x []byte (both as raw bytes), t time.Time (RFC 3339 with nanoseconds
// and the offset). The header is the same for every write of a model, so a Flusher
// decodes it once.
type header struct {
	Op     string   `json:"op"`
	Schema string   `json:"schema"`
	Table  string   `json:"table"`
	Key    []string `json:"key"`
	Cols   []string `json:"cols"`
	Update []string `json:"update,omitempty"`
	// Soft is a soft delete's column (op "softdelete": a flusher that does not know it
	// refuses the change rather than delete the row).
	Soft string `json:"soft,omitempty"`
}

// marshal encodes the change for the journal. It fails on a value that is not a
// driver value; the repository converts values with driver.DefaultParameterConverter
// first.
func (c Change) marshal() ([]byte, error) {
	if err := c.check(); err != nil {
		return nil, err
	}
	h := header{Op: "upsert", Schema: c.Schema, Table: c.Table, Key: c.Key, Cols: c.Columns, Update: c.Update}
	if c.Delete {
		h.Op = "delete"
	}
	if c.SoftDelete != "" {
		h.Op, h.Soft = "softdelete", c.SoftDelete
	}
	b, err := json.Marshal(h)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadChange, err)
	}
	b = append(b, '\n')
	for i, v := range c.Values {
		if b, err = appendValue(b, v); err != nil {
			return nil, fmt.Errorf("%w: %s.%s column %s: %v", ErrBadChange, c.Schema, c.Table, c.Columns[i], err)
		}
	}
	return b, nil
}

// UnmarshalChange decodes a change as journaled (DeadLetter.Change and Base hold
// one). The error wraps ErrBadChange.
func UnmarshalChange(b []byte) (Change, error) {
	return new(decoder).decode(b)
}

// decoder decodes changes, keeping the headers it has seen. Not safe for concurrent
// use; the zero value is ready.
type decoder struct {
	headers map[string]*Change // the change of each header, without values
}

// maxHeaders bounds the decoder's memory when a journal holds many odd headers.
const maxHeaders = 1024

func (d *decoder) decode(b []byte) (Change, error) {
	head, vals, ok := bytes.Cut(b, []byte{'\n'})
	if !ok {
		return Change{}, fmt.Errorf("%w: no header line", ErrBadChange)
	}
	proto, ok := d.headers[string(head)]
	if !ok {
		var h header
		if err := json.Unmarshal(head, &h); err != nil {
			return Change{}, fmt.Errorf("%w: header: %v", ErrBadChange, err)
		}
		proto = &Change{Schema: h.Schema, Table: h.Table, Key: h.Key, Columns: h.Cols, Update: h.Update}
		switch h.Op {
		case "upsert":
		case "delete":
			proto.Delete = true
		case "softdelete":
			if h.Soft == "" {
				return Change{}, fmt.Errorf("%w: op softdelete names no column", ErrBadChange)
			}
			proto.Delete, proto.SoftDelete = true, h.Soft
		default:
			return Change{}, fmt.Errorf("%w: op %q, want upsert, delete or softdelete", ErrBadChange, h.Op)
		}
		if err := proto.checkShape(); err != nil {
			return Change{}, err
		}
		if d.headers == nil || len(d.headers) >= maxHeaders {
			d.headers = make(map[string]*Change)
		}
		d.headers[string(head)] = proto
	}
	c := *proto
	c.Values = make([]any, 0, len(c.Columns))
	for len(vals) > 0 {
		v, rest, err := readValue(vals)
		if err != nil {
			return Change{}, fmt.Errorf("%w: value %d: %v", ErrBadChange, len(c.Values)+1, err)
		}
		c.Values = append(c.Values, v)
		vals = rest
	}
	if len(c.Values) != len(c.Columns) {
		return Change{}, fmt.Errorf("%w: %s.%s: %d values for %d columns", ErrBadChange, c.Schema, c.Table, len(c.Values), len(c.Columns))
	}
	return c, nil
}

// check rejects changes that could not be applied: no table, no key, a key column not
// written, duplicate or unknown columns, a value missing.
func (c Change) check() error {
	if len(c.Values) != len(c.Columns) {
		return fmt.Errorf("%w: %s.%s: %d values for %d columns", ErrBadChange, c.Schema, c.Table, len(c.Values), len(c.Columns))
	}
	return c.checkShape()
}

// checkShape is check without the values.
func (c Change) checkShape() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s.%s: %s", ErrBadChange, c.Schema, c.Table, fmt.Sprintf(format, args...))
	}
	switch {
	case c.Table == "":
		return bad("no table")
	case len(c.Key) == 0:
		return bad("no primary-key columns")
	}
	seen := make(map[string]bool, len(c.Columns))
	for _, col := range c.Columns {
		if col == "" || seen[col] {
			return bad("empty or repeated column %q", col)
		}
		seen[col] = true
	}
	for _, k := range c.Key {
		if !seen[k] {
			return bad("primary-key column %q has no value", k)
		}
	}
	for _, u := range c.Update {
		if !seen[u] || slices.Contains(c.Key, u) {
			return bad("update column %q is not a written non-key column", u)
		}
	}
	if c.SoftDelete != "" {
		if !c.Delete || len(c.Columns) != len(c.Key)+1 || !seen[c.SoftDelete] || slices.Contains(c.Key, c.SoftDelete) {
			return bad("soft delete of column %q: columns must be the key and that column", c.SoftDelete)
		}
	}
	return nil
}

func appendValue(b []byte, v any) ([]byte, error) {
	var enc []byte
	switch v := v.(type) {
	case nil:
		enc = []byte{'n'}
	case int64:
		enc = strconv.AppendInt([]byte{'i'}, v, 10)
	case float64:
		enc = strconv.AppendFloat([]byte{'f'}, v, 'g', -1, 64)
	case bool:
		enc = []byte("b0")
		if v {
			enc[1] = '1'
		}
	case string:
		enc = append([]byte{'s'}, v...)
	case []byte:
		if v == nil {
			enc = []byte{'n'}
		} else {
			enc = append([]byte{'x'}, v...)
		}
	case time.Time:
		enc = v.AppendFormat([]byte{'t'}, time.RFC3339Nano)
	default:
		return nil, fmt.Errorf("%T is not a driver value (nil, int64, float64, bool, string, []byte, time.Time)", v)
	}
	b = strconv.AppendInt(b, int64(len(enc)), 10)
	b = append(b, ':')
	return append(b, enc...), nil
}

// readValue reads one length-prefixed value from b and returns it and the rest of b.
func readValue(b []byte) (any, []byte, error) {
	colon := bytes.IndexByte(b, ':')
	if colon < 1 || colon > 10 {
		return nil, nil, fmt.Errorf("no length")
	}
	n, err := strconv.Atoi(string(b[:colon]))
	if err != nil || n < 1 || n > len(b)-colon-1 {
		return nil, nil, fmt.Errorf("bad length %q", b[:colon])
	}
	enc, rest := b[colon+1:colon+1+n], b[colon+1+n:]
	body := string(enc[1:])
	var v any
	switch enc[0] {
	case 'n':
		if body != "" {
			err = fmt.Errorf("nil with a body")
		}
	case 'i':
		v, err = strconv.ParseInt(body, 10, 64)
	case 'f':
		v, err = strconv.ParseFloat(body, 64)
	case 'b':
		switch body {
		case "0":
			v = false
		case "1":
			v = true
		default:
			err = fmt.Errorf("bad bool %q", body)
		}
	case 's':
		v = body
	case 'x':
		v = []byte(body)
	case 't':
		v, err = time.Parse(time.RFC3339Nano, body)
	default:
		err = fmt.Errorf("unknown type %q", enc[0])
	}
	if err != nil {
		return nil, nil, err
	}
	return v, rest, nil
}
