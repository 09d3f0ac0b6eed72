package keys

import (
	"database/sql/driver"
	"fmt"
	"math/big"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// Kind says how the values of a primary-key column are canonicalised. The zero
// value is Text.
type Kind uint8

const (
	// Text is any textual type (text, varchar, char, citext, and every type
	// KindOf does not know): the bytes as they are, including the empty string.
	Text Kind = iota
	// Int is int2, int4, int8 and oid: decimal, no '+', no leading zeros.
	Int
	// UUID is uuid: lower-case, hyphenated 8-4-4-4-12.
	UUID
	// Numeric is numeric: no leading zeros, no trailing fractional zeros.
	Numeric
	// Bytes is bytea: `\x` followed by lower-case hex.
	Bytes
	// Char is character(n) (bpchar): the bytes without trailing spaces. Postgres pads
	// char(n) values with spaces, prints them padded, and ignores trailing spaces when
	// it compares them, so 'abc' finds the row it prints as 'abc  '.
	Char
)

// String returns the lower-case name of k, or Kind(n) for an unknown kind.
func (k Kind) String() string {
	switch k {
	case Text:
		return "text"
	case Int:
		return "int"
	case UUID:
		return "uuid"
	case Numeric:
		return "numeric"
	case Bytes:
		return "bytes"
	case Char:
		return "char"
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// Postgres type OIDs, as found in pgoutput relation messages.
const (
	oidBytea   = 17
	oidBpchar  = 1042
	oidInt8    = 20
	oidInt2    = 21
	oidInt4    = 23
	oidOID     = 26
	oidNumeric = 1700
	oidUUID    = 2950
)

// KindOf maps the type OID of a Postgres column to the Kind of its values.
// Types it does not know are Text, which is right for every type whose text
// output is already canonical.
func KindOf(oid uint32) Kind {
	switch oid {
	case oidInt2, oidInt4, oidInt8, oidOID:
		return Int
	case oidUUID:
		return UUID
	case oidNumeric:
		return Numeric
	case oidBytea:
		return Bytes
	case oidBpchar:
		return Char
	}
	return Text
}

// KindOfType maps the name of a Postgres column type, as format_type or GORM's
// ColumnTypes print it (int8, bigint, character(8), bpchar, uuid, numeric(10,2),
// character varying, text, bytea, ...), to the Kind of its values. ok is false for
// types whose text spelling is not canonical and that no Kind canonicalises, such as
// citext (which compares case-insensitively) or floating-point, date and time
// types: such a column cannot be part of a cached key, because the change side would
// spell a value differently from the application that looked it up.
func KindOfType(name string) (k Kind, ok bool) {
	t := strings.ToLower(strings.TrimSpace(name))
	if i := strings.IndexByte(t, '('); i >= 0 {
		t = strings.TrimSpace(t[:i])
	}
	t = strings.TrimPrefix(t, "pg_catalog.")
	switch t {
	case "int2", "int4", "int8", "smallint", "integer", "int", "bigint", "oid",
		"smallserial", "serial", "bigserial", "serial2", "serial4", "serial8":
		return Int, true
	case "uuid":
		return UUID, true
	case "numeric", "decimal":
		return Numeric, true
	case "bytea":
		return Bytes, true
	case "bpchar", "character", "char":
		return Char, true
	case "text", "varchar", "character varying", "name", `"char"`:
		return Text, true
	}
	return Text, false
}

// FromText canonicalises s, a value of kind k in Postgres text form, as
// pgoutput sends it. It also accepts the other spellings Postgres accepts on
// input for the kind (a leading '+', upper-case or brace-wrapped UUIDs,
// exponents in numerics, the escape format of bytea).
//
// The error wraps ErrBadValue when s is not a valid value of the kind.
func FromText(k Kind, s string) (string, error) {
	switch k {
	case Text:
		return s, nil
	case Int:
		return intFromText(s)
	case UUID:
		var u [16]byte
		if err := parseUUID(s, &u); err != nil {
			return "", err
		}
		return formatUUID(&u), nil
	case Numeric:
		return numericFromText(s)
	case Bytes:
		return bytesFromText(s)
	case Char:
		return strings.TrimRight(s, " "), nil
	}
	return "", fmt.Errorf("%w: unknown %v for value %s", ErrBadValue, k, quote(s))
}

func badValue(k Kind, s, why string) error {
	return fmt.Errorf("%w: %v %s: %s", ErrBadValue, k, quote(s), why)
}

// quote quotes s for an error message, cutting very long values.
func quote(s string) string {
	const maxQuoted = 64
	if len(s) > maxQuoted {
		return strconv.Quote(s[:maxQuoted]) + "..."
	}
	return strconv.Quote(s)
}

func intFromText(s string) (string, error) {
	if _, err := strconv.ParseInt(s, 10, 64); err != nil {
		if _, uerr := strconv.ParseUint(s, 10, 64); uerr != nil {
			return "", badValue(Int, s, "not a decimal integer in the range of int64 or uint64")
		}
	}
	// s parsed, so it is [+-]?[0-9]+. Return it unchanged when already
	// canonical, which is what Postgres always prints.
	t := s
	if t[0] == '-' {
		t = t[1:]
	}
	if t[0] != '+' && (t[0] != '0' || len(s) == 1) {
		return s, nil
	}
	neg := s[0] == '-'
	t = strings.TrimLeft(strings.TrimLeft(t, "+"), "0")
	switch {
	case t == "":
		return "0", nil
	case neg:
		return "-" + t, nil
	}
	return t, nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// parseUUID follows Postgres' string_to_uuid: optional braces around 32 hex
// digits of any case, with an optional '-' after any group of four digits.
func parseUUID(s string, u *[16]byte) error {
	src := s
	braces := len(src) > 0 && src[0] == '{'
	if braces {
		src = src[1:]
	}
	for i := range 16 {
		if len(src) < 2 {
			return badValue(UUID, s, "want 32 hex digits, as in 8-4-4-4-12 form")
		}
		hi, ok1 := unhex(src[0])
		lo, ok2 := unhex(src[1])
		if !ok1 || !ok2 {
			return badValue(UUID, s, "want 32 hex digits, as in 8-4-4-4-12 form")
		}
		u[i] = hi<<4 | lo
		src = src[2:]
		if len(src) > 0 && src[0] == '-' && i%2 == 1 && i < 15 {
			src = src[1:]
		}
	}
	if braces {
		if len(src) == 0 || src[0] != '}' {
			return badValue(UUID, s, "missing closing brace")
		}
		src = src[1:]
	}
	if src != "" {
		return badValue(UUID, s, "unexpected text after 32 hex digits")
	}
	return nil
}

const lowerHex = "0123456789abcdef"

func formatUUID(u *[16]byte) string {
	var b [36]byte
	j := 0
	for i, c := range u {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			b[j] = '-'
			j++
		}
		b[j], b[j+1] = lowerHex[c>>4], lowerHex[c&0xf]
		j += 2
	}
	return string(b[:])
}

// numericMaxExponent is Postgres' bound on the exponent of numeric input
// (NUMERIC_MAX_PRECISION); it also bounds how far an exponent can expand a
// value.
const numericMaxExponent = 1000

func numericFromText(s string) (string, error) {
	if special, ok := numericSpecial(s); ok {
		return special, nil
	}
	n, err := parseNumeric(s)
	if err != nil {
		return "", err
	}
	// Postgres prints numerics without exponent, '+', leading zeros or
	// trailing fractional zeros; such text is returned as it came.
	zero := strings.Trim(n.intPart, "0") == "" && strings.Trim(n.fracPart, "0") == ""
	if !n.hasExp && s[0] != '+' && !zero &&
		n.intPart != "" && (n.intPart[0] != '0' || n.intPart == "0") &&
		(!n.hasDot || n.fracPart != "" && n.fracPart[len(n.fracPart)-1] != '0') {
		return s, nil
	}
	if zero {
		return "0", nil
	}
	return n.format(), nil
}

// numericSpecial returns the canonical text of NaN and the infinities.
func numericSpecial(s string) (string, bool) {
	if strings.EqualFold(s, "nan") {
		return "NaN", true
	}
	t := s
	neg := false
	if t != "" && (t[0] == '+' || t[0] == '-') {
		neg = t[0] == '-'
		t = t[1:]
	}
	if strings.EqualFold(t, "inf") || strings.EqualFold(t, "infinity") {
		if neg {
			return "-Infinity", true
		}
		return "Infinity", true
	}
	return "", false
}

// numericText is a finite numeric's text input, split into its parts.
type numericText struct {
	neg            bool
	intPart        string // the digits before the point
	fracPart       string // the digits after the point
	hasDot, hasExp bool
	exp            int // the exponent, within ±numericMaxExponent
}

// parseNumeric splits a finite numeric's text: [sign] digits [. digits] [e [sign] digits],
// with digits on at least one side of the point.
func parseNumeric(s string) (numericText, error) {
	var n numericText
	t := s
	if t != "" && (t[0] == '+' || t[0] == '-') {
		n.neg = t[0] == '-'
		t = t[1:]
	}
	i := skipDigits(t, 0)
	n.intPart = t[:i]
	if n.hasDot = i < len(t) && t[i] == '.'; n.hasDot {
		j := skipDigits(t, i+1)
		n.fracPart = t[i+1 : j]
		i = j
	}
	if n.intPart == "" && n.fracPart == "" {
		return n, badValue(Numeric, s, "want a decimal number, NaN or Infinity")
	}
	if n.hasExp = i < len(t) && (t[i] == 'e' || t[i] == 'E'); n.hasExp {
		var err error
		if n.exp, i, err = parseNumericExponent(s, t, i+1); err != nil {
			return n, err
		}
	}
	if i != len(t) {
		return n, badValue(Numeric, s, "want a decimal number, NaN or Infinity")
	}
	return n, nil
}

// skipDigits returns the index of the first byte of t from i on that is not a digit.
func skipDigits(t string, i int) int {
	for i < len(t) && '0' <= t[i] && t[i] <= '9' {
		i++
	}
	return i
}

// parseNumericExponent reads the exponent of s (at t[i:], after the 'e'): its value and
// the index in t after it.
func parseNumericExponent(s, t string, i int) (exp, end int, err error) {
	neg := false
	if i < len(t) && (t[i] == '+' || t[i] == '-') {
		neg = t[i] == '-'
		i++
	}
	start := i
	for i < len(t) && '0' <= t[i] && t[i] <= '9' {
		if exp <= numericMaxExponent {
			exp = exp*10 + int(t[i]-'0')
		}
		i++
	}
	if i == start {
		return 0, i, badValue(Numeric, s, "exponent has no digits")
	}
	if exp > numericMaxExponent {
		return 0, i, badValue(Numeric, s, "exponent out of range")
	}
	if neg {
		exp = -exp
	}
	return exp, i, nil
}

// format prints a nonzero numeric as Postgres does: no exponent, no '+', no leading
// zeros, no trailing fractional zeros.
func (n numericText) format() string {
	// The value is 0.d1d2d3... × 10^point, where d are the significant
	// digits of intPart+fracPart.
	intPart, fracPart := n.intPart, n.fracPart
	point := len(intPart) + n.exp
	lead := len(intPart) - len(strings.TrimLeft(intPart, "0"))
	intPart = intPart[lead:]
	point -= lead
	if intPart == "" {
		lead = len(fracPart) - len(strings.TrimLeft(fracPart, "0"))
		fracPart = fracPart[lead:]
		point -= lead
	}
	if fracPart = strings.TrimRight(fracPart, "0"); fracPart == "" {
		intPart = strings.TrimRight(intPart, "0")
	}
	return writeNumeric(n.neg, intPart, fracPart, point)
}

// writeNumeric prints the value 0.d1d2d3... × 10^point, where d are the digits of
// intPart+fracPart (significant: no leading or trailing zeros), without exponent.
func writeNumeric(neg bool, intPart, fracPart string, point int) string {
	nd := len(intPart) + len(fracPart)
	digit := func(k int) byte { // the k-th significant digit
		if k < len(intPart) {
			return intPart[k]
		}
		return fracPart[k-len(intPart)]
	}
	var b strings.Builder
	b.Grow(nd + 3 + max(-point, 0) + max(point-nd, 0))
	if neg {
		b.WriteByte('-')
	}
	switch {
	case point <= 0:
		b.WriteString("0.")
		for range -point {
			b.WriteByte('0')
		}
		for k := range nd {
			b.WriteByte(digit(k))
		}
	case point >= nd:
		for k := range nd {
			b.WriteByte(digit(k))
		}
		for range point - nd {
			b.WriteByte('0')
		}
	default:
		for k := range nd {
			if k == point {
				b.WriteByte('.')
			}
			b.WriteByte(digit(k))
		}
	}
	return b.String()
}

func bytesFromText(s string) (string, error) {
	if len(s) >= 2 && s[0] == '\\' && s[1] == 'x' {
		// Hex format; Postgres allows whitespace between digit pairs.
		h := s[2:]
		canonical := len(h)%2 == 0
		n := 0
		for i := 0; i < len(h); {
			switch h[i] {
			case ' ', '\t', '\n', '\r':
				canonical = false
				i++
				continue
			}
			if i+1 >= len(h) {
				return "", badValue(Bytes, s, "odd number of hex digits")
			}
			_, ok1 := unhex(h[i])
			_, ok2 := unhex(h[i+1])
			if !ok1 || !ok2 {
				return "", badValue(Bytes, s, "invalid hex digit")
			}
			if h[i] >= 'A' && h[i] <= 'F' || h[i+1] >= 'A' && h[i+1] <= 'F' {
				canonical = false
			}
			n++
			i += 2
		}
		if canonical {
			return s, nil
		}
		var b strings.Builder
		b.Grow(2 + 2*n)
		b.WriteString(`\x`)
		for i := 0; i < len(h); {
			switch h[i] {
			case ' ', '\t', '\n', '\r':
				i++
				continue
			}
			hi, _ := unhex(h[i])
			lo, _ := unhex(h[i+1])
			b.WriteByte(lowerHex[hi])
			b.WriteByte(lowerHex[lo])
			i += 2
		}
		return b.String(), nil
	}
	// Escape format, as Postgres' byteain reads it.
	raw := make([]byte, 0, len(s))
	for i := 0; i < len(s); {
		c := s[i]
		if c != '\\' {
			raw = append(raw, c)
			i++
			continue
		}
		switch {
		case i+1 < len(s) && s[i+1] == '\\':
			raw = append(raw, '\\')
			i += 2
		case i+3 < len(s) && '0' <= s[i+1] && s[i+1] <= '3' && '0' <= s[i+2] && s[i+2] <= '7' && '0' <= s[i+3] && s[i+3] <= '7':
			raw = append(raw, (s[i+1]-'0')<<6|(s[i+2]-'0')<<3|(s[i+3]-'0'))
			i += 4
		default:
			return "", badValue(Bytes, s, `invalid escape; want \x followed by hex digits`)
		}
	}
	return hexBytes(raw), nil
}

func hexBytes(p []byte) string {
	var b strings.Builder
	b.Grow(2 + 2*len(p))
	b.WriteString(`\x`)
	for _, c := range p {
		b.WriteByte(lowerHex[c>>4])
		b.WriteByte(lowerHex[c&0xf])
	}
	return b.String()
}

// maxIndirections bounds how many pointers and driver.Valuer results FromGo
// follows, so that a Valuer returning itself cannot loop forever.
const maxIndirections = 16

// FromGo canonicalises v, a Go value of a primary-key field whose column has
// kind k. The result equals FromText(k, s) where s is Postgres' text output of
// the value that v is stored as.
//
// FromGo accepts every int and uint kind, string, []byte, [16]byte and named
// types of these (such as google/uuid.UUID, formatted as a UUID), float32 and
// float64 for Int and Numeric when they print exactly, pointers to supported
// values, driver.Valuer (its Value is used, as database/sql would store it),
// and fmt.Stringer (its String is read as Postgres text). Strings are always
// read as Postgres text input of the kind: a string is the UUID's text under
// UUID and bytea input (`\x…` or escape format) under Bytes; []byte holds the
// raw bytes under Bytes and a 16-byte UUID under UUID.
//
// The error wraps ErrBadValue for nil, NULL or an invalid value, and
// ErrUnsupportedType, naming the type, for anything else.
func FromGo(k Kind, v any) (string, error) {
	if k > Char {
		return "", fmt.Errorf("%w: unknown %v for Go value of type %T", ErrBadValue, k, v)
	}
	return fromGo(k, v, 0)
}

func fromGo(k Kind, v any, depth int) (string, error) {
	// The common concrete types first; they have no methods to consult.
	if s, ok, err := fromConcrete(k, v); ok {
		return s, err
	}
	if depth >= maxIndirections {
		return "", unsupported(k, v, "too many pointers or driver.Valuer results")
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() == reflect.Pointer && rv.IsNil() {
		return "", fmt.Errorf("%w: %v value is a nil %T; a primary key cannot be NULL", ErrBadValue, k, v)
	}
	// A Valuer decides what the database stores, so it comes before the
	// underlying kind.
	if dv, ok := v.(driver.Valuer); ok {
		val, err := dv.Value()
		if err != nil {
			return "", fmt.Errorf("%w: %v value of type %T: Value: %w", ErrBadValue, k, v, err)
		}
		return fromGo(k, val, depth+1)
	}
	// The underlying kind comes before String: a named int with a String
	// method (an enum, say) is stored as its number.
	if s, ok, err := fromKind(k, v, rv, depth); ok {
		return s, err
	}
	if s, ok := v.(fmt.Stringer); ok {
		return FromText(k, s.String())
	}
	return "", unsupported(k, v, "")
}

// fromConcrete converts the common concrete types. ok is false for any other type.
func fromConcrete(k Kind, v any) (s string, ok bool, err error) {
	switch x := v.(type) {
	case string:
		s, err = FromText(k, x)
	case int64:
		s, err = fromInt(k, x, v)
	case int:
		s, err = fromInt(k, int64(x), v)
	case int32:
		s, err = fromInt(k, int64(x), v)
	case uint64:
		s, err = fromUint(k, x, v)
	case []byte:
		s, err = fromByteSlice(k, x)
	case [16]byte:
		s, err = fromArray16(k, &x, v)
	case nil:
		err = fmt.Errorf("%w: %v value is nil; a primary key cannot be NULL", ErrBadValue, k)
	case time.Time:
		err = unsupported(k, v, "timestamps are not supported as key columns")
	case *big.Float:
		s, err = fromBigFloat(k, x)
	default:
		return "", false, nil
	}
	return s, true, err
}

func fromBigFloat(k Kind, x *big.Float) (string, error) {
	if x == nil {
		return "", fmt.Errorf("%w: %v value is a nil %T", ErrBadValue, k, x)
	}
	// big.Float's String rounds to 10 digits; print it exactly instead.
	if k != Int && k != Numeric {
		return "", unsupported(k, x, "")
	}
	return FromText(k, x.Text('f', -1))
}

// fromKind converts v by its underlying kind (rv is v's reflect.Value), following a
// pointer. ok is false when the kind decides nothing and String is to be consulted.
func fromKind(k Kind, v any, rv reflect.Value, depth int) (s string, ok bool, err error) {
	switch rv.Kind() {
	case reflect.Pointer:
		// Follow the pointer unless only the pointer has a String method,
		// as *big.Int has.
		elem := rv.Elem().Interface()
		_, ptrStringer := v.(fmt.Stringer)
		if _, elemStringer := elem.(fmt.Stringer); elemStringer || !ptrStringer {
			s, err = fromGo(k, elem, depth+1)
			return s, true, err
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		s, err = fromInt(k, rv.Int(), v)
		return s, true, err
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		s, err = fromUint(k, rv.Uint(), v)
		return s, true, err
	case reflect.String:
		s, err = FromText(k, rv.String())
		return s, true, err
	case reflect.Float32, reflect.Float64:
		s, err = fromFloat(k, v, rv)
		return s, true, err
	case reflect.Bool:
		s, err = fromBool(k, v, rv.Bool())
		return s, true, err
	case reflect.Slice:
		if rv.Type().Elem().Kind() == reflect.Uint8 {
			s, err = fromByteSlice(k, rv.Bytes())
			return s, true, err
		}
	case reflect.Array:
		if rv.Len() == 16 && rv.Type().Elem().Kind() == reflect.Uint8 {
			var u [16]byte
			for i := range u {
				u[i] = byte(rv.Index(i).Uint())
			}
			s, err = fromArray16(k, &u, v)
			return s, true, err
		}
	}
	return "", false, nil
}

func fromFloat(k Kind, v any, rv reflect.Value) (string, error) {
	if k != Int && k != Numeric {
		return "", unsupported(k, v, "floating-point values are only accepted for int and numeric columns")
	}
	bits := 64
	if rv.Kind() == reflect.Float32 {
		bits = 32
	}
	return FromText(k, strconv.FormatFloat(rv.Float(), 'f', -1, bits))
}

func fromBool(k Kind, v any, b bool) (string, error) {
	if k != Text && k != Char {
		return "", unsupported(k, v, "")
	}
	if b {
		return "t", nil
	}
	return "f", nil
}

func unsupported(k Kind, v any, why string) error {
	if why != "" {
		why = ": " + why
	}
	return fmt.Errorf("%w: %T for a %v column%s", ErrUnsupportedType, v, k, why)
}

func fromInt(k Kind, x int64, v any) (string, error) {
	if intKind(k) {
		return strconv.FormatInt(x, 10), nil
	}
	return "", unsupported(k, v, "integers are only accepted for int, numeric and text columns")
}

// intKind says whether a column of kind k takes a Go integer, as its decimal digits.
func intKind(k Kind) bool {
	switch k {
	case Text, Char, Int, Numeric:
		return true
	}
	return false
}

func fromUint(k Kind, x uint64, v any) (string, error) {
	if intKind(k) {
		return strconv.FormatUint(x, 10), nil
	}
	return "", unsupported(k, v, "integers are only accepted for int, numeric and text columns")
}

func fromByteSlice(k Kind, p []byte) (string, error) {
	switch k {
	case Bytes:
		return hexBytes(p), nil
	case UUID:
		if len(p) == 16 {
			return formatUUID((*[16]byte)(p)), nil
		}
	}
	return FromText(k, string(p))
}

func fromArray16(k Kind, u *[16]byte, v any) (string, error) {
	switch k {
	case UUID, Text, Char:
		return formatUUID(u), nil
	case Bytes:
		return hexBytes(u[:]), nil
	}
	return "", unsupported(k, v, "16-byte arrays are only accepted for uuid, bytes and text columns")
}
