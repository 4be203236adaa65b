package runtime

import (
	"fmt"

	"github.com/dispatcher-dev/dispatcher/jobgraph"
)

type aggKind int

const (
	aggCount aggKind = iota
	aggSum
	aggMin
	aggMax
)

var aggNames = [...]string{"count", "sum", "min", "max"}

// aggregate implements the keyed count, sum, min and max. Like Flink's
// keyed aggregations it emits the updated aggregate on every input record:
// {"key": <key>, "<agg>": <value>}. Sum, min and max read a numeric field
// (int64 stays int64 until a float64 is seen); a record without a numeric
// field fails the subtask.
type aggregate struct {
	kind  aggKind
	field string
	in    *keyedInput
	state *keyedState[number]
}

func newAggregate(kind aggKind, p jobgraph.Params) Operator {
	return &aggregate{kind: kind, field: p.StringOr("field", "")}
}

func (a *aggregate) Open(ctx *OpContext) error {
	var err error
	if a.in, err = newKeyedInput(ctx); err != nil {
		return err
	}
	a.state = newKeyedState(ctx.KeyGroups, ctx.MaxParallelism,
		func(b []byte, n *number) []byte { return appendNumber(b, *n) },
		func(b []byte, n *number) ([]byte, error) {
			var d decoder
			var err error
			*n, b, err = decodeNumber(&d, b)
			return b, err
		})
	return nil
}

// State exposes the keyed state (for checkpoints).
func (a *aggregate) State() KeyedState { return a.state }

func (a *aggregate) Process(input int, recs []Record, out *Output) error {
	name := aggNames[a.kind]
	for _, r := range recs {
		key, kg, err := a.in.key(input, r)
		if err != nil {
			return err
		}
		e, err := a.state.get(kg, key)
		if err != nil {
			return err
		}
		if a.kind == aggCount {
			e.v.i++
			e.v.set = true
		} else {
			x, ok := toNumber(r[a.field])
			if !ok {
				return fmt.Errorf("%s: field %q of record %s is not a number", name, a.field, recordSnippet(r))
			}
			switch {
			case a.kind == aggSum:
				e.v.add(x)
			case !e.v.set, a.kind == aggMin && x.less(e.v), a.kind == aggMax && e.v.less(x):
				e.v = x
			}
		}
		if err := out.Emit(Record{"key": key, name: e.v.value()}); err != nil {
			return err
		}
	}
	return nil
}

func (a *aggregate) Finish(*Output) error { return nil }
func (a *aggregate) Close() error         { return nil }
