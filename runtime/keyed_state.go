package runtime

import (
	"encoding/binary"
	"fmt"
	"sort"

	"github.com/dispatcher-dev/dispatcher/jobgraph"
)

// KeyedState is the state of a keyed operator, partitioned by key group so
// that a checkpoint can store each key group separately and a rescale can
// hand key groups to other subtasks.
type KeyedState interface {
	// KeyGroups is the range of key groups this state owns.
	KeyGroups() jobgraph.KeyGroupRange
	// SnapshotKeyGroup serialises one key group (deterministic bytes).
	SnapshotKeyGroup(kg int) ([]byte, error)
	// RestoreKeyGroup replaces one key group with a snapshot.
	RestoreKeyGroup(kg int, data []byte) error
}

// keyedState holds per key group a map from the key's canonical string
// (jobgraph.AppendKeyString) to the key and its value.
type keyedState[V any] struct {
	kgs    jobgraph.KeyGroupRange
	maxP   int
	groups []map[string]*entry[V]
	enc    func(b []byte, v *V) []byte
	dec    func(b []byte, v *V) ([]byte, error)
	buf    []byte
	// sizeHint is the serialised bytes per entry seen last (snapshots).
	sizeHint int
}

type entry[V any] struct {
	key any
	v   V
}

func newKeyedState[V any](kgs jobgraph.KeyGroupRange, maxP int, enc func([]byte, *V) []byte, dec func([]byte, *V) ([]byte, error)) *keyedState[V] {
	return &keyedState[V]{kgs: kgs, maxP: maxP, groups: make([]map[string]*entry[V], kgs.Len()), enc: enc, dec: dec}
}

// get returns the entry of key (creating it) in key group kg.
func (s *keyedState[V]) get(kg int, key any) (*entry[V], error) {
	if !s.kgs.Contains(kg) {
		return nil, fmt.Errorf("key %v is in key group %d, outside this subtask's range %d-%d", key, kg, s.kgs.Start, s.kgs.End)
	}
	g := s.groups[kg-s.kgs.Start]
	if g == nil {
		g = map[string]*entry[V]{}
		s.groups[kg-s.kgs.Start] = g
	}
	var ks string
	if str, ok := key.(string); ok {
		ks = str
		if e := g[ks]; e != nil {
			return e, nil
		}
	} else {
		s.buf = jobgraph.AppendKeyString(s.buf[:0], key)
		if e := g[string(s.buf)]; e != nil {
			return e, nil
		}
		ks = string(s.buf)
	}
	e := &entry[V]{key: key}
	g[ks] = e
	return e, nil
}

// each visits every entry (in no particular order).
func (s *keyedState[V]) each(f func(*entry[V])) {
	for _, g := range s.groups {
		for _, e := range g {
			f(e)
		}
	}
}

func (s *keyedState[V]) KeyGroups() jobgraph.KeyGroupRange { return s.kgs }

// SnapshotKeyGroup: uvarint count, then per entry (sorted by key string)
// the key as an encoded value and the operator's value encoding.
func (s *keyedState[V]) SnapshotKeyGroup(kg int) ([]byte, error) {
	if !s.kgs.Contains(kg) {
		return nil, fmt.Errorf("key group %d is outside %d-%d", kg, s.kgs.Start, s.kgs.End)
	}
	g := s.groups[kg-s.kgs.Start]
	keys := make([]string, 0, len(g))
	for k := range g {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	size := 0
	if s.sizeHint > 0 {
		size = s.sizeHint * len(keys)
	}
	b := binary.AppendUvarint(make([]byte, 0, size+binary.MaxVarintLen64), uint64(len(keys)))
	for _, k := range keys {
		e := g[k]
		b = appendValue(b, e.key)
		b = s.enc(b, &e.v)
	}
	if len(keys) > 0 {
		s.sizeHint = len(b)/len(keys) + 1 // bytes per entry, to size the next group
	}
	return b, nil
}

func (s *keyedState[V]) RestoreKeyGroup(kg int, data []byte) error {
	if !s.kgs.Contains(kg) {
		return fmt.Errorf("key group %d is outside %d-%d", kg, s.kgs.Start, s.kgs.End)
	}
	var d decoder
	n, b, err := d.uvarint(data)
	if err != nil {
		return err
	}
	g := make(map[string]*entry[V], n)
	for range n {
		var key any
		if key, b, err = d.value(b); err != nil {
			return err
		}
		if got := jobgraph.KeyGroupForKey(key, s.maxP); got != kg {
			return fmt.Errorf("key %v belongs to key group %d, not %d", key, got, kg)
		}
		e := &entry[V]{key: key}
		if b, err = s.dec(b, &e.v); err != nil {
			return err
		}
		g[jobgraph.KeyString(key)] = e
	}
	if len(b) != 0 {
		return errCorrupt
	}
	s.groups[kg-s.kgs.Start] = g
	return nil
}

// keyedInput computes, per input edge, a record's key and key group.
type keyedInput struct {
	keys []*keyFunc
	maxP int
}

func newKeyedInput(ctx *OpContext) (*keyedInput, error) {
	ki := &keyedInput{maxP: ctx.MaxParallelism}
	for _, in := range ctx.Inputs {
		if in.Ship != jobgraph.ShipHash {
			return nil, fmt.Errorf("input from %q must be a hash edge", in.From)
		}
		k, err := newKeyFunc(in.Key)
		if err != nil {
			return nil, err
		}
		ki.keys = append(ki.keys, k)
	}
	return ki, nil
}

func (ki *keyedInput) key(input int, r Record) (key any, kg int, err error) {
	key, err = ki.keys[input].eval(r)
	if err != nil {
		return nil, 0, err
	}
	return key, jobgraph.KeyGroupForKey(key, ki.maxP), nil
}

// number is an int64 or float64 aggregate that stays int64 while every
// input is an integer.
type number struct {
	i       int64
	f       float64
	isFloat bool
	set     bool
}

func (n number) value() any {
	if n.isFloat {
		return n.f
	}
	return n.i
}

func (n number) float() float64 {
	if n.isFloat {
		return n.f
	}
	return float64(n.i)
}

func toNumber(v any) (number, bool) {
	switch x := v.(type) {
	case int64:
		return number{i: x, set: true}, true
	case float64:
		return number{f: x, isFloat: true, set: true}, true
	}
	return number{}, false
}

func (n *number) add(x number) {
	switch {
	case !n.isFloat && !x.isFloat:
		n.i += x.i
	case n.isFloat:
		n.f += x.float()
	default:
		n.f, n.isFloat = float64(n.i)+x.f, true
	}
	n.set = true
}

func (n number) less(x number) bool {
	if !n.isFloat && !x.isFloat {
		return n.i < x.i
	}
	return n.float() < x.float()
}

func appendNumber(b []byte, n number) []byte {
	switch {
	case !n.set:
		return append(b, tagNull)
	case n.isFloat:
		return appendValue(b, n.f)
	}
	return appendValue(b, n.i)
}

func decodeNumber(d *decoder, b []byte) (number, []byte, error) {
	v, b, err := d.value(b)
	if err != nil {
		return number{}, nil, err
	}
	if v == nil {
		return number{}, b, nil
	}
	n, ok := toNumber(v)
	if !ok {
		return number{}, nil, errCorrupt
	}
	return n, b, nil
}
