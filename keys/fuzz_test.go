package keys_test

import (
	"encoding/hex"
	"errors"
	"math/big"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/pgcache/pgcache/keys"
)

// safeName maps arbitrary bytes into a valid prefix or version, so that the
// fuzzer explores keys rather than NewSpace's error paths.
func safeName(s, alphabet string) string {
	if len(s) > 64 {
		s = s[:64]
	}
	if s == "" {
		return alphabet[:1]
	}
	b := []byte(s)
	for i, c := range b {
		b[i] = alphabet[int(c)%len(alphabet)]
	}
	return string(b)
}

const (
	prefixAlphabet  = "abcXYZ019_.:-"
	versionAlphabet = "abcXYZ019_.-"
)

func FuzzKeyRoundTrip(f *testing.F) {
	f.Add("app:", "public.users", "v1", uint8(1), "42", "", "")
	f.Add("app:", `Sales."Order Items"`, "v2", uint8(2), "a", "", "")
	f.Add("p", "t", "v", uint8(0), "", "", "")
	f.Add("p", "{t}|", "v", uint8(3), "a,", "~", "%7E")
	f.Add("p", "t", "v", uint8(2), "}:v{", "\x00\xff", "ünï")
	f.Fuzz(func(t *testing.T, prefix, table, version string, n uint8, a, b, c string) {
		// Arbitrary parts must be accepted or rejected, never panic.
		if _, err := keys.NewSpace(prefix, table, version); err != nil && !errors.Is(err, keys.ErrBadSpace) {
			t.Fatalf("NewSpace error %v does not wrap ErrBadSpace", err)
		}
		if table == "" {
			table = "t"
		}
		s, err := keys.NewSpace(safeName(prefix, prefixAlphabet), table, safeName(version, versionAlphabet))
		if err != nil {
			t.Fatal(err)
		}
		pk := []string{a, b, c}[:n%4]
		k := s.Key(pk...)
		if keys.HashSlot(k.Value()) != keys.HashSlot(k.Fence()) {
			t.Fatalf("%q and %q in different slots", k.Value(), k.Fence())
		}
		for _, key := range []string{k.Value(), k.Fence()} {
			gs, gpk, err := keys.ParseKey(key)
			if err != nil {
				t.Fatalf("ParseKey(%q): %v", key, err)
			}
			if gs != s || !slices.Equal(gpk, pk) {
				t.Fatalf("ParseKey(%q) = %+v, %q; want %+v, %q", key, gs, gpk, s, pk)
			}
			if !globMatch(s.Pattern(), key) {
				t.Fatalf("Pattern %q does not match %q", s.Pattern(), key)
			}
		}
		// The hash tag is exactly the part between the braces.
		tag := k.Value()[strings.IndexByte(k.Value(), '{')+1 : len(k.Value())-3]
		if strings.ContainsAny(tag, "{}") || keys.HashSlot(k.Value()) != keys.HashSlot("{"+tag+"}") {
			t.Fatalf("hash tag of %q is not the row identity", k.Value())
		}
		// Other lists, built to collide with naive encodings, give other keys.
		others := [][]string{
			append(slices.Clone(pk), ""),
			{a + "," + b},
			{a, b + "," + c},
			{a + b, c},
			{},
		}
		if len(pk) > 0 {
			others = append(others, pk[:len(pk)-1], pk[1:])
		}
		for _, o := range others {
			if !slices.Equal(o, pk) && s.Key(o...) == k {
				t.Fatalf("Key(%q) = Key(%q) = %q", o, pk, k.Value())
			}
		}
	})
}

// pgUUID prints a UUID as Postgres does, independently of the package.
func pgUUID(u [16]byte) string {
	h := hex.EncodeToString(u[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// pgByteaEscape prints bytes as Postgres does with bytea_output = 'escape'.
func pgByteaEscape(p []byte) string {
	var b strings.Builder
	for _, c := range p {
		switch {
		case c == '\\':
			b.WriteString(`\\`)
		case c < 0x20 || c > 0x7e:
			b.WriteString(`\`)
			b.WriteString(strconv.FormatUint(uint64(c)>>6, 8))
			b.WriteString(strconv.FormatUint(uint64(c)>>3&7, 8))
			b.WriteString(strconv.FormatUint(uint64(c)&7, 8))
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

func FuzzTextGoEquivalence(f *testing.F) {
	f.Add(int64(0), uint64(0), []byte{}, uint8(0), uint8(0))
	f.Add(int64(-9223372036854775808), uint64(18446744073709551615), []byte("\x00\\\xff a"), uint8(2), uint8(3))
	f.Add(int64(1250), uint64(7), []byte("a0eebc999c0b4ef8bb6d6bb9bd380a11"), uint8(3), uint8(10))
	f.Fuzz(func(t *testing.T, i int64, u uint64, raw []byte, scale, zeros uint8) {
		equal := func(k keys.Kind, goValue any, text string) {
			t.Helper()
			g, gerr := keys.FromGo(k, goValue)
			x, terr := keys.FromText(k, text)
			if gerr != nil || terr != nil || g != x {
				t.Fatalf("%v: FromGo(%#v) = %q, %v; FromText(%q) = %q, %v", k, goValue, g, gerr, text, x, terr)
			}
		}
		// Integers, in every kind that takes them.
		is, us := strconv.FormatInt(i, 10), strconv.FormatUint(u, 10)
		for _, k := range []keys.Kind{keys.Int, keys.Numeric, keys.Text} {
			equal(k, i, is)
			equal(k, &i, is)
			equal(k, u, us)
		}
		equal(keys.Int, int32(i), strconv.FormatInt(int64(int32(i)), 10))
		equal(keys.Int, smallID(i), strconv.FormatInt(int64(int16(i)), 10))

		// A numeric with scale: Postgres prints i / 10^scale padded with
		// trailing zeros to the column's scale.
		sc := int(scale % 20)
		digits := strings.TrimPrefix(is, "-")
		if len(digits) <= sc {
			digits = strings.Repeat("0", sc-len(digits)+1) + digits
		}
		text := digits[:len(digits)-sc]
		if sc > 0 {
			text += "." + digits[len(digits)-sc:]
		}
		if i < 0 {
			text = "-" + text
		}
		padded := text
		if sc > 0 {
			padded += strings.Repeat("0", int(zeros%8))
		}
		equal(keys.Numeric, decimal{text}, padded)
		if r, ok := new(big.Rat).SetString(padded); ok {
			if got, _ := keys.FromText(keys.Numeric, padded); !ratEqual(got, r) {
				t.Fatalf("FromText(Numeric, %q) = %q, a different number", padded, got)
			}
		}

		// A UUID from the first 16 bytes of raw.
		var arr [16]byte
		copy(arr[:], raw)
		equal(keys.UUID, arr, pgUUID(arr))
		equal(keys.UUID, uuidType(arr), pgUUID(arr))
		equal(keys.UUID, arr[:], pgUUID(arr))
		equal(keys.UUID, strings.ToUpper(hex.EncodeToString(arr[:])), pgUUID(arr))

		// bytea in both output formats.
		equal(keys.Bytes, raw, `\x`+hex.EncodeToString(raw))
		equal(keys.Bytes, blob(raw), pgByteaEscape(raw))

		// Text is the bytes as they are.
		equal(keys.Text, string(raw), string(raw))
		equal(keys.Text, raw, string(raw))
	})
}

func ratEqual(s string, r *big.Rat) bool {
	got, ok := new(big.Rat).SetString(s)
	return ok && got.Cmp(r) == 0
}

func FuzzFromText(f *testing.F) {
	for _, seed := range []struct {
		k keys.Kind
		s string
	}{
		{keys.Int, "-0042"}, {keys.Int, "18446744073709551615"}, {keys.UUID, "{A0EEBC99-9C0B4EF8-BB6D6BB9-BD380A11}"},
		{keys.Numeric, "-000.0100e+3"}, {keys.Numeric, "NaN"}, {keys.Bytes, `\x DE ad`}, {keys.Bytes, `a\\\001`},
		{keys.Text, "a,b"}, {keys.Char, "abc  "}, {9, ""},
	} {
		f.Add(uint8(seed.k), seed.s)
	}
	canonicalNumeric := regexp.MustCompile(`^(NaN|-?Infinity|-?(0|[1-9][0-9]*)(\.[0-9]*[1-9])?)$`)
	canonicalUUID := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	canonicalBytes := regexp.MustCompile(`^\\x([0-9a-f]{2})*$`)
	f.Fuzz(func(t *testing.T, kind uint8, s string) {
		k := keys.Kind(kind % 7) // every kind, and one unknown
		got, err := keys.FromText(k, s)
		if _, gerr := keys.FromGo(k, s); (gerr == nil) != (err == nil) {
			t.Fatalf("FromText(%v, %q) error %v but FromGo error %v", k, s, err, gerr)
		}
		if err != nil {
			if !errors.Is(err, keys.ErrBadValue) {
				t.Fatalf("FromText(%v, %q) error %v does not wrap ErrBadValue", k, s, err)
			}
			return
		}
		// Canonical forms are fixed points.
		again, err := keys.FromText(k, got)
		if err != nil || again != got {
			t.Fatalf("FromText(%v, %q) = %q, but FromText(%q) = %q, %v", k, s, got, got, again, err)
		}
		switch k {
		case keys.Int:
			n, ok := new(big.Int).SetString(s, 10)
			if !ok || n.String() != got {
				t.Fatalf("FromText(Int, %q) = %q, want %v", s, got, n)
			}
		case keys.Numeric:
			if !canonicalNumeric.MatchString(got) || got == "-0" {
				t.Fatalf("FromText(Numeric, %q) = %q, not in canonical form", s, got)
			}
			if r, ok := new(big.Rat).SetString(s); ok && !ratEqual(got, r) {
				t.Fatalf("FromText(Numeric, %q) = %q, a different number", s, got)
			}
		case keys.UUID:
			if !canonicalUUID.MatchString(got) {
				t.Fatalf("FromText(UUID, %q) = %q, not in canonical form", s, got)
			}
			if strings.ReplaceAll(got, "-", "") != strings.ToLower(strings.Trim(strings.ReplaceAll(s, "-", ""), "{}")) {
				t.Fatalf("FromText(UUID, %q) = %q, a different UUID", s, got)
			}
		case keys.Bytes:
			if !canonicalBytes.MatchString(got) {
				t.Fatalf("FromText(Bytes, %q) = %q, not in canonical form", s, got)
			}
		case keys.Text:
			if got != s {
				t.Fatalf("FromText(Text, %q) = %q", s, got)
			}
		case keys.Char:
			if got != strings.TrimRight(s, " ") {
				t.Fatalf("FromText(Char, %q) = %q", s, got)
			}
		}
		// Every canonical value goes into a key and back.
		sp, err := keys.NewSpace("p", "t", "v")
		if err != nil {
			t.Fatal(err)
		}
		if _, pk, err := keys.ParseKey(sp.Key(got).Value()); err != nil || len(pk) != 1 || pk[0] != got {
			t.Fatalf("ParseKey(Key(%q)) = %q, %v", got, pk, err)
		}
	})
}

// FuzzLookupKeyRoundTrip: a lookup key parses back to its space, lookup and values,
// shares a slot with its fence, is never a row key, and differs for other values or
// columns.
func FuzzLookupKeyRoundTrip(f *testing.F) {
	f.Add("p", "public.users", "v1", true, "email", "", "a@b.c", "")
	f.Add("p", `s."T|x"`, "v", false, "order_id", "tenant", "42", "a,b")
	f.Add("p", "t", "v", true, "b", "a", "}:v{", "|")
	f.Fuzz(func(t *testing.T, prefix, table, version string, unique bool, c1, c2, v1, v2 string) {
		if table == "" {
			table = "t"
		}
		s, err := keys.NewSpace(safeName(prefix, prefixAlphabet), table, safeName(version, versionAlphabet))
		if err != nil {
			t.Fatal(err)
		}
		kind := map[bool]keys.LookupKind{true: keys.Unique, false: keys.List}[unique]
		cols, vals := []string{c1}, []string{v1}
		if c2 != "" {
			cols, vals = append(cols, c2), append(vals, v2)
		}
		l, err := keys.NewLookup(kind, cols...)
		if err != nil {
			if !errors.Is(err, keys.ErrBadSpace) {
				t.Fatalf("NewLookup error %v does not wrap ErrBadSpace", err)
			}
			return
		}
		// Values go in the order of l.Columns.
		if got := l.Columns(); !slices.Equal(got, cols) {
			slices.Reverse(vals)
		}
		k := s.LookupKey(l, vals...)
		if keys.HashSlot(k.Value()) != keys.HashSlot(k.Fence()) {
			t.Fatalf("%q and %q in different slots", k.Value(), k.Fence())
		}
		for _, key := range []string{k.Value(), k.Fence()} {
			gs, gl, gv, err := keys.ParseLookupKey(key)
			if err != nil {
				t.Fatalf("ParseLookupKey(%q): %v", key, err)
			}
			if gs != s || gl != l || !slices.Equal(gv, vals) {
				t.Fatalf("ParseLookupKey(%q) = %+v, %v, %q; want %+v, %v, %q", key, gs, gl, gv, s, l, vals)
			}
			if _, _, err := keys.ParseKey(key); err == nil {
				t.Fatalf("ParseKey accepts the lookup key %q", key)
			}
		}
		if s.Key(vals...) == k {
			t.Fatalf("row key and lookup key %q are equal", k.Value())
		}
		other := slices.Clone(vals)
		other[0] += ","
		if s.LookupKey(l, other...) == k {
			t.Fatalf("values %q and %q give one key %q", vals, other, k.Value())
		}
	})
}
