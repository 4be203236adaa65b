package runtime

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"unicode/utf8"
)

// jsonWriter appends records as JSON lines with sorted object keys, so the
// output of a job is deterministic and diffable.
type jsonWriter struct {
	keys []string
}

func (w *jsonWriter) appendRecord(b []byte, r Record) []byte {
	return append(w.appendValue(b, r), '\n')
}

func (w *jsonWriter) appendValue(b []byte, v any) []byte {
	switch x := v.(type) {
	case nil:
		return append(b, "null"...)
	case bool:
		return strconv.AppendBool(b, x)
	case int64:
		return strconv.AppendInt(b, x, 10)
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return append(b, "null"...)
		}
		abs := math.Abs(x)
		if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
			return strconv.AppendFloat(b, x, 'e', -1, 64)
		}
		b = strconv.AppendFloat(b, x, 'f', -1, 64)
		if x == math.Trunc(x) {
			b = append(b, '.', '0') // stays a float when read back
		}
		return b
	case string:
		return appendJSONString(b, x)
	case []any:
		b = append(b, '[')
		for i, e := range x {
			if i > 0 {
				b = append(b, ',')
			}
			b = w.appendValue(b, e)
		}
		return append(b, ']')
	case map[string]any:
		start := len(w.keys)
		for k := range x {
			w.keys = append(w.keys, k)
		}
		keys := w.keys[start:]
		slices.Sort(keys)
		b = append(b, '{')
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, k)
			b = append(b, ':')
			b = w.appendValue(b, x[k])
		}
		w.keys = w.keys[:start]
		return append(b, '}')
	}
	if n, err := normalize(v); err == nil {
		return w.appendValue(b, n)
	}
	return append(b, "null"...)
}

const hexDigits = "0123456789abcdef"

func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// parseJSONRecord decodes one JSON object into a record with canonical
// value types (integers as int64, other numbers as float64).
func parseJSONRecord(line []byte) (Record, error) {
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, fmt.Errorf("data after the JSON value")
	}
	return toRecord(v)
}
