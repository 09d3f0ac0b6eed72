package keys_test

import (
	"fmt"

	"github.com/pgcache/pgcache/keys"
)

func ExampleSpace_Key() {
	users, err := keys.NewSpace("app:", keys.QualifiedTable("public", "users"), "v1")
	if err != nil {
		panic(err)
	}
	k := users.Key("42")
	fmt.Println(k.Value())
	fmt.Println(k.Fence())
	fmt.Println(keys.HashSlot(k.Value()) == keys.HashSlot(k.Fence()))
	fmt.Println(users.Pattern())
	// Output:
	// app:{public.users|v1|42}:v
	// app:{public.users|v1|42}:f
	// true
	// app:{public.users|v1|*}:[vf]
}

func ExampleSpace_Key_composite() {
	items, err := keys.NewSpace("app:", keys.QualifiedTable("Sales", "Order Items"), "v2")
	if err != nil {
		panic(err)
	}
	fmt.Println(items.Key("1001", "a,b").Value())
	fmt.Println(items.Key("1001", "").Value())
	// Output:
	// app:{"Sales"."Order%20Items"|v2|1001,a%2Cb}:v
	// app:{"Sales"."Order%20Items"|v2|1001,~}:v
}

// The read side holds Go values of the model's primary key; the change side
// holds Postgres' text output of the same columns. Both reach the same key.
func ExampleFromGo() {
	orders, err := keys.NewSpace("app:", "public.orders", "v3")
	if err != nil {
		panic(err)
	}

	// Read side: GORM fields of type [16]byte (such as uuid.UUID) and float64.
	id, _ := keys.FromGo(keys.UUID, [16]byte{0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38, 0x0a, 0x11})
	amount, _ := keys.FromGo(keys.Numeric, 12.5)
	fmt.Println(orders.Key(id, amount))

	// Change side: column type OIDs and text values from pgoutput.
	id, _ = keys.FromText(keys.KindOf(2950), "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
	amount, _ = keys.FromText(keys.KindOf(1700), "12.50")
	fmt.Println(orders.Key(id, amount))
	// Output:
	// app:{public.orders|v3|a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11,12.5}:v
	// app:{public.orders|v3|a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11,12.5}:v
}

func ExampleFromText() {
	for _, in := range []struct {
		kind keys.Kind
		text string
	}{
		{keys.Int, "+007"},
		{keys.Numeric, "-012.500"},
		{keys.UUID, "{A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11}"},
		{keys.Bytes, `\xDEADBEEF`},
		{keys.Int, "12x"},
	} {
		canonical, err := keys.FromText(in.kind, in.text)
		if err != nil {
			fmt.Println("error:", err)
			continue
		}
		fmt.Println(canonical)
	}
	// Output:
	// 7
	// -12.5
	// a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11
	// \xdeadbeef
	// error: keys: bad primary-key value: int "12x": not a decimal integer in the range of int64 or uint64
}

func ExampleParseKey() {
	space, pk, err := keys.ParseKey(`app:{"Sales"."Order%20Items"|v2|1001,a%2Cb}:f`)
	if err != nil {
		panic(err)
	}
	fmt.Printf("%q %q %q %q\n", space.Prefix(), space.Table(), space.Version(), pk)
	// Output:
	// "app:" "\"Sales\".\"Order Items\"" "v2" ["1001" "a,b"]
}

func ExampleHashSlot() {
	fmt.Println(keys.HashSlot("123456789"))
	fmt.Println(keys.HashSlot("{user1000}.following") == keys.HashSlot("{user1000}.followers"))
	// Output:
	// 12739
	// true
}
