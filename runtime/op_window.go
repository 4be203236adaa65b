package runtime

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/dispatcher-dev/dispatcher/jobgraph"
)

// window is a keyed processing-time window: tumbling (size) or sliding
// (size, slide; size a multiple of slide), aligned to the epoch. Records
// are aggregated into panes of one slide per key (so a record is added once
// however many windows it falls in), and when a window ends the panes in it
// are combined and emitted:
// {"key", "window_start", "window_end", "<agg>": value} (times in unix ms).
// When a bounded input ends, all windows holding data are emitted.
type window struct {
	size, slide int64 // ms
	agg, field  string
	in          *keyedInput
	state       *keyedState[panes]
	lastFired   int64 // end of the last window fired (ms)
}

type panes map[int64]*pane // pane start (ms) -> aggregate

type pane struct {
	count         int64
	sum, min, max number
}

func newWindow(p jobgraph.Params) Operator {
	size := p.DurationOr("size", time.Second).Milliseconds()
	slide := p.DurationOr("slide", 0).Milliseconds()
	if slide <= 0 {
		slide = size
	}
	return &window{size: max(size, 1), slide: max(slide, 1), agg: p.StringOr("agg", "count"), field: p.StringOr("field", "")}
}

func (w *window) Open(ctx *OpContext) error {
	var err error
	if w.in, err = newKeyedInput(ctx); err != nil {
		return err
	}
	w.state = newKeyedState(ctx.KeyGroups, ctx.MaxParallelism, appendPanes, decodePanes)
	w.lastFired = time.Now().UnixMilli() / w.slide * w.slide
	return nil
}

// State exposes the keyed state (for checkpoints).
func (w *window) State() KeyedState { return w.state }

type windowState struct {
	LastFired int64 `json:"lastFired"`
}

func (w *window) snapshotState(*Checkpoint) ([]byte, error) {
	return json.Marshal(windowState{LastFired: w.lastFired})
}

// restoreState continues the window clock of the old subtasks: windows that
// ended while the job was down fire at the next timer.
func (w *window) restoreState(old []oldSubtask) error {
	last := int64(0)
	for _, o := range old {
		var st windowState
		if err := json.Unmarshal(o.OpState, &st); err != nil {
			return fmt.Errorf("window state of subtask %d: %w", o.Subtask, err)
		}
		last = max(last, st.LastFired)
	}
	if last > 0 {
		w.lastFired = last
	}
	return nil
}

func (w *window) Process(input int, recs []Record, out *Output) error {
	start := time.Now().UnixMilli() / w.slide * w.slide
	for _, r := range recs {
		key, kg, err := w.in.key(input, r)
		if err != nil {
			return err
		}
		var x number
		if w.agg != "count" {
			var ok bool
			if x, ok = toNumber(r[w.field]); !ok {
				return fmt.Errorf("window %s: field %q of record %s is not a number", w.agg, w.field, recordSnippet(r))
			}
		}
		e, err := w.state.get(kg, key)
		if err != nil {
			return err
		}
		if e.v == nil {
			e.v = panes{}
		}
		p := e.v[start]
		if p == nil {
			p = &pane{}
			e.v[start] = p
		}
		p.add(x)
	}
	return nil
}

func (p *pane) add(x number) {
	p.count++
	p.sum.add(x)
	if !p.min.set || x.less(p.min) {
		p.min = x
	}
	if !p.max.set || p.max.less(x) {
		p.max = x
	}
}

func (p *pane) merge(o *pane) {
	if o.count == 0 {
		return
	}
	p.count += o.count
	p.sum.add(o.sum)
	if !p.min.set || o.min.less(p.min) {
		p.min = o.min
	}
	if !p.max.set || p.max.less(o.max) {
		p.max = o.max
	}
}

func (w *window) NextTimer() time.Time { return time.UnixMilli(w.lastFired + w.slide) }

func (w *window) OnTimer(now time.Time, out *Output) error {
	ms := now.UnixMilli()
	for end := w.lastFired + w.slide; end <= ms; end += w.slide {
		if err := w.fire(end, out); err != nil {
			return err
		}
	}
	return nil
}

// fire emits the window ending at end for every key with data in it and
// drops the panes no later window needs.
func (w *window) fire(end int64, out *Output) error {
	w.lastFired = end
	from := end - w.size
	keep := end + w.slide - w.size
	var err error
	for gi, g := range w.state.groups {
		for ks, e := range g {
			var acc pane
			for start, p := range e.v {
				if start >= from && start < end {
					acc.merge(p)
				}
				if start < keep {
					delete(e.v, start)
				}
			}
			if len(e.v) == 0 {
				delete(w.state.groups[gi], ks)
			}
			if acc.count > 0 && err == nil {
				err = out.Emit(Record{"key": e.key, "window_start": from, "window_end": end, w.agg: acc.result(w.agg)})
			}
		}
	}
	return err
}

func (p *pane) result(agg string) any {
	switch agg {
	case "sum":
		return p.sum.value()
	case "min":
		return p.min.value()
	case "max":
		return p.max.value()
	case "avg":
		return p.sum.float() / float64(p.count)
	}
	return p.count
}

// Finish emits every window that still holds data.
func (w *window) Finish(out *Output) error {
	last := int64(-1 << 62)
	w.state.each(func(e *entry[panes]) {
		for start := range e.v {
			last = max(last, start)
		}
	})
	for end := w.lastFired + w.slide; end <= last+w.size; end += w.slide {
		if err := w.fire(end, out); err != nil {
			return err
		}
	}
	return nil
}

func (w *window) Close() error { return nil }

func appendPanes(b []byte, ps *panes) []byte {
	b = binary.AppendUvarint(b, uint64(len(*ps)))
	starts := make([]int64, 0, len(*ps))
	for start := range *ps {
		starts = append(starts, start)
	}
	slices.Sort(starts)
	for _, start := range starts {
		p := (*ps)[start]
		b = binary.AppendVarint(b, start)
		b = binary.AppendVarint(b, p.count)
		b = appendNumber(b, p.sum)
		b = appendNumber(b, p.min)
		b = appendNumber(b, p.max)
	}
	return b
}

func decodePanes(b []byte, ps *panes) ([]byte, error) {
	var d decoder
	n, b, err := d.uvarint(b)
	if err != nil {
		return nil, err
	}
	*ps = make(panes, n)
	for range n {
		start, k := binary.Varint(b)
		if k <= 0 {
			return nil, errCorrupt
		}
		b = b[k:]
		p := &pane{}
		if p.count, k = binary.Varint(b); k <= 0 {
			return nil, errCorrupt
		}
		b = b[k:]
		for _, x := range []*number{&p.sum, &p.min, &p.max} {
			if *x, b, err = decodeNumber(&d, b); err != nil {
				return nil, err
			}
		}
		(*ps)[start] = p
	}
	return b, nil
}
