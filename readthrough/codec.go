package readthrough

import (
	"encoding/json"

	"github.com/vmihailenco/msgpack/v5"
)

// Codec turns a model value into the bytes cached in Redis and back. Its Name is part of
// the model's schema version, so switching codecs never decodes one codec's bytes with
// another. Implementations must be safe for concurrent use.
type Codec interface {
	Name() string
	Marshal(v any) ([]byte, error)
	Unmarshal(data []byte, v any) error
}

// JSON is the default codec: encoding/json, readable in redis-cli.
type JSON struct{}

func (JSON) Name() string                       { return "json" }
func (JSON) Marshal(v any) ([]byte, error)      { return json.Marshal(v) }
func (JSON) Unmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }

// Msgpack is a binary codec (github.com/vmihailenco/msgpack/v5): smaller entries and
// faster than JSON for most models. Fields are encoded by name, as with JSON.
type Msgpack struct{}

func (Msgpack) Name() string                       { return "msgpack" }
func (Msgpack) Marshal(v any) ([]byte, error)      { return msgpack.Marshal(v) }
func (Msgpack) Unmarshal(data []byte, v any) error { return msgpack.Unmarshal(data, v) }
