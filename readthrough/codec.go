package readthrough

import (
	"bytes"
	"database/sql/driver"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"
)

// Codec turns a row's column record into the bytes cached in Redis and back.
//
// The record holds one value per column GORM maps (see the package doc), as the
// database would store it: each value is nil (NULL), int64, float64, bool, []byte,
// string or time.Time, the types of database/sql/driver.Value; a []byte is never nil.
// A codec must give back exactly the values it was given: NaN and infinities, strings
// that are not UTF-8, bytes, times of any year with their location (UTC, Local, or a
// fixed zone by name and offset), and the difference between a string and []byte. The
// cache checks this for every row it stores, and serves from Postgres, uncached, a row
// whose record does not come back equal (counted in Stats.Uncacheable).
//
// Name is part of the model's schema version, so switching codecs never decodes one
// codec's bytes with another. Implementations must be safe for concurrent use.
type Codec interface {
	Name() string
	// AppendColumns appends the encoding of cols to dst and returns the extended slice.
	AppendColumns(dst []byte, cols []driver.Value) ([]byte, error)
	// DecodeColumns decodes data, written by AppendColumns for len(cols) values, into
	// cols. It must not keep data: the []byte values it returns must be copies.
	DecodeColumns(data []byte, cols []driver.Value) error
}

// errColumns is wrapped by the codecs' decoding errors.
var errColumns = errors.New("bad column record")

// Binary is the default codec: a compact binary record, one tag byte and the value's
// bytes per column. It is the fastest.
type Binary struct{}

// Binary's tags.
const (
	binNull    = 'z'
	binFalse   = 'f'
	binTrue    = 't'
	binInt     = 'i' // zig-zag varint
	binFloat   = 'd' // 8 bytes, IEEE 754 bits, big endian
	binString  = 's' // uvarint length, bytes
	binBytes   = 'b' // uvarint length, bytes
	binTimeUTC = 'u' // varint seconds since 1970, uvarint nanoseconds
	binTimeLoc = 'l' // as binTimeUTC, in time.Local
	binTimeZon = 'o' // as binTimeUTC, varint offset seconds, uvarint length, zone name
)

func (Binary) Name() string { return "bin1" }

func (Binary) AppendColumns(dst []byte, cols []driver.Value) ([]byte, error) {
	for i, v := range cols {
		switch v := v.(type) {
		case nil:
			dst = append(dst, binNull)
		case bool:
			if v {
				dst = append(dst, binTrue)
			} else {
				dst = append(dst, binFalse)
			}
		case int64:
			dst = binary.AppendVarint(append(dst, binInt), v)
		case float64:
			dst = binary.BigEndian.AppendUint64(append(dst, binFloat), math.Float64bits(v))
		case string:
			dst = append(binary.AppendUvarint(append(dst, binString), uint64(len(v))), v...)
		case []byte:
			dst = append(binary.AppendUvarint(append(dst, binBytes), uint64(len(v))), v...)
		case time.Time:
			switch name, offset, kind := zoneOf(v); kind {
			case zoneUTC:
				dst = appendTime(append(dst, binTimeUTC), v)
			case zoneLocal:
				dst = appendTime(append(dst, binTimeLoc), v)
			default:
				dst = appendTime(append(dst, binTimeZon), v)
				dst = binary.AppendVarint(dst, int64(offset))
				dst = append(binary.AppendUvarint(dst, uint64(len(name))), name...)
			}
		default:
			return dst, fmt.Errorf("column %d: %T is not a driver value", i, v)
		}
	}
	return dst, nil
}

func appendTime(dst []byte, t time.Time) []byte {
	return binary.AppendUvarint(binary.AppendVarint(dst, t.Unix()), uint64(t.Nanosecond()))
}

func (Binary) DecodeColumns(data []byte, cols []driver.Value) error {
	d := binDecoder{data: data}
	for i := range cols {
		tag, err := d.tag(i, len(cols))
		if err != nil {
			return err
		}
		if cols[i], err = d.value(i, tag); err != nil {
			return err
		}
	}
	return d.end(len(cols))
}

// tag reads the tag of column i of n.
func (d *binDecoder) tag(i, n int) (byte, error) {
	if len(d.data) == 0 {
		return 0, fmt.Errorf("%w: %d columns, want %d", errColumns, i, n)
	}
	tag := d.data[0]
	d.data = d.data[1:]
	return tag, nil
}

// value reads the value of column i, whose tag was read.
func (d *binDecoder) value(i int, tag byte) (driver.Value, error) {
	var v driver.Value
	switch tag {
	case binNull:
		v = nil
	case binFalse:
		v = false
	case binTrue:
		v = true
	case binInt:
		v = d.varint()
	case binFloat:
		v = math.Float64frombits(binary.BigEndian.Uint64(d.next(8)))
	case binString:
		v = string(d.next(d.length()))
	case binBytes:
		b := bytes.Clone(d.next(d.length()))
		if b == nil {
			b = []byte{}
		}
		v = b
	case binTimeUTC, binTimeLoc, binTimeZon:
		t := time.Unix(d.varint(), int64(d.uvarint()))
		switch tag {
		case binTimeUTC:
			t = t.UTC()
		case binTimeZon:
			offset := d.varint()
			t = t.In(time.FixedZone(string(d.next(d.length())), int(offset)))
		}
		v = t
	default:
		return nil, fmt.Errorf("%w: column %d: tag %q", errColumns, i, tag)
	}
	if err := d.failed(i); err != nil {
		return nil, err
	}
	return v, nil
}

// failed returns the error of a failed read of column i.
func (d *binDecoder) failed(i int) error {
	if d.err != nil {
		return fmt.Errorf("%w: column %d: %w", errColumns, i, d.err)
	}
	return nil
}

// end checks that nothing follows the n columns read.
func (d *binDecoder) end(n int) error {
	if len(d.data) != 0 {
		return fmt.Errorf("%w: %d bytes after %d columns", errColumns, len(d.data), n)
	}
	return nil
}

// binDecoder reads Binary's fields; the first failure sticks in err, and every read
// after it returns zero values.
type binDecoder struct {
	data []byte
	err  error
}

func (d *binDecoder) varint() int64 {
	v, n := binary.Varint(d.data)
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.data = d.data[n:]
	return v
}

func (d *binDecoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.data)
	if n <= 0 {
		d.fail("bad uvarint")
		return 0
	}
	d.data = d.data[n:]
	return v
}

func (d *binDecoder) length() int {
	n := d.uvarint()
	if n > uint64(len(d.data)) {
		d.fail("length past the end")
		return 0
	}
	return int(n)
}

func (d *binDecoder) next(n int) []byte {
	if n > len(d.data) {
		d.fail("truncated")
		return make([]byte, n)
	}
	b := d.data[:n]
	d.data = d.data[n:]
	return b
}

func (d *binDecoder) fail(msg string) {
	if d.err == nil {
		d.err = errors.New(msg)
	}
	d.data = nil
}

type zoneKind int

const (
	zoneUTC zoneKind = iota
	zoneLocal
	zoneFixed
)

// zoneOf says how a time's location is recorded: UTC and Local by identity (a load
// returns times in one of the two, and Local is the reading process's), any other as
// the fixed zone in effect at that instant.
func zoneOf(t time.Time) (name string, offset int, kind zoneKind) {
	switch t.Location() {
	case time.UTC:
		return "", 0, zoneUTC
	case time.Local:
		return "", 0, zoneLocal
	}
	name, offset = t.Zone()
	return name, offset, zoneFixed
}

// JSON encodes the column record as a JSON array, readable in redis-cli: strings that
// are UTF-8, integers, booleans and nulls as themselves, floats always with a decimal
// point or exponent, and what JSON cannot hold as an object naming its type:
// {"float":"NaN"}, {"bytes":"<base64>"}, {"str":"<base64>"} for a string that is not
// UTF-8, {"time":[seconds,nanoseconds],"zone":"UTC"|"Local"|name,"offset":seconds}.
type JSON struct{}

func (JSON) Name() string { return "json2" }

func (JSON) AppendColumns(dst []byte, cols []driver.Value) ([]byte, error) {
	dst = append(dst, '[')
	for i, v := range cols {
		if i > 0 {
			dst = append(dst, ',')
		}
		switch v := v.(type) {
		case nil:
			dst = append(dst, "null"...)
		case bool:
			dst = strconv.AppendBool(dst, v)
		case int64:
			dst = strconv.AppendInt(dst, v, 10)
		case float64:
			if math.IsNaN(v) || math.IsInf(v, 0) {
				dst = strconv.AppendQuote(append(dst, `{"float":`...), strconv.FormatFloat(v, 'g', -1, 64))
				dst = append(dst, '}')
				break
			}
			start := len(dst)
			dst = strconv.AppendFloat(dst, v, 'g', -1, 64)
			if !bytes.ContainsAny(dst[start:], ".eE") {
				dst = append(dst, ".0"...)
			}
		case string:
			if !utf8.ValidString(v) {
				dst = append(base64.StdEncoding.AppendEncode(append(dst, `{"str":"`...), []byte(v)), `"}`...)
				break
			}
			b, err := json.Marshal(v)
			if err != nil {
				return dst, fmt.Errorf("column %d: %w", i, err)
			}
			dst = append(dst, b...)
		case []byte:
			dst = append(base64.StdEncoding.AppendEncode(append(dst, `{"bytes":"`...), v), `"}`...)
		case time.Time:
			dst = strconv.AppendInt(append(dst, `{"time":[`...), v.Unix(), 10)
			dst = strconv.AppendInt(append(dst, ','), int64(v.Nanosecond()), 10)
			switch name, offset, kind := zoneOf(v); kind {
			case zoneUTC:
				dst = append(dst, `],"zone":"UTC"}`...)
			case zoneLocal:
				dst = append(dst, `],"zone":"Local"}`...)
			default:
				b, err := json.Marshal(name)
				if err != nil {
					return dst, fmt.Errorf("column %d: zone: %w", i, err)
				}
				dst = strconv.AppendInt(append(append(append(dst, `],"zone":`...), b...), `,"offset":`...), int64(offset), 10)
				dst = append(dst, '}')
			}
		default:
			return dst, fmt.Errorf("column %d: %T is not a driver value", i, v)
		}
	}
	return append(dst, ']'), nil
}

// jsonTagged is the object form of a JSON column.
type jsonTagged struct {
	Float  *string   `json:"float"`
	Bytes  *[]byte   `json:"bytes"`
	Str    *[]byte   `json:"str"`
	Time   *[2]int64 `json:"time"`
	Zone   string    `json:"zone"`
	Offset int       `json:"offset"`
}

func (JSON) DecodeColumns(data []byte, cols []driver.Value) error {
	var raw []json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return fmt.Errorf("%w: %w", errColumns, err)
	}
	if len(raw) != len(cols) {
		return fmt.Errorf("%w: %d columns, want %d", errColumns, len(raw), len(cols))
	}
	for i, r := range raw {
		v, err := decodeJSONColumn(r)
		if err != nil {
			return fmt.Errorf("%w: column %d: %w", errColumns, i, err)
		}
		cols[i] = v
	}
	return nil
}

func decodeJSONColumn(r json.RawMessage) (driver.Value, error) {
	switch r[0] {
	case 'n':
		return nil, nil
	case 't', 'f':
		var b bool
		err := json.Unmarshal(r, &b)
		return b, err
	case '"':
		var s string
		err := json.Unmarshal(r, &s)
		return s, err
	case '{':
		var t jsonTagged
		if err := json.Unmarshal(r, &t); err != nil {
			return nil, err
		}
		switch {
		case t.Float != nil:
			return strconv.ParseFloat(*t.Float, 64)
		case t.Bytes != nil:
			return *t.Bytes, nil
		case t.Str != nil:
			return string(*t.Str), nil
		case t.Time != nil:
			tm := time.Unix(t.Time[0], t.Time[1])
			switch t.Zone {
			case "UTC":
				return tm.UTC(), nil
			case "Local":
				return tm, nil
			}
			return tm.In(time.FixedZone(t.Zone, t.Offset)), nil
		}
		return nil, fmt.Errorf("object %s names no type", r)
	}
	if bytes.ContainsAny(r, ".eE") {
		return strconv.ParseFloat(string(r), 64)
	}
	return strconv.ParseInt(string(r), 10, 64)
}

// Msgpack encodes the column record as a MessagePack array
// (github.com/vmihailenco/msgpack/v5): str for strings (whatever their bytes), bin for
// []byte, float 64 for floats, and a time as the array [seconds, nanoseconds, zone,
// offset], zone "UTC", "Local" or the fixed zone's name.
type Msgpack struct{}

func (Msgpack) Name() string { return "msgpack2" }

func (Msgpack) AppendColumns(dst []byte, cols []driver.Value) ([]byte, error) {
	buf := bytes.NewBuffer(dst)
	enc := msgpack.GetEncoder()
	defer msgpack.PutEncoder(enc)
	enc.Reset(buf)
	if err := enc.EncodeArrayLen(len(cols)); err != nil {
		return dst, err
	}
	for i, v := range cols {
		var err error
		switch v := v.(type) {
		case nil:
			err = enc.EncodeNil()
		case bool:
			err = enc.EncodeBool(v)
		case int64:
			err = enc.EncodeInt(v)
		case float64:
			err = enc.EncodeFloat64(v)
		case string:
			err = enc.EncodeString(v)
		case []byte:
			if v == nil {
				v = []byte{} // a nil []byte is msgpack's nil
			}
			err = enc.EncodeBytes(v)
		case time.Time:
			name, offset, kind := zoneOf(v)
			switch kind {
			case zoneUTC:
				name = "UTC"
			case zoneLocal:
				name = "Local"
			}
			err = errors.Join(enc.EncodeArrayLen(4), enc.EncodeInt(v.Unix()), enc.EncodeInt(int64(v.Nanosecond())),
				enc.EncodeString(name), enc.EncodeInt(int64(offset)))
		default:
			err = fmt.Errorf("%T is not a driver value", v)
		}
		if err != nil {
			return dst, fmt.Errorf("column %d: %w", i, err)
		}
	}
	return buf.Bytes(), nil
}

func (Msgpack) DecodeColumns(data []byte, cols []driver.Value) error {
	dec := msgpack.GetDecoder()
	defer msgpack.PutDecoder(dec)
	r := bytes.NewReader(data)
	dec.Reset(r)
	n, err := dec.DecodeArrayLen()
	if err != nil {
		return fmt.Errorf("%w: %w", errColumns, err)
	}
	if n != len(cols) {
		return fmt.Errorf("%w: %d columns, want %d", errColumns, n, len(cols))
	}
	for i := range cols {
		if cols[i], err = decodeMsgpackColumn(dec); err != nil {
			return fmt.Errorf("%w: column %d: %w", errColumns, i, err)
		}
	}
	if r.Len() != 0 {
		return fmt.Errorf("%w: %d bytes after %d columns", errColumns, r.Len(), len(cols))
	}
	return nil
}

func decodeMsgpackColumn(dec *msgpack.Decoder) (driver.Value, error) {
	c, err := dec.PeekCode()
	if err != nil {
		return nil, err
	}
	switch {
	case c == msgpcode.Nil:
		return nil, dec.DecodeNil()
	case c == msgpcode.True || c == msgpcode.False:
		return dec.DecodeBool()
	case c == msgpcode.Double:
		return dec.DecodeFloat64()
	case msgpcode.IsString(c):
		return dec.DecodeString()
	case msgpcode.IsBin(c):
		b, err := dec.DecodeBytes()
		if b == nil {
			b = []byte{} // NULL is msgpack's nil, decoded above
		}
		return b, err
	case msgpcode.IsFixedArray(c):
		n, err := dec.DecodeArrayLen()
		if err != nil || n != 4 {
			return nil, fmt.Errorf("time: array of %d, want 4 (%v)", n, err)
		}
		sec, err1 := dec.DecodeInt64()
		nsec, err2 := dec.DecodeInt64()
		zone, err3 := dec.DecodeString()
		offset, err4 := dec.DecodeInt64()
		if err := errors.Join(err1, err2, err3, err4); err != nil {
			return nil, fmt.Errorf("time: %w", err)
		}
		t := time.Unix(sec, nsec)
		switch zone {
		case "UTC":
			return t.UTC(), nil
		case "Local":
			return t, nil
		}
		return t.In(time.FixedZone(zone, int(offset))), nil
	case msgpcode.IsFixedNum(c) || c == msgpcode.Int8 || c == msgpcode.Int16 || c == msgpcode.Int32 || c == msgpcode.Int64 ||
		c == msgpcode.Uint8 || c == msgpcode.Uint16 || c == msgpcode.Uint32 || c == msgpcode.Uint64:
		return dec.DecodeInt64()
	}
	return nil, fmt.Errorf("unexpected code %#x", c)
}
