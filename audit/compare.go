package audit

import (
	"bytes"
	"math"
	"math/big"
	"strconv"
	"strings"
	"time"
)

// equalValue says whether a cached column value (as the application's codec recorded
// it: nil, int64, float64, bool, []byte, string or time.Time, the Go field's value
// converted for the database) and Postgres' value (as the driver returns it) are the
// same stored value. They were produced by different paths (the application's Go type
// and back, the driver), so it canonicalises:
//
//   - NULL from Postgres equals a zero value: a field that is not a pointer or a Null
//     type caches NULL as its zero value;
//   - times are compared as instants at Postgres' microsecond precision, and a
//     string that parses as a time (a time column loaded into a string field) as one;
//   - numbers are compared by value across int64, float64 and decimal text (numeric
//     loaded into a float or an int field, a decimal type that prints another scale);
//     floats also as float32, which is what a real column holds;
//   - strings and byte slices by their bytes; bools also against "t"/"true"…
func equalValue(cached, pg any) bool {
	if pg == nil {
		return cached == nil || isZero(cached)
	}
	switch c := cached.(type) {
	case nil:
		return false
	case time.Time:
		t, ok := asTime(pg)
		return ok && sameInstant(c, t)
	case int64:
		return sameNumber(new(big.Rat).SetInt64(c), pg)
	case float64:
		if p, ok := pg.(float64); ok && (p == c || math.IsNaN(p) && math.IsNaN(c) || float32(p) == float32(c)) {
			return true
		}
		if math.IsNaN(c) || math.IsInf(c, 0) {
			s, ok := pg.(string)
			return ok && strings.EqualFold(s, strconv.FormatFloat(c, 'g', -1, 64))
		}
		return sameNumber(new(big.Rat).SetFloat64(c), pg)
	case bool:
		switch p := pg.(type) {
		case bool:
			return p == c
		case string:
			b, err := strconv.ParseBool(p)
			return err == nil && b == c
		}
		return false
	case string:
		return sameText([]byte(c), pg)
	case []byte:
		return sameText(c, pg)
	}
	return false
}

func isZero(v any) bool {
	switch v := v.(type) {
	case int64:
		return v == 0
	case float64:
		return v == 0
	case bool:
		return !v
	case string:
		return v == ""
	case []byte:
		return len(v) == 0
	case time.Time:
		return v.IsZero()
	}
	return false
}

func asTime(v any) (time.Time, bool) {
	switch v := v.(type) {
	case time.Time:
		return v, true
	case string:
		return parseTime(v)
	case []byte:
		return parseTime(string(v))
	}
	return time.Time{}, false
}

// parseTime reads a time as Go (RFC 3339) or Postgres (ISO, DateStyle ISO) prints it.
func parseTime(s string) (time.Time, bool) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02 15:04:05.999999999Z07:00", "2006-01-02 15:04:05.999999999Z07",
		"2006-01-02 15:04:05.999999999", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, true
		}
	}
	return time.Time{}, false
}

// sameInstant: within a microsecond, which Postgres keeps (drivers truncate or round
// the nanoseconds away).
func sameInstant(a, b time.Time) bool {
	d := a.Sub(b)
	return -time.Microsecond < d && d < time.Microsecond
}

// sameNumber compares a cached number with Postgres' value of any numeric kind.
func sameNumber(c *big.Rat, pg any) bool {
	switch p := pg.(type) {
	case int64:
		return c.Cmp(new(big.Rat).SetInt64(p)) == 0
	case float64:
		if math.IsNaN(p) || math.IsInf(p, 0) {
			return false
		}
		r := new(big.Rat).SetFloat64(p)
		if c.Cmp(r) == 0 {
			return true
		}
		// A real (float4) column: compare at its precision.
		cf, _ := c.Float64()
		return float32(cf) == float32(p)
	case string:
		r, ok := new(big.Rat).SetString(p)
		if !ok {
			return false
		}
		if c.Cmp(r) == 0 {
			return true
		}
		// A float field of a numeric column: the float nearest the decimal.
		cf, _ := c.Float64()
		rf, _ := r.Float64()
		return cf == rf
	case []byte:
		return sameNumber(c, string(p))
	}
	return false
}

// sameText compares cached text or bytes with Postgres' value.
func sameText(c []byte, pg any) bool {
	switch p := pg.(type) {
	case string:
		if string(c) == p {
			return true
		}
		return sameDecimalText(string(c), p)
	case []byte:
		return bytes.Equal(c, p)
	case time.Time:
		t, ok := parseTime(string(c))
		return ok && sameInstant(t, p)
	case int64, float64:
		r, ok := new(big.Rat).SetString(string(c))
		return ok && sameNumber(r, p)
	case bool:
		b, err := strconv.ParseBool(string(c))
		return err == nil && b == p
	}
	return false
}

// sameDecimalText: two spellings of one decimal number ("1.50" and "1.5": numeric
// keeps its scale, a decimal type may print another).
func sameDecimalText(a, b string) bool {
	if a == "" || b == "" || !isDecimal(a) || !isDecimal(b) {
		return false
	}
	ra, ok1 := new(big.Rat).SetString(a)
	rb, ok2 := new(big.Rat).SetString(b)
	return ok1 && ok2 && ra.Cmp(rb) == 0
}

func isDecimal(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || c == '.' || c == '-' && i == 0) {
			return false
		}
	}
	return true
}
