package readthrough

import (
	"bytes"
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"math"
	"reflect"
	"sync"
	"time"

	"gorm.io/gorm/schema"
)

// A cached row is its column record: one value per column a load fills, as the
// database would store it, set back on a hit through GORM's own field setters. Caching
// the struct through encoding/json instead followed json tags and Go's JSON rules, not
// GORM's columns: a `json:"-"` column came back empty and a read-modify-write Save then
// wrote the empty value into Postgres.

// errUncacheable marks a row whose column record would not come back as it went in.
var errUncacheable = errors.New("row cannot be cached exactly")

// recorder turns rows of a model into column records and back. It is shared by a
// repository and its copies (WithDB, In).
type recorder struct {
	// fields are the fields a load fills, in column order: for each column GORM maps,
	// the field its scan picks (the shallowest, as schema.FieldsByDBName holds), if
	// readable.
	fields []*schema.Field
	codec  Codec
	// plain, for the Binary codec, says which fields a hit sets straight from the
	// bytes (decodeBinary); nil for other codecs.
	plain []plainKind
	// cols recycles decodeRow's scratch (*[]driver.Value of len(fields)) and rows
	// the heap copy of the model's row (a *T) that a hit decodes into before returning
	// it by value: two allocations fewer on every hit. Both are emptied before reuse,
	// so neither keeps a row's values alive.
	cols, rows sync.Pool
}

func newRecorder(sch *schema.Schema, codec Codec) *recorder {
	c := &recorder{fields: mappedFields(sch), codec: codec}
	if _, ok := codec.(Binary); ok {
		c.plain = make([]plainKind, len(c.fields))
		for i, f := range c.fields {
			c.plain[i] = plainKindOf(f)
		}
	}
	return c
}

// plainKind says how a field is set from a column's value without GORM's setter.
type plainKind uint8

const (
	notPlain    plainKind = iota // through setField
	plainString                  // a string kind, set from a string column with SetString
	plainInt                     // a signed integer kind, set from an int64 column with SetInt
)

var scannerType = reflect.TypeFor[sql.Scanner]()

// plainKindOf returns how f may be set without GORM's setter: for a field of a string
// or signed integer kind (named types included) that is neither a pointer nor a
// sql.Scanner and has no serializer, GORM's setter, given a string or an int64, does
// SetString or SetInt on the field, which is what decodeBinary does, without the
// allocation of a driver.Value holding the string or a large integer.
func plainKindOf(f *schema.Field) plainKind {
	t := f.FieldType
	if f.Serializer != nil || t.Implements(scannerType) || reflect.PointerTo(t).Implements(scannerType) {
		return notPlain
	}
	switch t.Kind() {
	case reflect.String:
		return plainString
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return plainInt
	}
	return notPlain
}

// mappedFields returns the fields GORM's scan fills from SELECT *: one per column name.
func mappedFields(sch *schema.Schema) []*schema.Field {
	var fields []*schema.Field
	for _, name := range sch.DBNames {
		if f := sch.FieldsByDBName[name]; f != nil && f.Readable {
			fields = append(fields, f)
		}
	}
	return fields
}

// record fills cols with the column values of row rv.
func (c *recorder) record(ctx context.Context, rv reflect.Value, cols []driver.Value) error {
	for i, f := range c.fields {
		v, _ := f.ValueOf(ctx, rv)
		dv, err := columnValue(v)
		if err != nil {
			return fmt.Errorf("column %s (field %s, %s): %w", f.DBName, f.Name, f.FieldType, err)
		}
		cols[i] = dv
	}
	return nil
}

// columnValue converts a field's value to what the database would store, as
// database/sql does before a value reaches the driver (driver.Valuer, pointers, named
// basic types), and refuses what has no driver.Value form.
func columnValue(v any) (driver.Value, error) {
	dv, err := driver.DefaultParameterConverter.ConvertValue(v)
	if err != nil {
		return nil, err
	}
	switch b := dv.(type) {
	case nil, bool, int64, float64, string, time.Time:
	case []byte:
		if b == nil {
			return nil, nil // drivers write a nil []byte as NULL, and a load of NULL gives nil
		}
	default:
		return nil, fmt.Errorf("%T is not a value the cache records (want nil, int64, float64, bool, []byte, string or time.Time)", dv)
	}
	return dv, nil
}

// set sets the fields of row rv from cols, as a load does: serializer fields through
// their scanner, every other field through GORM's setter (which calls a sql.Scanner's
// Scan, allocates pointers and embedded structs, and zeroes a field for NULL).
func (c *recorder) set(ctx context.Context, rv reflect.Value, cols []driver.Value) error {
	for i, f := range c.fields {
		if err := setField(ctx, f, rv, cols[i]); err != nil {
			return fmt.Errorf("column %s (field %s): %w", f.DBName, f.Name, err)
		}
	}
	return nil
}

func setField(ctx context.Context, f *schema.Field, rv reflect.Value, v driver.Value) error {
	if f.Serializer == nil {
		return f.Set(ctx, rv, v)
	}
	sv := f.NewValuePool.Get()
	defer f.NewValuePool.Put(sv)
	sc, ok := sv.(sql.Scanner)
	if !ok {
		return fmt.Errorf("serializer value %T is not a sql.Scanner", sv)
	}
	if err := sc.Scan(v); err != nil {
		return err
	}
	return f.Set(ctx, rv, sv)
}

// appendRow appends the codec's bytes of row's column record to dst. It checks that the
// record decodes into a row with the same record: otherwise a hit would return (and a
// read-modify-write Save would write) something the row did not hold. The error wraps
// errUncacheable. back is the row decoded from the bytes appended (a pointer to a new
// row of rv's type), what a hit on them would return: a miss hands it to its reader
// rather than decode the entry once more.
func (c *recorder) appendRow(ctx context.Context, dst []byte, rv reflect.Value) (_ []byte, back any, err error) {
	cols := make([]driver.Value, 2*len(c.fields))
	cols, again := cols[:len(c.fields)], cols[len(c.fields):]
	if err := c.record(ctx, rv, cols); err != nil {
		return dst, nil, fmt.Errorf("%w: %w", errUncacheable, err)
	}
	start := len(dst)
	dst, err = c.codec.AppendColumns(dst, cols)
	if err != nil {
		return dst[:start], nil, fmt.Errorf("%w: codec %s: %w", errUncacheable, c.codec.Name(), err)
	}
	p := reflect.New(rv.Type())
	if err := c.decode(ctx, dst[start:], p.Elem(), again); err != nil {
		return dst[:start], nil, fmt.Errorf("%w: codec %s: %w", errUncacheable, c.codec.Name(), err)
	}
	if err := c.record(ctx, p.Elem(), again); err != nil {
		return dst[:start], nil, fmt.Errorf("%w: decoded row: %w", errUncacheable, err)
	}
	for i, f := range c.fields {
		if !sameValue(cols[i], again[i]) {
			return dst[:start], nil, fmt.Errorf("%w: column %s (field %s, %s): %s comes back as %s",
				errUncacheable, f.DBName, f.Name, f.FieldType, describe(cols[i]), describe(again[i]))
		}
	}
	return dst, p.Interface(), nil
}

// decode sets row rv from the codec's bytes, using cols (len(c.fields)) as scratch.
func (c *recorder) decode(ctx context.Context, data []byte, rv reflect.Value, cols []driver.Value) error {
	if c.plain != nil {
		return c.decodeBinary(ctx, data, rv, cols)
	}
	if err := c.codec.DecodeColumns(data, cols); err != nil {
		return err
	}
	return c.set(ctx, rv, cols)
}

// decodeBinary is decode for the Binary codec: as Binary.DecodeColumns and set, except
// that a string or an integer column of a plain field (plainKindOf) is set on the
// field as it is read, not held in a driver.Value first. On an error rv is zeroed.
func (c *recorder) decodeBinary(ctx context.Context, data []byte, rv reflect.Value, cols []driver.Value) error {
	err := c.decodeBinaryFields(ctx, data, rv, cols)
	if err != nil {
		rv.SetZero()
	}
	return err
}

func (c *recorder) decodeBinaryFields(ctx context.Context, data []byte, rv reflect.Value, cols []driver.Value) error {
	d := binDecoder{data: data}
	for i, f := range c.fields {
		tag, err := d.tag(i, len(c.fields))
		if err != nil {
			return err
		}
		switch {
		case tag == binString && c.plain[i] == plainString:
			s := d.next(d.length())
			if err := d.failed(i); err != nil {
				return err
			}
			f.ReflectValueOf(ctx, rv).SetString(string(s))
			continue
		case tag == binInt && c.plain[i] == plainInt:
			n := d.varint()
			if err := d.failed(i); err != nil {
				return err
			}
			f.ReflectValueOf(ctx, rv).SetInt(n)
			continue
		}
		v, err := d.value(i, tag)
		if err != nil {
			return err
		}
		cols[i] = v
		if err := setField(ctx, f, rv, v); err != nil {
			return fmt.Errorf("column %s (field %s): %w", f.DBName, f.Name, err)
		}
	}
	return d.end(len(c.fields))
}

// sameValue says whether two column values are the same stored value: floats by their
// bits (so NaN is NaN), times by instant and zone.
func sameValue(a, b driver.Value) bool {
	switch a := a.(type) {
	case nil:
		return b == nil
	case float64:
		b, ok := b.(float64)
		return ok && math.Float64bits(a) == math.Float64bits(b)
	case []byte:
		b, ok := b.([]byte)
		return ok && bytes.Equal(a, b)
	case time.Time:
		b, ok := b.(time.Time)
		if !ok || !a.Equal(b) {
			return false
		}
		an, ao, ak := zoneOf(a)
		bn, bo, bk := zoneOf(b)
		return an == bn && ao == bo && ak == bk
	case bool, int64, string:
		return a == b
	}
	return false
}

// describe names a column value's kind without its content, which may be a secret
// (the message is logged).
func describe(v driver.Value) string {
	switch v := v.(type) {
	case nil:
		return "NULL"
	case string:
		return fmt.Sprintf("a string of %d bytes", len(v))
	case []byte:
		return fmt.Sprintf("%d bytes", len(v))
	case time.Time:
		name, offset, _ := zoneOf(v)
		return fmt.Sprintf("a time in zone %q (%+ds)", name, offset)
	}
	return fmt.Sprintf("a %T", v)
}

// uncacheable counts a row served without caching and logs why: the first time, then
// at most once a minute per model.
func (r *Repository[T]) uncacheable(err error) {
	n := r.stats.uncacheable.Add(1)
	r.warnings.uncacheable.Do(func() {
		r.log.Warn("row served from postgres without caching: its column record would not come back as it is",
			"error", err, "uncacheable_rows", n)
	})
}
