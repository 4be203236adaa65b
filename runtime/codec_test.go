package runtime

import (
	"math"
	"reflect"
	"testing"

	"github.com/dispatcher-dev/dispatcher/jobgraph"
)

func TestBatchCodecRoundTrip(t *testing.T) {
	recs := []Record{
		{"n": int64(-5), "f": 2.5, "s": "héllo\n\"x\"", "b": true, "nil": nil},
		{"arr": []any{int64(1), "two", []any{false}, map[string]any{"deep": int64(math.MaxInt64)}}},
		{},
	}
	b := appendBatch(nil, recs)
	var d decoder
	got, err := d.decodeBatch(nil, b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, recs) {
		t.Errorf("round trip:\n got %#v\nwant %#v", got, recs)
	}
	if _, err := d.decodeBatch(nil, b[:len(b)-1]); err == nil {
		t.Error("truncated batch decoded")
	}
}

func TestNormalizeAndJSON(t *testing.T) {
	v, err := normalize(map[string]any{"i": 3, "u": uint8(4), "f": float32(1.5), "ss": []string{"a"}, "m": map[string]int{"k": 1}})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"i": int64(3), "u": int64(4), "f": 1.5, "ss": []any{"a"}, "m": map[string]any{"k": int64(1)}}
	if !reflect.DeepEqual(v, want) {
		t.Errorf("normalize: %#v", v)
	}
	var w jsonWriter
	line := string(w.appendRecord(nil, Record{"b": 2.0, "a": "q\"\t\x01", "c": []any{nil, true, int64(7), 0.25}}))
	if line != `{"a":"q\"\t\u0001","b":2.0,"c":[null,true,7,0.25]}`+"\n" {
		t.Errorf("json line %s", line)
	}
	r, err := parseJSONRecord([]byte(line))
	if err != nil || r["b"] != 2.0 || r["c"].([]any)[2] != int64(7) {
		t.Errorf("parsed %#v %v", r, err)
	}
}

func TestMapExpressionFastPath(t *testing.T) {
	// The field-by-field path must agree with evaluating the whole literal.
	for _, src := range []string{`{"n": n, "sq": n * n, "s": s + "!", "t": n > 2 ? "big" : "small", "m": missing}`, `{"a": {"b": n}}`} {
		p, err := compileProgram(src)
		if err != nil {
			t.Fatal(err)
		}
		if p.fields == nil {
			t.Errorf("%s: no fast path", src)
		}
		rec := Record{"n": int64(3), "s": "x"}
		fast, err := p.runRecord(rec)
		if err != nil {
			t.Fatal(err)
		}
		p.fields = nil
		slow, err := p.runRecord(rec)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(fast, slow) {
			t.Errorf("%s: fast %#v, slow %#v", src, fast, slow)
		}
	}
}

func TestKeyedStateSnapshotRestore(t *testing.T) {
	const maxP = 128
	kgs := jobgraph.KeyGroupRangeForOperator(maxP, 1, 0)
	enc := func(b []byte, n *number) []byte { return appendNumber(b, *n) }
	dec := func(b []byte, n *number) ([]byte, error) {
		var d decoder
		var err error
		*n, b, err = decodeNumber(&d, b)
		return b, err
	}
	a := newKeyedState(kgs, maxP, enc, dec)
	keys := []any{"apple", int64(42), 2.5, true, "über"}
	for i, k := range keys {
		e, err := a.get(jobgraph.KeyGroupForKey(k, maxP), k)
		if err != nil {
			t.Fatal(err)
		}
		e.v = number{i: int64(i * 10), set: true}
	}
	b := newKeyedState(kgs, maxP, enc, dec)
	for kg := kgs.Start; kg <= kgs.End; kg++ {
		snap, err := a.SnapshotKeyGroup(kg)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.RestoreKeyGroup(kg, snap); err != nil {
			t.Fatal(err)
		}
		again, _ := b.SnapshotKeyGroup(kg)
		if string(again) != string(snap) {
			t.Errorf("key group %d: snapshot of the restored state differs", kg)
		}
	}
	for i, k := range keys {
		e, _ := b.get(jobgraph.KeyGroupForKey(k, maxP), k)
		if e.v.i != int64(i*10) || !reflect.DeepEqual(e.key, k) {
			t.Errorf("key %v restored as %v=%v", k, e.key, e.v)
		}
	}
	// A snapshot cannot be restored into the wrong key group or range.
	kg := jobgraph.KeyGroupForKey("apple", maxP)
	snap, _ := a.SnapshotKeyGroup(kg)
	if err := b.RestoreKeyGroup((kg+1)%maxP, snap); err == nil {
		t.Error("restored a snapshot into another key group")
	}
	half := newKeyedState(jobgraph.KeyGroupRangeForOperator(maxP, 2, 0), maxP, enc, dec)
	if _, err := half.get(127, "x"); err == nil {
		t.Error("accepted a key group outside the range")
	}
}
