package keys_test

import (
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"math"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgcache/pgcache/keys"
)

// Go types as models declare them.
type (
	smallID  int16
	bigID    uint64
	name     string
	blob     []byte
	uuidType [16]byte // like google/uuid.UUID
	status   int      // an enum with a String method, stored as its number
	decimal  struct{ s string }
	valuer   struct {
		v   driver.Value
		err error
	}
	loopValuer struct{}
)

func (u uuidType) String() string { return "not used: the array comes first" }
func (s status) String() string   { return "active" }
func (d decimal) String() string  { return d.s }
func (v valuer) Value() (driver.Value, error) {
	return v.v, v.err
}
func (loopValuer) Value() (driver.Value, error) { return loopValuer{}, nil }

var errValuer = errors.New("valuer failed")

func ptr[T any](v T) *T { return &v }

var testUUID = uuidType{0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38, 0x0a, 0x11}

const testUUIDText = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"

func TestKindString(t *testing.T) {
	for k, want := range map[keys.Kind]string{
		keys.Text: "text", keys.Int: "int", keys.UUID: "uuid", keys.Numeric: "numeric", keys.Bytes: "bytes", keys.Char: "char", 9: "Kind(9)",
	} {
		if got := k.String(); got != want {
			t.Errorf("Kind(%d).String() = %q, want %q", k, got, want)
		}
	}
}

func TestKindOf(t *testing.T) {
	for _, tt := range []struct {
		oid  uint32
		want keys.Kind
	}{
		{20, keys.Int}, {21, keys.Int}, {23, keys.Int}, {26, keys.Int},
		{2950, keys.UUID}, {1700, keys.Numeric}, {17, keys.Bytes},
		{25, keys.Text}, {1043, keys.Text}, {1042, keys.Char}, {0, keys.Text}, {16, keys.Text},
	} {
		if got := keys.KindOf(tt.oid); got != tt.want {
			t.Errorf("KindOf(%d) = %v, want %v", tt.oid, got, tt.want)
		}
	}
}

func TestKindOfType(t *testing.T) {
	for _, tt := range []struct {
		name string
		want keys.Kind
		ok   bool
	}{
		{"bigint", keys.Int, true}, {"int8", keys.Int, true}, {"INTEGER", keys.Int, true}, {"smallint", keys.Int, true},
		{"uuid", keys.UUID, true}, {"numeric(10,2)", keys.Numeric, true}, {"NUMERIC", keys.Numeric, true},
		{"bytea", keys.Bytes, true}, {"character(8)", keys.Char, true}, {"bpchar", keys.Char, true},
		{"text", keys.Text, true}, {"character varying(20)", keys.Text, true}, {"varchar", keys.Text, true},
		{"citext", keys.Text, false}, {"double precision", keys.Text, false}, {"timestamp with time zone", keys.Text, false},
		{"date", keys.Text, false},
	} {
		if got, ok := keys.KindOfType(tt.name); got != tt.want || ok != tt.ok {
			t.Errorf("KindOfType(%q) = %v, %v; want %v, %v", tt.name, got, ok, tt.want, tt.ok)
		}
	}
}

// TestChar: char(n) values are compared without their padding, so the key is too.
func TestChar(t *testing.T) {
	for _, in := range []any{"abc", "abc     ", ptr("abc  ")} {
		got, err := keys.FromGo(keys.Char, in)
		if err != nil || got != "abc" {
			t.Errorf("FromGo(Char, %#v) = %q, %v; want \"abc\"", in, got, err)
		}
	}
	if got, _ := keys.FromText(keys.Char, "abc     "); got != "abc" {
		t.Errorf("FromText(Char, padded) = %q, want \"abc\"", got)
	}
	if got, _ := keys.FromText(keys.Char, " a b "); got != " a b" {
		t.Errorf("FromText(Char) trimmed leading or inner spaces: %q", got)
	}
}

func TestOrder(t *testing.T) {
	for _, tt := range []struct {
		cols []string
		want []int
	}{
		{[]string{"id"}, []int{0}},
		{[]string{"order_id", "line_no"}, []int{1, 0}},
		{[]string{"line_no", "order_id"}, []int{0, 1}},
		{[]string{"b", "C", "a"}, []int{1, 2, 0}}, // bytewise: upper case first
	} {
		if got := keys.Order(tt.cols); !slices.Equal(got, tt.want) {
			t.Errorf("Order(%q) = %v, want %v", tt.cols, got, tt.want)
		}
	}
}

func TestFromText(t *testing.T) {
	for _, tt := range []struct {
		kind    keys.Kind
		in      string
		want    string
		wantErr error
	}{
		// Text keeps every byte.
		{kind: keys.Text, in: "", want: ""},
		{kind: keys.Text, in: "a,b", want: "a,b"},
		{kind: keys.Text, in: `{}|%:*?[]\~`, want: `{}|%:*?[]\~`},
		{kind: keys.Text, in: `"quoted" it's`, want: `"quoted" it's`},
		{kind: keys.Text, in: "ünïcødé 日本", want: "ünïcødé 日本"},
		{kind: keys.Text, in: "\x00\xff\n", want: "\x00\xff\n"},
		{kind: keys.Text, in: " 007 ", want: " 007 "},

		{kind: keys.Int, in: "0", want: "0"},
		{kind: keys.Int, in: "42", want: "42"},
		{kind: keys.Int, in: "-42", want: "-42"},
		{kind: keys.Int, in: "+42", want: "42"},
		{kind: keys.Int, in: "007", want: "7"},
		{kind: keys.Int, in: "-007", want: "-7"},
		{kind: keys.Int, in: "-0", want: "0"},
		{kind: keys.Int, in: "+0", want: "0"},
		{kind: keys.Int, in: "000", want: "0"},
		{kind: keys.Int, in: "9223372036854775807", want: "9223372036854775807"},
		{kind: keys.Int, in: "-9223372036854775808", want: "-9223372036854775808"},
		{kind: keys.Int, in: "18446744073709551615", want: "18446744073709551615"},
		{kind: keys.Int, in: "4294967295", want: "4294967295"}, // oid max
		{kind: keys.Int, in: "", wantErr: keys.ErrBadValue},
		{kind: keys.Int, in: "12x", wantErr: keys.ErrBadValue},
		{kind: keys.Int, in: " 1", wantErr: keys.ErrBadValue},
		{kind: keys.Int, in: "1.0", wantErr: keys.ErrBadValue},
		{kind: keys.Int, in: "1_000", wantErr: keys.ErrBadValue},
		{kind: keys.Int, in: "0x10", wantErr: keys.ErrBadValue},
		{kind: keys.Int, in: "-", wantErr: keys.ErrBadValue},
		{kind: keys.Int, in: "+-1", wantErr: keys.ErrBadValue},
		{kind: keys.Int, in: "18446744073709551616", wantErr: keys.ErrBadValue},
		{kind: keys.Int, in: "-9223372036854775809", wantErr: keys.ErrBadValue},

		{kind: keys.UUID, in: testUUIDText, want: testUUIDText},
		{kind: keys.UUID, in: "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11", want: testUUIDText},
		{kind: keys.UUID, in: "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}", want: testUUIDText},
		{kind: keys.UUID, in: "a0eebc999c0b4ef8bb6d6bb9bd380a11", want: testUUIDText},
		{kind: keys.UUID, in: "a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11", want: testUUIDText},
		{kind: keys.UUID, in: "{a0eebc999c0b4ef8bb6d6bb9bd380a11}", want: testUUIDText},
		{kind: keys.UUID, in: "", wantErr: keys.ErrBadValue},
		{kind: keys.UUID, in: "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1", wantErr: keys.ErrBadValue},
		{kind: keys.UUID, in: "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a111", wantErr: keys.ErrBadValue},
		{kind: keys.UUID, in: "g0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", wantErr: keys.ErrBadValue},
		{kind: keys.UUID, in: "-a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", wantErr: keys.ErrBadValue},
		{kind: keys.UUID, in: "a0eebc99--9c0b-4ef8-bb6d-6bb9bd380a11", wantErr: keys.ErrBadValue},
		{kind: keys.UUID, in: "a0eebc9-99c0b-4ef8-bb6d-6bb9bd380a11", wantErr: keys.ErrBadValue},
		{kind: keys.UUID, in: "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11-", wantErr: keys.ErrBadValue},
		{kind: keys.UUID, in: "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", wantErr: keys.ErrBadValue},
		{kind: keys.UUID, in: "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}", wantErr: keys.ErrBadValue},

		{kind: keys.Numeric, in: "12.5", want: "12.5"},
		{kind: keys.Numeric, in: "12.50", want: "12.5"},
		{kind: keys.Numeric, in: "012.5", want: "12.5"},
		{kind: keys.Numeric, in: "-12.500", want: "-12.5"},
		{kind: keys.Numeric, in: "+12.5", want: "12.5"},
		{kind: keys.Numeric, in: "100", want: "100"},
		{kind: keys.Numeric, in: "100.000", want: "100"},
		{kind: keys.Numeric, in: "5.", want: "5"},
		{kind: keys.Numeric, in: ".5", want: "0.5"},
		{kind: keys.Numeric, in: "-.5", want: "-0.5"},
		{kind: keys.Numeric, in: "0.001", want: "0.001"},
		{kind: keys.Numeric, in: "000.00100", want: "0.001"},
		{kind: keys.Numeric, in: "0", want: "0"},
		{kind: keys.Numeric, in: "-0", want: "0"},
		{kind: keys.Numeric, in: "-0.000", want: "0"},
		{kind: keys.Numeric, in: "0e10", want: "0"},
		{kind: keys.Numeric, in: "1e3", want: "1000"},
		{kind: keys.Numeric, in: "1.5E-3", want: "0.0015"},
		{kind: keys.Numeric, in: "-12.5e+1", want: "-125"},
		{kind: keys.Numeric, in: "123.456e2", want: "12345.6"},
		{kind: keys.Numeric, in: "99999999999999999999999999999.000000000000000000001", want: "99999999999999999999999999999.000000000000000000001"},
		{kind: keys.Numeric, in: "NaN", want: "NaN"},
		{kind: keys.Numeric, in: "nan", want: "NaN"},
		{kind: keys.Numeric, in: "Infinity", want: "Infinity"},
		{kind: keys.Numeric, in: "+inf", want: "Infinity"},
		{kind: keys.Numeric, in: "-Infinity", want: "-Infinity"},
		{kind: keys.Numeric, in: "-INF", want: "-Infinity"},
		{kind: keys.Numeric, in: "", wantErr: keys.ErrBadValue},
		{kind: keys.Numeric, in: ".", wantErr: keys.ErrBadValue},
		{kind: keys.Numeric, in: "-", wantErr: keys.ErrBadValue},
		{kind: keys.Numeric, in: "12x", wantErr: keys.ErrBadValue},
		{kind: keys.Numeric, in: "1.2.3", wantErr: keys.ErrBadValue},
		{kind: keys.Numeric, in: "--1", wantErr: keys.ErrBadValue},
		{kind: keys.Numeric, in: " 1", wantErr: keys.ErrBadValue},
		{kind: keys.Numeric, in: "1e", wantErr: keys.ErrBadValue},
		{kind: keys.Numeric, in: "e5", wantErr: keys.ErrBadValue},
		{kind: keys.Numeric, in: "1e1001", wantErr: keys.ErrBadValue},
		{kind: keys.Numeric, in: "1e99999999999999999999", wantErr: keys.ErrBadValue},
		{kind: keys.Numeric, in: "+NaN", wantErr: keys.ErrBadValue},
		{kind: keys.Numeric, in: "1_000", wantErr: keys.ErrBadValue},

		{kind: keys.Bytes, in: `\xdeadbeef`, want: `\xdeadbeef`},
		{kind: keys.Bytes, in: `\xDEADbeef`, want: `\xdeadbeef`},
		{kind: keys.Bytes, in: `\x`, want: `\x`},
		{kind: keys.Bytes, in: "\\xde ad\n", want: `\xdead`},
		{kind: keys.Bytes, in: "", want: `\x`},
		{kind: keys.Bytes, in: "abc", want: `\x616263`},
		{kind: keys.Bytes, in: `a\\b`, want: `\x615c62`},
		{kind: keys.Bytes, in: `\000\377`, want: `\x00ff`},
		{kind: keys.Bytes, in: `\xabc`, wantErr: keys.ErrBadValue},
		{kind: keys.Bytes, in: `\xzz`, wantErr: keys.ErrBadValue},
		{kind: keys.Bytes, in: `\xa b`, wantErr: keys.ErrBadValue},
		{kind: keys.Bytes, in: `\400`, wantErr: keys.ErrBadValue},
		{kind: keys.Bytes, in: `\`, wantErr: keys.ErrBadValue},
		{kind: keys.Bytes, in: `\q`, wantErr: keys.ErrBadValue},
		{kind: keys.Bytes, in: `\00`, wantErr: keys.ErrBadValue},

		{kind: 9, in: "1", wantErr: keys.ErrBadValue},
	} {
		got, err := keys.FromText(tt.kind, tt.in)
		if tt.wantErr != nil {
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("FromText(%v, %q) = %q, %v; want error %v", tt.kind, tt.in, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("FromText(%v, %q) = %q, %v; want %q", tt.kind, tt.in, got, err, tt.want)
		}
	}
}

func TestFromTextErrorNamesKindAndValue(t *testing.T) {
	_, err := keys.FromText(keys.Int, "12x")
	if err == nil || !strings.Contains(err.Error(), "int") || !strings.Contains(err.Error(), `"12x"`) {
		t.Errorf("FromText(Int, 12x) error = %v; want it to name the kind and the value", err)
	}
	_, err = keys.FromText(keys.UUID, strings.Repeat("z", 1000))
	if err == nil || len(err.Error()) > 200 {
		t.Errorf("error for a long value = %v; want it cut short", err)
	}
}

func TestFromGo(t *testing.T) {
	for _, tt := range []struct {
		kind    keys.Kind
		in      any
		want    string
		wantErr error
	}{
		{kind: keys.Int, in: 42, want: "42"},
		{kind: keys.Int, in: int8(-128), want: "-128"},
		{kind: keys.Int, in: int16(-5), want: "-5"},
		{kind: keys.Int, in: int32(math.MinInt32), want: "-2147483648"},
		{kind: keys.Int, in: int64(math.MaxInt64), want: "9223372036854775807"},
		{kind: keys.Int, in: int64(math.MinInt64), want: "-9223372036854775808"},
		{kind: keys.Int, in: uint(7), want: "7"},
		{kind: keys.Int, in: uint8(255), want: "255"},
		{kind: keys.Int, in: uint16(65535), want: "65535"},
		{kind: keys.Int, in: uint32(math.MaxUint32), want: "4294967295"},
		{kind: keys.Int, in: uint64(math.MaxUint64), want: "18446744073709551615"},
		{kind: keys.Int, in: uintptr(9), want: "9"},
		{kind: keys.Int, in: smallID(-3), want: "-3"},
		{kind: keys.Int, in: bigID(math.MaxUint64), want: "18446744073709551615"},
		{kind: keys.Int, in: status(2), want: "2"},
		{kind: keys.Int, in: ptr(int64(5)), want: "5"},
		{kind: keys.Int, in: ptr(ptr(6)), want: "6"},
		{kind: keys.Int, in: ptr(smallID(7)), want: "7"},
		{kind: keys.Int, in: "007", want: "7"},
		{kind: keys.Int, in: name("8"), want: "8"},
		{kind: keys.Int, in: json.Number("9"), want: "9"},
		{kind: keys.Int, in: []byte("10"), want: "10"},
		{kind: keys.Int, in: float64(3), want: "3"},
		{kind: keys.Int, in: sql.NullInt64{Int64: 11, Valid: true}, want: "11"},
		{kind: keys.Int, in: valuer{v: int64(12)}, want: "12"},
		{kind: keys.Int, in: big.NewInt(13), want: "13"},
		{kind: keys.Int, in: decimal{"14"}, want: "14"},
		{kind: keys.Int, in: nil, wantErr: keys.ErrBadValue},
		{kind: keys.Int, in: (*int64)(nil), wantErr: keys.ErrBadValue},
		{kind: keys.Int, in: (*big.Int)(nil), wantErr: keys.ErrBadValue},
		{kind: keys.Int, in: (*valuer)(nil), wantErr: keys.ErrBadValue},
		{kind: keys.Int, in: sql.NullInt64{}, wantErr: keys.ErrBadValue},
		{kind: keys.Int, in: valuer{err: errValuer}, wantErr: errValuer},
		{kind: keys.Int, in: valuer{err: errValuer}, wantErr: keys.ErrBadValue},
		{kind: keys.Int, in: "12x", wantErr: keys.ErrBadValue},
		{kind: keys.Int, in: 1.5, wantErr: keys.ErrBadValue},
		{kind: keys.Int, in: true, wantErr: keys.ErrUnsupportedType},
		{kind: keys.Int, in: testUUID, wantErr: keys.ErrUnsupportedType},
		{kind: keys.Int, in: struct{}{}, wantErr: keys.ErrUnsupportedType},
		{kind: keys.Int, in: map[string]int{}, wantErr: keys.ErrUnsupportedType},
		{kind: keys.Int, in: []int{1}, wantErr: keys.ErrUnsupportedType},
		{kind: keys.Int, in: loopValuer{}, wantErr: keys.ErrUnsupportedType},
		{kind: keys.Int, in: time.Unix(0, 0), wantErr: keys.ErrUnsupportedType},

		{kind: keys.Text, in: "", want: ""},
		{kind: keys.Text, in: "a,b{c}", want: "a,b{c}"},
		{kind: keys.Text, in: name("ünï"), want: "ünï"},
		{kind: keys.Text, in: []byte("raw"), want: "raw"},
		{kind: keys.Text, in: 42, want: "42"},
		{kind: keys.Text, in: uint64(math.MaxUint64), want: "18446744073709551615"},
		{kind: keys.Text, in: true, want: "t"},
		{kind: keys.Text, in: false, want: "f"},
		{kind: keys.Text, in: testUUID, want: testUUIDText},
		{kind: keys.Text, in: sql.NullString{String: "x", Valid: true}, want: "x"},
		{kind: keys.Text, in: ptr("p"), want: "p"},
		{kind: keys.Text, in: 1.5, wantErr: keys.ErrUnsupportedType},
		{kind: keys.Text, in: time.Now(), wantErr: keys.ErrUnsupportedType},
		{kind: keys.Text, in: (*string)(nil), wantErr: keys.ErrBadValue},

		{kind: keys.UUID, in: [16]byte(testUUID), want: testUUIDText},
		{kind: keys.UUID, in: testUUID, want: testUUIDText},
		{kind: keys.UUID, in: &testUUID, want: testUUIDText},
		{kind: keys.UUID, in: testUUID[:], want: testUUIDText},
		{kind: keys.UUID, in: testUUIDText, want: testUUIDText},
		{kind: keys.UUID, in: strings.ToUpper(testUUIDText), want: testUUIDText},
		{kind: keys.UUID, in: "{A0EEBC999C0B4EF8BB6D6BB9BD380A11}", want: testUUIDText},
		{kind: keys.UUID, in: []byte(testUUIDText), want: testUUIDText},
		{kind: keys.UUID, in: valuer{v: testUUIDText}, want: testUUIDText},
		{kind: keys.UUID, in: "nope", wantErr: keys.ErrBadValue},
		{kind: keys.UUID, in: []byte{1, 2, 3}, wantErr: keys.ErrBadValue},
		{kind: keys.UUID, in: 42, wantErr: keys.ErrUnsupportedType},
		{kind: keys.UUID, in: 1.0, wantErr: keys.ErrUnsupportedType},

		{kind: keys.Numeric, in: 42, want: "42"},
		{kind: keys.Numeric, in: int64(math.MinInt64), want: "-9223372036854775808"},
		{kind: keys.Numeric, in: uint64(math.MaxUint64), want: "18446744073709551615"},
		{kind: keys.Numeric, in: "12.50", want: "12.5"},
		{kind: keys.Numeric, in: decimal{"-012.500"}, want: "-12.5"},
		{kind: keys.Numeric, in: 12.5, want: "12.5"},
		{kind: keys.Numeric, in: 0.1, want: "0.1"},
		{kind: keys.Numeric, in: float32(0.1), want: "0.1"},
		{kind: keys.Numeric, in: 1e21, want: "1000000000000000000000"},
		{kind: keys.Numeric, in: math.Copysign(0, -1), want: "0"},
		{kind: keys.Numeric, in: math.NaN(), want: "NaN"},
		{kind: keys.Numeric, in: math.Inf(-1), want: "-Infinity"},
		{kind: keys.Numeric, in: big.NewFloat(2.5), want: "2.5"},
		{kind: keys.Numeric, in: new(big.Float).SetPrec(200).SetInt64(12345678901234), want: "12345678901234"},
		{kind: keys.Numeric, in: big.NewInt(-7), want: "-7"},
		{kind: keys.Numeric, in: big.NewRat(1, 3), wantErr: keys.ErrBadValue},
		{kind: keys.Numeric, in: valuer{v: "3.140"}, want: "3.14"},
		{kind: keys.Numeric, in: valuer{v: []byte("3.140")}, want: "3.14"},
		{kind: keys.Numeric, in: valuer{v: 2.5}, want: "2.5"},
		{kind: keys.Numeric, in: true, wantErr: keys.ErrUnsupportedType},
		{kind: keys.Numeric, in: testUUID, wantErr: keys.ErrUnsupportedType},

		{kind: keys.Bytes, in: []byte{0xde, 0xad, 0xbe, 0xef}, want: `\xdeadbeef`},
		{kind: keys.Bytes, in: []byte{}, want: `\x`},
		{kind: keys.Bytes, in: blob{0, 1}, want: `\x0001`},
		{kind: keys.Bytes, in: ptr([]byte{0xff}), want: `\xff`},
		{kind: keys.Bytes, in: testUUID, want: `\xa0eebc999c0b4ef8bb6d6bb9bd380a11`},
		{kind: keys.Bytes, in: `\xDEAD`, want: `\xdead`},
		{kind: keys.Bytes, in: "ab", want: `\x6162`},
		{kind: keys.Bytes, in: 1, wantErr: keys.ErrUnsupportedType},
		{kind: keys.Bytes, in: `\x1`, wantErr: keys.ErrBadValue},

		{kind: 9, in: 1, wantErr: keys.ErrBadValue},
	} {
		got, err := keys.FromGo(tt.kind, tt.in)
		if tt.wantErr != nil {
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("FromGo(%v, %#v) = %q, %v; want error %v", tt.kind, tt.in, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("FromGo(%v, %#v) = %q, %v; want %q", tt.kind, tt.in, got, err, tt.want)
		}
	}
}

func TestFromGoErrorNamesType(t *testing.T) {
	_, err := keys.FromGo(keys.Int, struct{ X int }{})
	if !errors.Is(err, keys.ErrUnsupportedType) || !strings.Contains(err.Error(), "struct { X int }") {
		t.Errorf("FromGo(Int, struct) error = %v; want ErrUnsupportedType naming the type", err)
	}
}

// TestGoTextEquivalence checks that the read side, holding Go values, and the
// change side, holding what Postgres prints for the same column, agree.
func TestGoTextEquivalence(t *testing.T) {
	for _, tt := range []struct {
		kind     keys.Kind
		goValue  any
		pgOutput string // as Postgres prints the stored value
	}{
		{keys.Int, int64(math.MinInt64), "-9223372036854775808"},
		{keys.Int, int64(math.MaxInt64), "9223372036854775807"},
		{keys.Int, int32(-1), "-1"},
		{keys.Int, int16(0), "0"},
		{keys.Int, uint32(math.MaxUint32), "4294967295"},
		{keys.Int, smallID(12), "12"},
		{keys.Int, status(3), "3"},
		{keys.Int, sql.NullInt64{Int64: 4, Valid: true}, "4"},
		{keys.Text, "", ""},
		{keys.Text, "Ann, \"the\" {boss} | 100% ünï\t日本", "Ann, \"the\" {boss} | 100% ünï\t日本"},
		{keys.Text, name("x"), "x"},
		{keys.UUID, testUUID, testUUIDText},
		{keys.UUID, [16]byte{}, "00000000-0000-0000-0000-000000000000"},
		{keys.UUID, "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11", testUUIDText},
		{keys.Numeric, 12.5, "12.50"},
		{keys.Numeric, decimal{"12.5"}, "12.5000"},
		{keys.Numeric, -7, "-7.00"},
		{keys.Numeric, int64(0), "0.000"},
		{keys.Numeric, uint64(math.MaxUint64), "18446744073709551615"},
		{keys.Numeric, "NaN", "NaN"},
		{keys.Bytes, []byte{0, 0x7f, 0xff}, `\x007fff`},
		{keys.Bytes, []byte(nil), `\x`},
	} {
		fromGo, err := keys.FromGo(tt.kind, tt.goValue)
		if err != nil {
			t.Errorf("FromGo(%v, %#v): %v", tt.kind, tt.goValue, err)
			continue
		}
		fromText, err := keys.FromText(tt.kind, tt.pgOutput)
		if err != nil {
			t.Errorf("FromText(%v, %q): %v", tt.kind, tt.pgOutput, err)
			continue
		}
		if fromGo != fromText {
			t.Errorf("%v: FromGo(%#v) = %q but FromText(%q) = %q", tt.kind, tt.goValue, fromGo, tt.pgOutput, fromText)
		}
	}
}

func TestNewSpace(t *testing.T) {
	for _, tt := range []struct {
		prefix, table, version string
		ok                     bool
	}{
		{"app:", "public.users", "v1", true},
		{"a", "t", "1", true},
		{"my-app.cache_2:", `Sales."Order Items"`, "3f9a2c.v2_x-y", true},
		{"p", "{}|,%:*?[]\\~ \x00\xff", "v", true},
		{strings.Repeat("p", 64), "t", strings.Repeat("v", 64), true},
		{"", "t", "v", false},
		{strings.Repeat("p", 65), "t", "v", false},
		{"app{", "t", "v", false},
		{"app}", "t", "v", false},
		{"app*", "t", "v", false},
		{"app?", "t", "v", false},
		{"a[b]", "t", "v", false},
		{`a\b`, "t", "v", false},
		{"a b", "t", "v", false},
		{"a|b", "t", "v", false},
		{"é", "t", "v", false},
		{"p", "", "v", false},
		{"p", "t", "", false},
		{"p", "t", "v:1", false},
		{"p", "t", "v|1", false},
		{"p", "t", "v}", false},
		{"p", "t", strings.Repeat("v", 65), false},
	} {
		s, err := keys.NewSpace(tt.prefix, tt.table, tt.version)
		if !tt.ok {
			if !errors.Is(err, keys.ErrBadSpace) {
				t.Errorf("NewSpace(%q, %q, %q) error = %v; want ErrBadSpace", tt.prefix, tt.table, tt.version, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("NewSpace(%q, %q, %q): %v", tt.prefix, tt.table, tt.version, err)
			continue
		}
		if s.Prefix() != tt.prefix || s.Table() != tt.table || s.Version() != tt.version {
			t.Errorf("NewSpace(%q, %q, %q) = %q, %q, %q", tt.prefix, tt.table, tt.version, s.Prefix(), s.Table(), s.Version())
		}
	}
}

func TestNewSpaceErrorSaysWhatToFix(t *testing.T) {
	_, err := keys.NewSpace("app*", "t", "v")
	if err == nil || !strings.Contains(err.Error(), "prefix") || !strings.Contains(err.Error(), "A-Za-z0-9") {
		t.Errorf("error = %v; want it to name the prefix and the allowed characters", err)
	}
}

func mustSpace(tb testing.TB, prefix, table, version string) keys.Space {
	tb.Helper()
	s, err := keys.NewSpace(prefix, table, version)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

func TestKey(t *testing.T) {
	users := mustSpace(t, "app:", "public.users", "v1")
	items := mustSpace(t, "app:", `Sales."Order Items"`, "v2")
	for _, tt := range []struct {
		space keys.Space
		pk    []string
		want  string
	}{
		{users, []string{"42"}, "app:{public.users|v1|42}:v"},
		{users, []string{"-9223372036854775808"}, "app:{public.users|v1|-9223372036854775808}:v"},
		{users, []string{testUUIDText}, "app:{public.users|v1|" + testUUIDText + "}:v"},
		{users, []string{"12.5"}, "app:{public.users|v1|12.5}:v"},
		{users, []string{`\xdead`}, "app:{public.users|v1|%5Cxdead}:v"},
		{users, []string{"a", "b"}, "app:{public.users|v1|a,b}:v"},
		{users, []string{"a,b"}, "app:{public.users|v1|a%2Cb}:v"},
		{users, []string{"a", ""}, "app:{public.users|v1|a,~}:v"},
		{users, []string{""}, "app:{public.users|v1|~}:v"},
		{users, []string{"~"}, "app:{public.users|v1|%7E}:v"},
		{users, nil, "app:{public.users|v1|}:v"},
		{users, []string{"{x}|y:z*?[]\\%"}, "app:{public.users|v1|%7Bx%7D%7Cy%3Az%2A%3F%5B%5D%5C%25}:v"},
		{users, []string{"a b\x00\x7f"}, "app:{public.users|v1|a%20b%00%7F}:v"},
		{users, []string{"é"}, "app:{public.users|v1|%C3%A9}:v"},
		{users, []string{`"O'Brien"!@#$^&()=+/;<>`}, `app:{public.users|v1|"O'Brien"!@#$^&()=+/;<>}:v`},
		{items, []string{"7", "x"}, `app:{Sales."Order%20Items"|v2|7,x}:v`},
	} {
		k := tt.space.Key(tt.pk...)
		if k.Value() != tt.want || k.String() != tt.want {
			t.Errorf("Key(%q) = %q, want %q", tt.pk, k.Value(), tt.want)
		}
		wantFence := strings.TrimSuffix(tt.want, ":v") + ":f"
		if k.Fence() != wantFence {
			t.Errorf("Key(%q).Fence() = %q, want %q", tt.pk, k.Fence(), wantFence)
		}
		if keys.HashSlot(k.Value()) != keys.HashSlot(k.Fence()) {
			t.Errorf("Key(%q): value and fence in slots %d and %d", tt.pk, keys.HashSlot(k.Value()), keys.HashSlot(k.Fence()))
		}
		s, pk, err := keys.ParseKey(k.Fence())
		if err != nil || s != tt.space || !slices.Equal(pk, tt.pk) {
			t.Errorf("ParseKey(%q) = %v, %q, %v; want %v, %q", k.Fence(), s, pk, err, tt.space, tt.pk)
		}
	}
}

// TestKeyInjective checks primary-key lists that a naive encoding confuses.
func TestKeyInjective(t *testing.T) {
	s := mustSpace(t, "p", "t", "v")
	lists := [][]string{
		{}, {""}, {"", ""}, {"", "", ""}, {"a"}, {"a", ""}, {"", "a"}, {"a,"}, {",a"}, {","},
		{"~"}, {"%7E"}, {"%"}, {"%25"}, {"a", "b"}, {"a,b"}, {"a|b"}, {"a", "b", "c"}, {"a,b", "c"}, {"a", "b,c"},
		{"}"}, {"}:v"}, {"a}:v{b"}, {"1"}, {"01"}, {"1", "2"}, {"12"},
	}
	seen := map[string][]string{}
	for _, pk := range lists {
		v := s.Key(pk...).Value()
		if prev, ok := seen[v]; ok {
			t.Errorf("Key(%q) = Key(%q) = %q", pk, prev, v)
		}
		seen[v] = pk
	}
	// Nor do keys of spaces that share a prefix of their parts collide.
	a := mustSpace(t, "p", "t", "v").Key("1").Value()
	b := mustSpace(t, "p", "t|v", "v").Key().Value()
	if a == b {
		t.Errorf("keys of different spaces collide: %q", a)
	}
}

func TestZeroValues(t *testing.T) {
	var s keys.Space
	if k := s.Key("1"); k.Value() != "" || k.Fence() != "" || s.Pattern() != "" {
		t.Errorf("zero Space: Key = %q, %q; Pattern = %q; want empty", k.Value(), k.Fence(), s.Pattern())
	}
	var k keys.Key
	if k.Value() != "" || k.Fence() != "" || k.String() != "" {
		t.Errorf("zero Key not empty")
	}
}

func TestParseKeyErrors(t *testing.T) {
	for _, key := range []string{
		"",
		"nokey",
		"app:{t|v|1}",
		"app:{t|v|1}:x",
		"app:{t|v|1}:vv",
		"app:t|v|1}:v",
		"app:{t|v}:v",
		"app:{t}:v",
		"app:{|v|1}:v",
		"app:{~|v|1}:v",
		"app:{t|v|1,}:v",
		"app:{t|v|,1}:v",
		"app:{t|v|1,,2}:v",
		"app:{t|v|a%2c}:v",
		"app:{t|v|%41}:v",
		"app:{t|v|%4}:v",
		"app:{t|v|%}:v",
		"app:{t|v|a~}:v",
		"app:{t|v|~~}:v",
		"app:{t|v|1|2}:v",
		"app:{t|v|a b}:v",
		"app:{t|v|é}:v",
		"app:{t{|v|1}:v",
		"app:{t|v|1}}:v",
		"app:{t|v|{1}:v",
		"app*{t|v|1}:v",
		"{t|v|1}:v",
		"app:{t|v:1|1}:v",
		"app:{t||1}:v",
		"app:{t x|v|1}:v",
		"app:{t|v|1}:v\n",
	} {
		if s, pk, err := keys.ParseKey(key); !errors.Is(err, keys.ErrBadKey) {
			t.Errorf("ParseKey(%q) = %v, %q, %v; want ErrBadKey", key, s, pk, err)
		}
	}
}

// crc16 is a bitwise CRC16/XMODEM, independent of the package's table.
func crc16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc ^= uint16(s[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

func TestHashSlot(t *testing.T) {
	if got := crc16("123456789"); got != 0x31C3 {
		t.Fatalf("reference crc16(123456789) = %#x, want 0x31c3", got)
	}
	for _, tt := range []struct {
		key  string
		want uint16
	}{
		{"123456789", 0x31C3 % 16384},
		{"", 0},
		{"foo", 12182},
		{"somekey", 11058},
		{"{user1000}.following", crc16("user1000") % 16384},
		{"foo{}{bar}", crc16("foo{}{bar}") % 16384},
		{"foo{{bar}}zap", crc16("{bar") % 16384},
		{"foo{bar}{zap}", crc16("bar") % 16384},
		{"{", crc16("{") % 16384},
		{"}{", crc16("}{") % 16384},
		{"a{b", crc16("a{b") % 16384},
	} {
		if got := keys.HashSlot(tt.key); got != tt.want {
			t.Errorf("HashSlot(%q) = %d, want %d", tt.key, got, tt.want)
		}
	}
	if a, b := keys.HashSlot("{user1000}.following"), keys.HashSlot("{user1000}.followers"); a != b {
		t.Errorf("keys with the same hash tag in slots %d and %d", a, b)
	}
}

// TestKeysSpreadOverSlots checks that the row identity, not just the space,
// is the hash tag.
func TestKeysSpreadOverSlots(t *testing.T) {
	s := mustSpace(t, "app:", "public.users", "v1")
	slots := map[uint16]bool{}
	for i := range 1000 {
		slots[keys.HashSlot(s.Key(strconv.Itoa(i)).Value())] = true
	}
	if len(slots) < 900 {
		t.Errorf("1000 rows fell into only %d slots", len(slots))
	}
}

// globMatch is Redis' stringmatchlen, for the patterns SCAN MATCH takes.
func globMatch(pattern, s string) bool {
	for len(pattern) > 0 {
		switch pattern[0] {
		case '*':
			for len(pattern) > 1 && pattern[1] == '*' {
				pattern = pattern[1:]
			}
			if len(pattern) == 1 {
				return true
			}
			for i := 0; i <= len(s); i++ {
				if globMatch(pattern[1:], s[i:]) {
					return true
				}
			}
			return false
		case '?':
			if len(s) == 0 {
				return false
			}
			s = s[1:]
		case '[':
			if len(s) == 0 {
				return false
			}
			end := strings.IndexByte(pattern, ']')
			if end < 0 || !strings.Contains(pattern[1:end], s[:1]) {
				return false
			}
			pattern = pattern[end:]
			s = s[1:]
		case '\\':
			if len(pattern) >= 2 {
				pattern = pattern[1:]
			}
			fallthrough
		default:
			if len(s) == 0 || pattern[0] != s[0] {
				return false
			}
			s = s[1:]
		}
		pattern = pattern[1:]
	}
	return len(s) == 0
}

func TestPattern(t *testing.T) {
	s := mustSpace(t, "app:", "public.users", "v1")
	if got, want := s.Pattern(), "app:{public.users|v1|*}:[vf]"; got != want {
		t.Errorf("Pattern() = %q, want %q", got, want)
	}
	odd := mustSpace(t, "app:", "s.*?[x]\\", "v1")
	for _, sp := range []keys.Space{s, odd} {
		for _, pk := range [][]string{{"1"}, {""}, {}, {"a", "b*"}, {"}:v"}} {
			k := sp.Key(pk...)
			if !globMatch(sp.Pattern(), k.Value()) || !globMatch(sp.Pattern(), k.Fence()) {
				t.Errorf("Pattern %q does not match %q / %q", sp.Pattern(), k.Value(), k.Fence())
			}
		}
	}
	for _, other := range []keys.Space{
		mustSpace(t, "app", "public.users", "v1"),
		mustSpace(t, "app:x", "public.users", "v1"),
		mustSpace(t, "app:", "public.user", "v1"),
		mustSpace(t, "app:", "public.users2", "v1"),
		mustSpace(t, "app:", "public.users|v1", "v1"),
		mustSpace(t, "app:", "public.users", "v10"),
		mustSpace(t, "app:", "public.users", "v"),
		odd,
	} {
		for _, k := range []keys.Key{other.Key("1"), other.Key(), other.Key("v1", "1")} {
			if globMatch(s.Pattern(), k.Value()) || globMatch(s.Pattern(), k.Fence()) {
				t.Errorf("Pattern %q matches %q of another space", s.Pattern(), k.Value())
			}
		}
	}
}

func TestQualifiedTable(t *testing.T) {
	for _, tt := range []struct{ schema, name, want string }{
		{"public", "users", "public.users"},
		{"", "users", "users"},
		{"Sales", "Order Items", `"Sales"."Order Items"`},
		{"s", `we"ird`, `s."we""ird"`},
		{"s", "t1$_x", "s.t1$_x"},
		{"s", "1t", `s."1t"`},
		{"s", "", `s.""`},
		{"s", "a.b", `s."a.b"`},
	} {
		if got := keys.QualifiedTable(tt.schema, tt.name); got != tt.want {
			t.Errorf("QualifiedTable(%q, %q) = %q, want %q", tt.schema, tt.name, got, tt.want)
		}
	}
}

func TestKeyAllocs(t *testing.T) {
	s := mustSpace(t, "app:", "public.users", "v1")
	for _, pk := range [][]string{{"42"}, {"a b", ""}, {testUUIDText, "12.5", "x"}} {
		if n := testing.AllocsPerRun(100, func() { _ = s.Key(pk...) }); n > 1 {
			t.Errorf("Key(%q) makes %v allocations, want 1", pk, n)
		}
	}
}

func TestTablePattern(t *testing.T) {
	v1, err := keys.NewSpace("app:", `"Sales"."Order|Items"`, "v1")
	if err != nil {
		t.Fatal(err)
	}
	v2, _ := keys.NewSpace("app:", `"Sales"."Order|Items"`, "v2")
	other, _ := keys.NewSpace("app:", `"Sales"."Order"`, "v1")
	if v1.TablePattern() != v2.TablePattern() {
		t.Fatalf("versions of one table give patterns %q and %q", v1.TablePattern(), v2.TablePattern())
	}
	for _, k := range []string{v1.Key("1").Value(), v2.Key("1", "x").Fence()} {
		if !globMatch(v1.TablePattern(), k) {
			t.Errorf("pattern %q does not match %q", v1.TablePattern(), k)
		}
	}
	if k := other.Key("1").Value(); globMatch(v1.TablePattern(), k) {
		t.Errorf("pattern %q matches %q of another table", v1.TablePattern(), k)
	}
}

// TestKeyFromGo: KeyFromGo gives the key and error of Key(FromGo(k, v)) for every kind
// and the value types FromGo takes, and for an integer makes the key's one allocation,
// where FromGo and Key make two for an integer of 100 or more (the control).
func TestKeyFromGo(t *testing.T) {
	s := mustSpace(t, "app:", "public.users", "v1")
	values := []any{int64(12345), int64(-7), int64(math.MinInt64), 42, int32(math.MinInt32), uint64(math.MaxUint64),
		uint(100), uint32(math.MaxUint32), int16(300), smallID(-3), bigID(500), status(2), ptr(int64(5)), "007", "a b",
		[]byte("10"), float64(3), 12.5, nil, time.Unix(0, 0), valuer{v: int64(12)}, [16]byte{1}}
	for _, k := range []keys.Kind{keys.Text, keys.Int, keys.UUID, keys.Numeric, keys.Bytes, keys.Char, keys.Kind(99)} {
		for _, v := range values {
			want, werr := keys.FromGo(k, v)
			got, err := s.KeyFromGo(k, v)
			switch {
			case (err == nil) != (werr == nil):
				t.Errorf("KeyFromGo(%v, %#v): error %v, FromGo's %v", k, v, err, werr)
			case err != nil && err.Error() != werr.Error():
				t.Errorf("KeyFromGo(%v, %#v): error %q, FromGo's %q", k, v, err, werr)
			case err == nil && got != s.Key(want):
				t.Errorf("KeyFromGo(%v, %#v) = %q, want %q", k, v, got.Value(), s.Key(want).Value())
			}
		}
	}
	for _, id := range []any{int64(123456789), 100000, uint(4242)} {
		if n := testing.AllocsPerRun(100, func() { _, _ = s.KeyFromGo(keys.Int, id) }); n != 1 {
			t.Errorf("KeyFromGo(int, %v) makes %v allocations, want 1", id, n)
		}
		if n := testing.AllocsPerRun(100, func() { c, _ := keys.FromGo(keys.Int, id); _ = s.Key(c) }); n != 2 {
			t.Errorf("control: FromGo and Key of %v make %v allocations, want 2", id, n)
		}
	}
}
