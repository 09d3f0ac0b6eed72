package readthrough_test

import (
	"fmt"
	"math"
	"reflect"
	"strings"
)

// diff compares want and got as reflect.DeepEqual does, except that NaN equals NaN, and
// returns one line per difference (at most 20), each naming the field's path; "" when
// they are equal. It reads unexported fields, so custom types are compared whole.
func diff(want, got any) string {
	var out []string
	walk("", reflect.ValueOf(want), reflect.ValueOf(got), &out)
	return strings.Join(out, "\n")
}

func walk(path string, a, b reflect.Value, out *[]string) {
	if len(*out) >= 20 {
		return
	}
	report := func(format string, args ...any) {
		p := path
		if p == "" {
			p = "."
		}
		*out = append(*out, p+": "+fmt.Sprintf(format, args...))
	}
	if !a.IsValid() || !b.IsValid() {
		if a.IsValid() != b.IsValid() {
			report("valid %v != %v", a.IsValid(), b.IsValid())
		}
		return
	}
	if a.Type() != b.Type() {
		report("type %s != %s", a.Type(), b.Type())
		return
	}
	switch a.Kind() {
	case reflect.Pointer, reflect.Interface:
		if a.IsNil() || b.IsNil() {
			if a.IsNil() != b.IsNil() {
				report("nil %v != nil %v", a.IsNil(), b.IsNil())
			}
			return
		}
		if a.Kind() == reflect.Pointer && a.Pointer() == b.Pointer() {
			return
		}
		walk(path, a.Elem(), b.Elem(), out)
	case reflect.Struct:
		for i := range a.NumField() {
			walk(path+"."+a.Type().Field(i).Name, a.Field(i), b.Field(i), out)
		}
	case reflect.Slice:
		if a.IsNil() != b.IsNil() {
			report("nil %v (len %d) != nil %v (len %d)", a.IsNil(), a.Len(), b.IsNil(), b.Len())
			return
		}
		fallthrough
	case reflect.Array:
		if a.Len() != b.Len() {
			report("len %d != %d", a.Len(), b.Len())
			return
		}
		if a.Type().Elem().Kind() == reflect.Uint8 {
			if x, y := bytesOf(a), bytesOf(b); x != y {
				report("%q != %q", x, y)
			}
			return
		}
		for i := range a.Len() {
			walk(fmt.Sprintf("%s[%d]", path, i), a.Index(i), b.Index(i), out)
		}
	case reflect.Map:
		if a.IsNil() != b.IsNil() || a.Len() != b.Len() {
			report("map nil %v len %d != nil %v len %d", a.IsNil(), a.Len(), b.IsNil(), b.Len())
			return
		}
		for _, k := range a.MapKeys() {
			walk(fmt.Sprintf("%s[%v]", path, k), a.MapIndex(k), b.MapIndex(k), out)
		}
	case reflect.Float32, reflect.Float64:
		x, y := a.Float(), b.Float()
		if x != y && !(math.IsNaN(x) && math.IsNaN(y)) {
			report("%v != %v", x, y)
		}
	case reflect.String:
		if a.String() != b.String() {
			report("%q != %q", a.String(), b.String())
		}
	case reflect.Bool:
		if a.Bool() != b.Bool() {
			report("%v != %v", a.Bool(), b.Bool())
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if a.Int() != b.Int() {
			report("%d != %d", a.Int(), b.Int())
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		if a.Uint() != b.Uint() {
			report("%d != %d", a.Uint(), b.Uint())
		}
	case reflect.Complex64, reflect.Complex128:
		if a.Complex() != b.Complex() {
			report("%v != %v", a.Complex(), b.Complex())
		}
	case reflect.Func, reflect.Chan, reflect.UnsafePointer:
		if a.Pointer() != b.Pointer() {
			report("%s differs", a.Kind())
		}
	}
}

func bytesOf(v reflect.Value) string {
	var sb strings.Builder
	for i := range v.Len() {
		sb.WriteByte(byte(v.Index(i).Uint()))
	}
	return sb.String()
}
