package readthrough_test

import (
	"bytes"
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/pgcache/pgcache/readthrough"
)

// IntArray is a bigint[] through a Scanner/Valuer, as pq.Int64Array is.
type IntArray []int64

func (a IntArray) Value() (driver.Value, error) {
	if a == nil {
		return nil, nil
	}
	parts := make([]string, len(a))
	for i, v := range a {
		parts[i] = strconv.FormatInt(v, 10)
	}
	return "{" + strings.Join(parts, ",") + "}", nil
}

func (a *IntArray) Scan(src any) error {
	var s string
	switch src := src.(type) {
	case nil:
		*a = nil
		return nil
	case string:
		s = src
	case []byte:
		s = string(src)
	default:
		return fmt.Errorf("IntArray: scan %T", src)
	}
	s = strings.TrimSuffix(strings.TrimPrefix(s, "{"), "}")
	out := IntArray{}
	if s != "" {
		for _, p := range strings.Split(s, ",") {
			v, err := strconv.ParseInt(p, 10, 64)
			if err != nil {
				return err
			}
			out = append(out, v)
		}
	}
	*a = out
	return nil
}

type (
	Status string
	Level  int16
)

// Audit is embedded anonymously, Address by name, Extra through a pointer.
type Audit struct {
	CreatedBy string
	Revision  int
}

type Address struct {
	Street string
	Zip    *string
}

type Extra struct {
	Label sql.NullString
	Score *float64
}

// Prop has a column of every kind GORM maps on Postgres.
type Prop struct {
	ID       int64 `gorm:"primaryKey"`
	I8       int8  `gorm:"type:smallint"`
	I16      int16
	I32      int32
	I64      int64
	Int      int
	U8       uint8  `gorm:"type:smallint"`
	U32      uint32 `gorm:"type:bigint"`
	Lvl      Level
	F32      float32 `gorm:"type:real"`
	F64      float64 `gorm:"type:double precision"`
	Num      string  `gorm:"type:numeric"`
	Txt      string
	St       Status
	TxtBytes string `gorm:"type:bytea"` // bytes that are not UTF-8, in a string
	Bytes    []byte
	Flag     bool
	Ts       time.Time       `gorm:"type:timestamp"`
	Tstz     time.Time       `gorm:"type:timestamptz"`
	Date     time.Time       `gorm:"type:date"`
	Tod      string          `gorm:"type:time"`
	Ival     string          `gorm:"type:interval"`
	UUIDText string          `gorm:"type:uuid"`
	UUID     uuid.UUID       `gorm:"type:uuid"`
	J        json.RawMessage `gorm:"type:json"`
	JB       json.RawMessage `gorm:"type:jsonb"`
	Arr      IntArray        `gorm:"type:bigint[]"`
	Tags     []string        `gorm:"serializer:json;type:jsonb"`
	PInt     *int64
	PStr     *string
	PTime    *time.Time
	PF       *float64
	NS       sql.NullString
	NI       sql.NullInt64
	NI32     sql.NullInt32
	NI16     sql.NullInt16
	NByte    sql.NullByte `gorm:"type:smallint"`
	NF       sql.NullFloat64
	NB       sql.NullBool
	NT       sql.NullTime
	NG       sql.Null[string]
	Secret   string `json:"-"`
	Total    Money
	Audit    `gorm:"embeddedPrefix:audit_"`
	Addr     Address `gorm:"embedded;embeddedPrefix:addr_"`
	*Extra   `gorm:"embeddedPrefix:extra_"`
}

const propsDDL = `CREATE TABLE props (
	id bigint PRIMARY KEY, i8 smallint, i16 smallint, i32 integer, i64 bigint, int bigint, u8 smallint, u32 bigint,
	lvl smallint, f32 real, f64 double precision, num numeric, txt text, st text, txt_bytes bytea, bytes bytea,
	flag boolean, ts timestamp, tstz timestamptz, date date, tod time, ival interval, uuid_text uuid, uuid uuid,
	j json, jb jsonb, arr bigint[], tags jsonb, p_int bigint, p_str text, p_time timestamptz, pf double precision,
	ns text, ni bigint, ni32 integer, ni16 smallint, n_byte smallint, nf double precision, nb boolean,
	nt timestamptz, ng text, secret text, total bigint, audit_created_by text, audit_revision bigint,
	addr_street text, addr_zip text, extra_label text, extra_score double precision)`

// gen makes random values, biased to the edges.
type gen struct{ r *rand.Rand }

func (g gen) pick(n int) int { return g.r.IntN(n) }

func (g gen) int64() int64 {
	return []int64{0, -1, 1, math.MaxInt64, math.MinInt64, g.r.Int64(), -g.r.Int64N(1000)}[g.pick(7)]
}

func (g gen) float64() float64 {
	return []float64{0, math.Copysign(0, -1), math.NaN(), math.Inf(1), math.Inf(-1), math.MaxFloat64,
		math.SmallestNonzeroFloat64, g.r.NormFloat64() * 1e6, 0.1}[g.pick(9)]
}

func (g gen) text() string {
	pool := []rune{'a', 'Z', '0', ' ', '\\', '"', '\'', '\t', '\n', '\x01', '\x7f', 'é', '€', '\uFFFD', '\u2028', '😀', '{', '}', ','}
	rs := make([]rune, g.pick(12))
	for i := range rs {
		rs[i] = pool[g.pick(len(pool))]
	}
	return string(rs)
}

func (g gen) bytes() []byte {
	switch g.pick(4) {
	case 0:
		return nil
	case 1:
		return []byte{}
	}
	b := make([]byte, g.pick(16))
	for i := range b {
		b[i] = byte(g.r.UintN(256))
	}
	return b
}

// time returns an instant between 4713 BC and 294276 AD, to the microsecond, as a
// load would give it (Postgres keeps microseconds).
func (g gen) time() time.Time {
	var t time.Time
	switch g.pick(4) {
	case 0:
		t = time.Date(-4712+g.pick(4000), time.Month(1+g.pick(12)), 1+g.pick(28), g.pick(24), g.pick(60), g.pick(60), g.pick(1e6)*1000, time.UTC)
	case 1:
		t = time.Date(10000+g.pick(280000), time.Month(1+g.pick(12)), 1+g.pick(28), g.pick(24), g.pick(60), g.pick(60), g.pick(1e6)*1000, time.UTC)
	default:
		t = time.Unix(g.r.Int64N(4e9), int64(g.pick(1e6))*1000).UTC()
	}
	return t
}

func (g gen) numeric() string {
	return []string{"0", "NaN", "Infinity", "-Infinity", "1.50", "-0.000001",
		strconv.FormatInt(g.r.Int64(), 10) + "." + strconv.Itoa(g.pick(1e6)), "123456789012345678901234567890.123"}[g.pick(8)]
}

func (g gen) json(binary bool) json.RawMessage {
	switch g.pick(5) {
	case 0:
		return nil // SQL NULL
	case 1:
		return json.RawMessage(`null`)
	case 2:
		return json.RawMessage(`{"a": [1, 2.5, "x\u00e9"],  "b": null}`)
	case 3:
		b, _ := json.Marshal(g.text())
		return b
	}
	return json.RawMessage(`[]`)
}

func ptr[V any](v V) *V { return &v }

func (g gen) prop(id int64) Prop {
	p := Prop{
		ID: id, I8: int8(g.r.IntN(256) - 128), I16: int16(g.r.IntN(65536) - 32768), I32: g.r.Int32(), I64: g.int64(),
		Int: int(g.int64()), U8: uint8(g.r.UintN(256)), U32: g.r.Uint32(), Lvl: Level(g.r.IntN(100) - 50),
		F32: float32(g.float64()), F64: g.float64(), Num: g.numeric(), Txt: g.text(), St: Status(g.text()),
		TxtBytes: string(g.bytes()), Bytes: g.bytes(), Flag: g.pick(2) == 0,
		Ts: g.time(), Tstz: g.time(), Date: g.time(),
		Tod:      fmt.Sprintf("%02d:%02d:%02d.%06d", g.pick(24), g.pick(60), g.pick(60), g.pick(1e6)),
		Ival:     []string{"1 day 02:03:04", "-3 years 2 mons", "00:00:00.000001", "178000000 years"}[g.pick(4)],
		UUIDText: uuid.New().String(), UUID: uuid.New(),
		J: g.json(false), JB: g.json(true),
		Secret: g.text(), Total: Money{cents: g.r.Int64N(1e9)},
		Audit: Audit{CreatedBy: g.text(), Revision: g.pick(10)},
		Addr:  Address{Street: g.text()},
	}
	if g.pick(2) == 0 {
		p.UUIDText = strings.ToUpper(p.UUIDText)
	}
	if g.pick(2) == 0 {
		p.Arr = IntArray{g.int64(), g.int64()}
	} else if g.pick(2) == 0 {
		p.Arr = IntArray{}
	}
	if g.pick(2) == 0 {
		p.Tags = []string{g.text(), g.text()}
	}
	if g.pick(2) == 0 {
		p.PInt, p.PStr, p.PTime, p.PF = ptr(g.int64()), ptr(g.text()), ptr(g.time()), ptr(g.float64())
		p.Addr.Zip = ptr(g.text())
	}
	if g.pick(2) == 0 {
		p.NS = sql.NullString{String: g.text(), Valid: true}
		p.NI = sql.NullInt64{Int64: g.int64(), Valid: true}
		p.NI32 = sql.NullInt32{Int32: g.r.Int32(), Valid: true}
		p.NI16 = sql.NullInt16{Int16: int16(g.pick(1000)), Valid: true}
		p.NByte = sql.NullByte{Byte: byte(g.pick(256)), Valid: true}
		p.NF = sql.NullFloat64{Float64: g.float64(), Valid: true}
		p.NB = sql.NullBool{Bool: true, Valid: true}
		p.NT = sql.NullTime{Time: g.time(), Valid: true}
		p.NG = sql.Null[string]{V: g.text(), Valid: true}
	}
	if g.pick(2) == 0 {
		p.Extra = &Extra{Label: sql.NullString{String: g.text(), Valid: g.pick(2) == 0}, Score: ptr(g.float64())}
	}
	return p
}

// TestHitEqualsFirst is the property behind promise 19: random rows over every column
// kind GORM maps on Postgres, under each codec, come back from a hit exactly as an
// uncached First returns them, and a read-modify-write Save of the cached row leaves
// Postgres as a Save of the uncached row does.
func TestHitEqualsFirst(t *testing.T) {
	t.Parallel()
	const rows = 40
	for i, codec := range []readthrough.Codec{readthrough.Binary{}, readthrough.JSON{}, readthrough.Msgpack{}} {
		t.Run(codec.Name(), func(t *testing.T) {
			t.Parallel()
			seed := uint64(1000 + i)
			g := gen{rand.New(rand.NewPCG(seed, seed))}
			e := newEnv(t)
			e.exec(t, propsDDL)
			ctx := ctxT(t)
			repo, err := readthrough.Register[Prop](e.cache(t, e.db), readthrough.ModelOptions{Codec: codec})
			if err != nil {
				t.Fatal(err)
			}
			ids := make([]any, rows)
			for n := range rows {
				id := int64(n + 1)
				ids[n] = id
				p := g.prop(id)
				// A Go string bound to a bytea parameter is read as bytea's text input;
				// the bytes go in as []byte.
				if err := e.db.Omit("TxtBytes").Create(&p).Error; err != nil {
					t.Fatalf("seed %d: insert %+v: %v", seed, p, err)
				}
				e.exec(t, `UPDATE props SET txt_bytes = ? WHERE id = ?`, []byte(p.TxtBytes), id)
			}
			for _, id := range ids {
				first := hitEqualsFirst(t, e, repo, id)
				// A read-modify-write Save of the hit writes what a Save of the uncached
				// row writes. GORM cannot write bytes that are not UTF-8 from a string
				// (pgx sends a string as text), so both write the same bytes there.
				first.TxtBytes = "x"
				if err := e.db.WithContext(ctx).Save(&first).Error; err != nil {
					t.Fatalf("seed %d: Save(First(%v)): %v", seed, id, err)
				}
				var want Prop
				if err := e.db.WithContext(ctx).First(&want, id).Error; err != nil {
					t.Fatal(err)
				}
				hit, _, err := repo.Get(ctx, id)
				if err != nil {
					t.Fatal(err)
				}
				hit.TxtBytes = "x"
				if err := repo.Save(ctx, &hit); err != nil {
					t.Fatalf("seed %d: repo.Save(%v): %v", seed, id, err)
				}
				var got Prop
				if err := e.db.WithContext(ctx).First(&got, id).Error; err != nil {
					t.Fatal(err)
				}
				if d := diff(want, got); d != "" {
					t.Fatalf("seed %d: row %v after a Save of the hit differs from after a Save of First (Save(First), Save(hit)):\n%s", seed, id, d)
				}
			}
			// GetMany: every row from Redis, equal to First.
			if _, err := repo.GetMany(ctx, ids...); err != nil { // fills what the Saves invalidated
				t.Fatal(err)
			}
			before := repo.Stats()
			many, err := repo.GetMany(ctx, ids...)
			if err != nil || len(many) != rows {
				t.Fatalf("GetMany = %d rows, %v", len(many), err)
			}
			if s := repo.Stats(); s.Hits != before.Hits+rows || s.Uncacheable != 0 {
				t.Fatalf("GetMany stats %+v (before %+v): want %d hits and nothing uncacheable", s, before, rows)
			}
			for n, got := range many {
				var want Prop
				if err := e.db.WithContext(ctx).First(&want, ids[n]).Error; err != nil {
					t.Fatal(err)
				}
				if d := diff(want, got); d != "" {
					t.Fatalf("seed %d: GetMany row %v differs from First (First, GetMany):\n%s", seed, ids[n], d)
				}
			}
		})
	}
}

// TestCodecsRoundTrip: each codec gives back exactly the column values it was given,
// without servers.
func TestCodecsRoundTrip(t *testing.T) {
	t.Parallel()
	g := gen{rand.New(rand.NewPCG(7, 7))}
	zone := time.FixedZone("XST", -(3*3600 + 1800))
	values := func() []driver.Value {
		return []driver.Value{
			nil, true, false, g.int64(), g.float64(), math.NaN(), g.text(), "\xff\xfe\x00", string(g.bytes()),
			[]byte{}, g.bytes(), []byte("\xff"), g.time(), g.time().Local(), g.time().In(zone),
			time.Date(-4712, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(294276, 12, 31, 23, 59, 59, 999999000, time.Local),
			"", "null", `{"float":"NaN"}`, int64(math.MinInt64), 1e300, 2.0,
		}
	}
	for _, codec := range []readthrough.Codec{readthrough.Binary{}, readthrough.JSON{}, readthrough.Msgpack{}} {
		for range 50 {
			in := values()
			for i, v := range in {
				if b, ok := v.([]byte); ok && b == nil {
					in[i] = nil // a record holds NULL, never a nil []byte
				}
			}
			g.r.Shuffle(len(in), func(i, j int) { in[i], in[j] = in[j], in[i] })
			b, err := codec.AppendColumns([]byte("prefix"), in)
			if err != nil || !bytes.HasPrefix(b, []byte("prefix")) {
				t.Fatalf("%s: AppendColumns: %v", codec.Name(), err)
			}
			out := make([]driver.Value, len(in))
			if err := codec.DecodeColumns(b[len("prefix"):], out); err != nil {
				t.Fatalf("%s: DecodeColumns(%q): %v", codec.Name(), b, err)
			}
			for i := range in {
				if d := diff(in[i], out[i]); d != "" {
					t.Fatalf("%s: column %d: %#v came back as %#v:\n%s", codec.Name(), i, in[i], out[i], d)
				}
			}
			if codec.Name() == "json2" && !utf8.Valid(b) {
				t.Fatalf("json: not UTF-8: %q", b)
			}
			if err := codec.DecodeColumns(b[len("prefix"):], make([]driver.Value, len(in)+1)); err == nil {
				t.Fatalf("%s: decoding %d columns as %d did not fail", codec.Name(), len(in), len(in)+1)
			}
		}
	}
}

// FuzzDecodeColumns: no input makes a codec panic, and what a codec decodes it encodes
// back to the same values.
func FuzzDecodeColumns(f *testing.F) {
	codecs := []readthrough.Codec{readthrough.Binary{}, readthrough.JSON{}, readthrough.Msgpack{}}
	for _, c := range codecs {
		b, _ := c.AppendColumns(nil, []driver.Value{nil, true, int64(-3), math.Inf(1), "s\xff", []byte{0},
			time.Date(-100, 1, 1, 0, 0, 0, 1000, time.UTC), time.Unix(5, 0).In(time.FixedZone("Z", 60))})
		f.Add(uint8(8), b)
	}
	f.Fuzz(func(t *testing.T, n uint8, data []byte) {
		for _, c := range codecs {
			cols := make([]driver.Value, n%16)
			if err := c.DecodeColumns(data, cols); err != nil {
				continue
			}
			b, err := c.AppendColumns(nil, cols)
			if err != nil {
				t.Fatalf("%s: decoded %#v, which it cannot encode: %v", c.Name(), cols, err)
			}
			again := make([]driver.Value, len(cols))
			if err := c.DecodeColumns(b, again); err != nil {
				t.Fatalf("%s: cannot decode its own %q: %v", c.Name(), b, err)
			}
			if d := diff(cols, again); d != "" {
				t.Fatalf("%s: %#v came back as %#v:\n%s", c.Name(), cols, again, d)
			}
		}
	})
}
