package readthrough

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"reflect"
	"strings"

	"gorm.io/gorm"
	"gorm.io/gorm/schema"

	"github.com/pgcache/pgcache/keys"
)

// model is what the cache knows of a GORM model: its table, its primary-key columns and
// how their values are canonicalised, and its key space.
type model struct {
	schema *schema.Schema
	pk     []*schema.Field
	kinds  []keys.Kind
	// order is the order in which the key takes the pk fields' values (keys.Order).
	order []int
	space keys.Space

	// For write-back changes: the table, unquoted, and the columns a whole-row
	// upsert writes and updates.
	pgSchema, pgTable string
	pkNamesList       []string
	writeCols         []*schema.Field
	writeNames        []string
	updateNames       []string
	autoTime          []*schema.Field

	// softDelete is the gorm.DeletedAt field, nil if none (see softdelete.go);
	// envelope starts every entry of a write-back model ("" for other models).
	softDelete *schema.Field
	envelope   string

	// lookups are the model's registered lookups by unique values and lists (see
	// lookup.go); nil if none.
	lookups *lookups
}

func parseModel(db *gorm.DB, value any, prefix string, opts ModelOptions) (*model, error) {
	stmt := &gorm.Statement{DB: db}
	if err := stmt.Parse(value); err != nil {
		return nil, fmt.Errorf("readthrough: parse model %T: %w", value, err)
	}
	sch := stmt.Schema
	if len(sch.PrimaryFields) == 0 {
		return nil, fmt.Errorf("readthrough: model %s has no primary key: tag a field `gorm:\"primaryKey\"`", sch.Name)
	}
	m := &model{schema: sch, pk: sch.PrimaryFields}

	// The table and its key as the catalog has them: the change side knows no other.
	ref := quoteRef(opts.Schema, unquote(sch.Table))
	if s, t, ok := strings.Cut(sch.Table, "."); ok {
		ref = quoteRef(unquote(s), unquote(t))
	}
	tab, err := lookUpTable(db, ref)
	if err != nil {
		return nil, fmt.Errorf("readthrough: model %s: %w", sch.Name, err)
	}
	if opts.Schema != "" && !strings.Contains(sch.Table, ".") {
		// GORM's queries name the table unqualified: they must reach the same one.
		reached, err := lookUpTable(db, quoteRef("", unquote(sch.Table)))
		if err != nil || reached.schema != tab.schema {
			return nil, fmt.Errorf("%w: model %s: ModelOptions.Schema is %q, but GORM's queries of table %s reach another table through the connection's search_path (%s.%s, err %v): qualify the table name (a TableName method returning \"%s.%s\") or leave Schema empty",
				ErrConfig, sch.Name, opts.Schema, sch.Table, reached.schema, reached.name, err, opts.Schema, sch.Table)
		}
	}
	names := make([]string, len(m.pk))
	for i, f := range m.pk {
		names[i] = f.DBName
	}
	if err := checkPrimaryKey(sch.Name, names, tab.pk, keys.QualifiedTable(tab.schema, tab.name)); err != nil {
		return nil, err
	}
	for _, f := range m.pk {
		m.kinds = append(m.kinds, tab.kinds[f.DBName])
	}
	m.order = keys.Order(names)

	version := opts.Version
	if version == "" {
		version = schemaVersion(sch, opts.Codec)
	}
	space, err := keys.NewSpace(prefix, keys.QualifiedTable(tab.schema, tab.name), version)
	if err != nil {
		return nil, fmt.Errorf("readthrough: model %s: %w", sch.Name, err)
	}
	m.space = space
	m.pgSchema, m.pgTable = tab.schema, tab.name
	for _, f := range m.pk {
		m.pkNamesList = append(m.pkNamesList, f.DBName)
	}
	for _, name := range sch.DBNames {
		f := sch.FieldsByDBName[name]
		if f == nil || !f.Creatable {
			continue
		}
		m.writeCols = append(m.writeCols, f)
		m.writeNames = append(m.writeNames, name)
		// Like GORM's Save, update every writable column, except the key and the
		// creation time, which keeps the first write's value.
		if f.Updatable && !f.PrimaryKey && f.AutoCreateTime == 0 {
			m.updateNames = append(m.updateNames, name)
		}
		if f.AutoCreateTime > 0 || f.AutoUpdateTime > 0 {
			m.autoTime = append(m.autoTime, f)
		}
	}
	return m, nil
}

func unquote(s string) string {
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		return strings.ReplaceAll(s[1:len(s)-1], `""`, `"`)
	}
	return s
}

// schemaVersion digests what decides the shape of the cached bytes: the table, the
// entry format ("columns": a column record, see columns.go) and its codec, the columns
// the record holds, in order, and every field's column, type and Go type. Changing the
// struct moves the model to fresh keys, so bytes written by an older build are never
// decoded into it.
func schemaVersion(sch *schema.Schema, codec Codec) string {
	h := sha256.New()
	// keyFormat names how keys are built from the primary key (composite values in
	// the order of their column names since 2), so that keys of another format, which
	// could name another row, are never read.
	const keyFormat = "keys2"
	fmt.Fprintf(h, "%s\x00columns\x00%s\x00%s\x00", sch.Table, codec.Name(), keyFormat)
	for _, f := range mappedFields(sch) {
		fmt.Fprintf(h, "%s\x00", f.DBName)
	}
	fmt.Fprintf(h, "\x00")
	for _, f := range sch.Fields {
		fmt.Fprintf(h, "%s\x00%s\x00%s\x00%s\x00%t\x00", f.Name, f.DBName, f.DataType, f.FieldType, f.PrimaryKey)
	}
	return "s" + hex.EncodeToString(h.Sum(nil)[:5])
}

// key returns the row key of an id given by the caller: one value, or for a composite key
// a []any with the values in the order the primary-key fields are declared.
func (m *model) key(id any) (keys.Key, error) {
	if len(m.pk) == 1 {
		k, err := m.space.KeyFromGo(m.kinds[0], id)
		if err != nil {
			return keys.Key{}, fmt.Errorf("readthrough: %s id %v: %w", m.schema.Name, id, err)
		}
		return k, nil
	}
	vals, ok := id.([]any)
	if !ok || len(vals) != len(m.pk) {
		return keys.Key{}, fmt.Errorf("readthrough: %s has a composite primary key (%s): pass the id as []any with %d values in that order, got %T",
			m.schema.Name, m.pkNames(), len(m.pk), id)
	}
	canon := make([]string, len(vals))
	for j, i := range m.order {
		c, err := keys.FromGo(m.kinds[i], vals[i])
		if err != nil {
			return keys.Key{}, fmt.Errorf("readthrough: %s id %v, column %s: %w", m.schema.Name, id, m.pk[i].DBName, err)
		}
		canon[j] = c
	}
	return m.space.Key(canon...), nil
}

// rowKey returns the key of a loaded row, from its primary-key fields.
func (m *model) rowKey(ctx context.Context, row reflect.Value) (keys.Key, error) {
	canon := make([]string, len(m.pk))
	for j, i := range m.order {
		f := m.pk[i]
		v, _ := f.ValueOf(ctx, row)
		c, err := keys.FromGo(m.kinds[i], v)
		if err != nil {
			return keys.Key{}, fmt.Errorf("readthrough: %s row key, column %s: %w", m.schema.Name, f.DBName, err)
		}
		canon[j] = c
	}
	return m.space.Key(canon...), nil
}

func (m *model) pkNames() string {
	names := make([]string, len(m.pk))
	for i, f := range m.pk {
		names[i] = f.DBName
	}
	return strings.Join(names, ", ")
}
