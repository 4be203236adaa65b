package jobgraph

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"
)

// Params are an operator's parameters as decoded from JSON (numbers are
// json.Number, float64 or int64). The typed getters convert; Parse has
// already checked every parameter of a built-in operator against its
// definition, so after Parse the *Or getters cannot meet a wrong type.
type Params map[string]any

// Has reports whether the parameter is set.
func (p Params) Has(name string) bool { _, ok := p[name]; return ok }

// Int returns an integer parameter.
func (p Params) Int(name string) (v int64, ok bool, err error) {
	raw, ok := p[name]
	if !ok {
		return 0, false, nil
	}
	v, err = toInt(raw)
	if err != nil {
		return 0, true, fmt.Errorf("param %q: %w", name, err)
	}
	return v, true, nil
}

// Float returns a numeric parameter.
func (p Params) Float(name string) (v float64, ok bool, err error) {
	raw, ok := p[name]
	if !ok {
		return 0, false, nil
	}
	v, err = toFloat(raw)
	if err != nil {
		return 0, true, fmt.Errorf("param %q: %w", name, err)
	}
	return v, true, nil
}

// String returns a string parameter.
func (p Params) String(name string) (v string, ok bool, err error) {
	raw, ok := p[name]
	if !ok {
		return "", false, nil
	}
	s, isStr := raw.(string)
	if !isStr {
		return "", true, fmt.Errorf("param %q: want a string, got %s", name, jsonType(raw))
	}
	return s, true, nil
}

// Duration returns a duration parameter (Go duration string or integer ms).
func (p Params) Duration(name string) (v time.Duration, ok bool, err error) {
	raw, ok := p[name]
	if !ok {
		return 0, false, nil
	}
	switch x := raw.(type) {
	case string:
		v, err = parseDurationString(x)
	default:
		var n int64
		n, err = toInt(raw)
		if err == nil && n < 0 {
			err = fmt.Errorf("negative duration %d", n)
		}
		v = time.Duration(n) * time.Millisecond
	}
	if err != nil {
		return 0, true, fmt.Errorf("param %q: %w", name, err)
	}
	return v, true, nil
}

// Strings returns a parameter that is an array of strings.
func (p Params) Strings(name string) (v []string, ok bool, err error) {
	raw, ok := p[name]
	if !ok {
		return nil, false, nil
	}
	arr, isArr := raw.([]any)
	if !isArr {
		if ss, isSS := raw.([]string); isSS {
			return ss, true, nil
		}
		return nil, true, fmt.Errorf("param %q: want an array of strings, got %s", name, jsonType(raw))
	}
	for _, a := range arr {
		s, isStr := a.(string)
		if !isStr {
			return nil, true, fmt.Errorf("param %q: want an array of strings, found %s", name, jsonType(a))
		}
		v = append(v, s)
	}
	return v, true, nil
}

// IntOr returns an integer parameter or def when it is absent or invalid.
func (p Params) IntOr(name string, def int64) int64 {
	if v, ok, err := p.Int(name); ok && err == nil {
		return v
	}
	return def
}

// FloatOr returns a numeric parameter or def when it is absent or invalid.
func (p Params) FloatOr(name string, def float64) float64 {
	if v, ok, err := p.Float(name); ok && err == nil {
		return v
	}
	return def
}

// StringOr returns a string parameter or def when it is absent or invalid.
func (p Params) StringOr(name, def string) string {
	if v, ok, err := p.String(name); ok && err == nil {
		return v
	}
	return def
}

// DurationOr returns a duration parameter or def when it is absent or invalid.
func (p Params) DurationOr(name string, def time.Duration) time.Duration {
	if v, ok, err := p.Duration(name); ok && err == nil {
		return v
	}
	return def
}

func toInt(raw any) (int64, error) {
	switch x := raw.(type) {
	case json.Number:
		if n, err := x.Int64(); err == nil {
			return n, nil
		}
		f, err := x.Float64()
		if err != nil {
			return 0, fmt.Errorf("want an integer, got %s", x)
		}
		return floatToInt(f)
	case float64:
		return floatToInt(x)
	case int64:
		return x, nil
	case int:
		return int64(x), nil
	}
	return 0, fmt.Errorf("want an integer, got %s", jsonType(raw))
}

func floatToInt(f float64) (int64, error) {
	if f != math.Trunc(f) || math.Abs(f) > 1<<63-1024 {
		return 0, fmt.Errorf("want an integer, got %s", strconv.FormatFloat(f, 'g', -1, 64))
	}
	return int64(f), nil
}

func toFloat(raw any) (float64, error) {
	switch x := raw.(type) {
	case json.Number:
		f, err := x.Float64()
		if err != nil {
			return 0, fmt.Errorf("want a number, got %s", x)
		}
		return f, nil
	case float64:
		return x, nil
	case int64:
		return float64(x), nil
	case int:
		return float64(x), nil
	}
	return 0, fmt.Errorf("want a number, got %s", jsonType(raw))
}

func jsonType(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case string:
		return "a string"
	case json.Number, float64, int64, int:
		return "a number"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}
