package runtime

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"time"
)

// Record is one element of a stream: a JSON-like object. Values are nil,
// bool, int64, float64, string, []any and map[string]any (integers are
// always int64: sources produce int64 and every operator normalises the
// results of expressions and decoded JSON to these types).
//
// Records are immutable once emitted: the executor passes the same map to
// local receivers (and to several receivers of a broadcast) without copying.
type Record = map[string]any

// normalize converts a value to the canonical record types, in place for
// maps and slices when an element needs converting.
func normalize(v any) (any, error) {
	switch x := v.(type) {
	case nil, bool, int64, float64, string:
		return v, nil
	case int:
		return int64(x), nil
	case map[string]any:
		for k, e := range x {
			if n, changed, err := normalizeElem(e); err != nil {
				return nil, err
			} else if changed {
				x[k] = n
			}
		}
		return x, nil
	case []any:
		for i, e := range x {
			if n, changed, err := normalizeElem(e); err != nil {
				return nil, err
			} else if changed {
				x[i] = n
			}
		}
		return x, nil
	case int8, int16, int32:
		return reflect.ValueOf(x).Int(), nil
	case uint, uint8, uint16, uint32, uint64:
		u := reflect.ValueOf(x).Uint()
		if u > math.MaxInt64 {
			return float64(u), nil
		}
		return int64(u), nil
	case float32:
		return float64(x), nil
	case json.Number:
		if n, err := x.Int64(); err == nil {
			return n, nil
		}
		f, err := x.Float64()
		if err != nil {
			return nil, fmt.Errorf("bad number %q", x)
		}
		return f, nil
	case []string:
		out := make([]any, len(x))
		for i, s := range x {
			out[i] = s
		}
		return out, nil
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano), nil
	case time.Duration:
		return x.Milliseconds(), nil
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Slice, reflect.Array:
		out := make([]any, rv.Len())
		for i := range out {
			n, err := normalize(rv.Index(i).Interface())
			if err != nil {
				return nil, err
			}
			out[i] = n
		}
		return out, nil
	case reflect.Map:
		if rv.Type().Key().Kind() == reflect.String {
			out := make(map[string]any, rv.Len())
			it := rv.MapRange()
			for it.Next() {
				n, err := normalize(it.Value().Interface())
				if err != nil {
					return nil, err
				}
				out[it.Key().String()] = n
			}
			return out, nil
		}
	}
	return nil, fmt.Errorf("unsupported value of type %T", v)
}

// normalizeElem normalises a map or slice element and reports whether it
// must be written back. Nothing is written when nothing changes, so shared
// (already canonical) records are never written to.
func normalizeElem(e any) (any, bool, error) {
	switch x := e.(type) {
	case nil, bool, int64, float64, string:
		return e, false, nil
	case map[string]any:
		_, err := normalize(x)
		return e, false, err
	case []any:
		_, err := normalize(x)
		return e, false, err
	}
	n, err := normalize(e)
	return n, true, err
}

// toRecord normalises an expression or JSON result that must be an object.
func toRecord(v any) (Record, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("want an object, got %s", describe(v))
	}
	if _, err := normalize(m); err != nil {
		return nil, err
	}
	return m, nil
}

func describe(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case string:
		return "string " + strconv.Quote(x)
	case []any:
		return "an array"
	}
	return fmt.Sprintf("%T %v", v, v)
}

// Binary record codec used on the network. A batch is uvarint(count)
// followed by count objects. Values are a tag byte then:
//
//	0 null, 1 false, 2 true, 3 int64 (zigzag varint), 4 float64 (8 bytes LE),
//	5 string (uvarint length, bytes), 6 array (uvarint n, n values),
//	7 object (uvarint n, n × (uvarint key length, key bytes, value)).
const (
	tagNull byte = iota
	tagFalse
	tagTrue
	tagInt
	tagFloat
	tagString
	tagArray
	tagObject
)

func appendValue(b []byte, v any) []byte {
	switch x := v.(type) {
	case nil:
		return append(b, tagNull)
	case bool:
		if x {
			return append(b, tagTrue)
		}
		return append(b, tagFalse)
	case int64:
		return binary.AppendVarint(append(b, tagInt), x)
	case float64:
		return binary.LittleEndian.AppendUint64(append(b, tagFloat), math.Float64bits(x))
	case string:
		b = binary.AppendUvarint(append(b, tagString), uint64(len(x)))
		return append(b, x...)
	case []any:
		b = binary.AppendUvarint(append(b, tagArray), uint64(len(x)))
		for _, e := range x {
			b = appendValue(b, e)
		}
		return b
	case map[string]any:
		return appendObject(append(b, tagObject), x)
	}
	// Not canonical (records are normalised before they are emitted, so
	// this is a fallback): normalize returns only canonical types.
	if n, err := normalize(v); err == nil {
		return appendValue(b, n)
	}
	return append(b, tagNull)
}

func appendObject(b []byte, m map[string]any) []byte {
	b = binary.AppendUvarint(b, uint64(len(m)))
	for k, e := range m {
		b = binary.AppendUvarint(b, uint64(len(k)))
		b = append(b, k...)
		b = appendValue(b, e)
	}
	return b
}

var errCorrupt = errors.New("corrupt record encoding")

// decoder decodes records, interning object keys (field names repeat in
// every record) so that decoding allocates only maps and values.
type decoder struct {
	keys map[string]string
}

func (d *decoder) key(b []byte) string {
	if s, ok := d.keys[string(b)]; ok {
		return s
	}
	s := string(b)
	if d.keys == nil {
		d.keys = map[string]string{}
	}
	if len(d.keys) < 4096 {
		d.keys[s] = s
	}
	return s
}

func (d *decoder) uvarint(b []byte) (uint64, []byte, error) {
	n, k := binary.Uvarint(b)
	if k <= 0 {
		return 0, nil, errCorrupt
	}
	return n, b[k:], nil
}

func (d *decoder) value(b []byte) (any, []byte, error) {
	if len(b) == 0 {
		return nil, nil, errCorrupt
	}
	tag, b := b[0], b[1:]
	switch tag {
	case tagNull:
		return nil, b, nil
	case tagFalse:
		return false, b, nil
	case tagTrue:
		return true, b, nil
	case tagInt:
		n, k := binary.Varint(b)
		if k <= 0 {
			return nil, nil, errCorrupt
		}
		return n, b[k:], nil
	case tagFloat:
		if len(b) < 8 {
			return nil, nil, errCorrupt
		}
		return math.Float64frombits(binary.LittleEndian.Uint64(b)), b[8:], nil
	case tagString:
		n, b, err := d.uvarint(b)
		if err != nil || uint64(len(b)) < n {
			return nil, nil, errCorrupt
		}
		return string(b[:n]), b[n:], nil
	case tagArray:
		n, b, err := d.uvarint(b)
		if err != nil || n > uint64(len(b)) {
			return nil, nil, errCorrupt
		}
		arr := make([]any, n)
		for i := range arr {
			if arr[i], b, err = d.value(b); err != nil {
				return nil, nil, err
			}
		}
		return arr, b, nil
	case tagObject:
		return d.object(b)
	}
	return nil, nil, errCorrupt
}

func (d *decoder) object(b []byte) (map[string]any, []byte, error) {
	n, b, err := d.uvarint(b)
	if err != nil || n > uint64(len(b)) {
		return nil, nil, errCorrupt
	}
	m := make(map[string]any, n)
	for range n {
		var kl uint64
		if kl, b, err = d.uvarint(b); err != nil || uint64(len(b)) < kl {
			return nil, nil, errCorrupt
		}
		k := d.key(b[:kl])
		b = b[kl:]
		var v any
		if v, b, err = d.value(b); err != nil {
			return nil, nil, err
		}
		m[k] = v
	}
	return m, b, nil
}

// appendBatch encodes records as uvarint(count) + objects.
func appendBatch(b []byte, recs []Record) []byte {
	b = binary.AppendUvarint(b, uint64(len(recs)))
	for _, r := range recs {
		b = appendObject(b, r)
	}
	return b
}

// decodeBatch appends the records of an encoded batch to recs.
func (d *decoder) decodeBatch(recs []Record, b []byte) ([]Record, error) {
	n, b, err := d.uvarint(b)
	if err != nil || n > uint64(len(b)) {
		return recs, errCorrupt
	}
	for range n {
		var m map[string]any
		if m, b, err = d.object(b); err != nil {
			return recs, err
		}
		recs = append(recs, m)
	}
	if len(b) != 0 {
		return recs, errCorrupt
	}
	return recs, nil
}
