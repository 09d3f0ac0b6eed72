package readthrough

import (
	"context"
	"database/sql/driver"
	"encoding/json"
	"reflect"
	"sync"
	"testing"

	"gorm.io/gorm/schema"
)

type benchWidget struct {
	ID    int64 `gorm:"primaryKey"`
	Name  string
	Price int
}

// BenchmarkDecode measures what a hit spends on the entry after the GET, without
// servers: the column record decoded and set through GORM's setters under each codec,
// against encoding/json decoding the struct (the former default) as the baseline.
func BenchmarkDecode(b *testing.B) {
	sch, err := schema.Parse(&benchWidget{}, &sync.Map{}, schema.NamingStrategy{})
	if err != nil {
		b.Fatal(err)
	}
	row := benchWidget{ID: 1, Name: "a widget of typical size for a cache benchmark", Price: 42}
	b.Run("baseline-json-struct", func(b *testing.B) {
		data, _ := json.Marshal(row)
		b.ReportAllocs()
		for b.Loop() {
			var w benchWidget
			if err := json.Unmarshal(data, &w); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, codec := range []Codec{Binary{}, JSON{}, Msgpack{}} {
		b.Run(codec.Name(), func(b *testing.B) {
			rec := newRecorder(sch, codec)
			ctx := context.Background()
			data, _, err := rec.appendRow(ctx, nil, reflect.ValueOf(&row).Elem())
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				var w benchWidget
				cols := make([]driver.Value, len(rec.fields))
				if err := rec.decode(ctx, data, reflect.ValueOf(&w).Elem(), cols); err != nil || w != row {
					b.Fatal(w, err)
				}
			}
		})
	}
}
