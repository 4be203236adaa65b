package runtime

import (
	"context"
	"encoding/binary"
	"sync/atomic"
	"time"

	"github.com/dispatcher-dev/dispatcher/jobgraph"
)

// FlushTimeout is Flink's execution.buffer-timeout: a partly filled buffer
// is sent at the latest this long after its first record.
const FlushTimeout = 100 * time.Millisecond

// Output is what an operator emits to: it partitions records over the
// outgoing edges' channels, batches them in buffers and sends a buffer when
// it is full or FlushTimeout old, waiting for credit (back pressure). It is
// owned by the subtask's goroutine.
type Output struct {
	s            *subtask
	edges        []*outEdge
	bufSize      int
	pendingSince int64 // nanotime of the first unflushed record, 0 if none
	emitted      int64
	countdown    int
	// trigger is set for source subtasks: a checkpoint is waiting to be
	// taken between two records.
	trigger *atomic.Bool
}

type outEdge struct {
	ship    jobgraph.Ship
	key     *keyFunc
	maxP, p int
	chans   []*outChannel // by target subtask; forward: the one target
	rr      int
}

const checkEvery = 256 // emits between cancellation / flush-timeout checks

// Emit sends a record downstream. It returns an error when the subtask was
// cancelled or failed, or when a hash key expression fails.
func (o *Output) Emit(r Record) error {
	o.emitted++
	for _, e := range o.edges {
		var err error
		switch e.ship {
		case jobgraph.ShipForward:
			err = o.push(e.chans[0], r)
		case jobgraph.ShipRebalance:
			e.rr++
			if e.rr >= len(e.chans) {
				e.rr = 0
			}
			err = o.push(e.chans[e.rr], r)
		case jobgraph.ShipHash:
			k, kerr := e.key.eval(r)
			if kerr != nil {
				return kerr
			}
			kg := jobgraph.KeyGroupForKey(k, e.maxP)
			err = o.push(e.chans[kg*e.p/e.maxP], r)
		case jobgraph.ShipBroadcast:
			for _, c := range e.chans {
				if err = o.push(c, r); err != nil {
					break
				}
			}
		}
		if err != nil {
			return err
		}
	}
	if o.trigger != nil && o.trigger.Load() {
		if err := o.s.sourceCheckpoint(); err != nil {
			return err
		}
	}
	o.countdown--
	if o.countdown <= 0 {
		o.countdown = checkEvery
		if err := context.Cause(o.s.ctx); err != nil {
			return err
		}
		return o.flushIfDue(nanotime())
	}
	return nil
}

func (o *Output) push(c *outChannel, r Record) error {
	if c.pending == nil {
		c.pending = o.s.e.buffers.get()
		if o.pendingSince == 0 {
			o.pendingSince = nanotime()
		}
	}
	c.pending.recs = append(c.pending.recs, r)
	if len(c.pending.recs) >= o.bufSize {
		return o.send(c)
	}
	return nil
}

// send hands the channel's pending buffer to the receiver.
func (o *Output) send(c *outChannel) error {
	b := c.pending
	c.pending = nil
	if err := c.acquire(o.s.ctx, &o.s.act); err != nil {
		o.s.e.buffers.put(b)
		return err
	}
	o.s.io.recordsOut.Store(o.emitted)
	if c.local != nil {
		b.ch = c.local
		c.local.gate.q <- b
		return nil
	}
	f := getFrame(frameData)
	*f = appendKey(*f, c.key)
	*f = append(*f, 0) // backlog: nothing queued behind this buffer
	*f = appendBatch(*f, b.recs)
	sealFrame(*f)
	o.s.io.bytesOut.Add(int64(len(*f)))
	o.s.e.buffers.put(b)
	return o.s.e.sendFrame(o.s.ctx, c.peer, f)
}

// sendEvent sends an in-band event on a channel (flushing its data first).
func (o *Output) sendEvent(c *outChannel, kind byte, cp *Checkpoint) error {
	if c.pending != nil {
		if err := o.send(c); err != nil {
			return err
		}
	}
	if err := c.acquire(o.s.ctx, &o.s.act); err != nil {
		return err
	}
	if isEndOfPartition(kind) {
		c.mu.Lock()
		c.ended = true
		c.mu.Unlock()
	}
	if c.local != nil {
		b := o.s.e.buffers.get()
		b.event, b.cp, b.ch = kind, cp, c.local
		c.local.gate.q <- b
		return nil
	}
	f := getFrame(frameEvent)
	*f = appendKey(*f, c.key)
	*f = append(*f, kind)
	var id int64
	if cp != nil {
		id = cp.ID
	}
	*f = binary.AppendVarint(*f, id)
	if kind == eventBarrier {
		*f = appendBarrier(*f, cp)
	}
	sealFrame(*f)
	return o.s.e.sendFrame(o.s.ctx, c.peer, f)
}

// broadcastBarrier sends the checkpoint barrier on every output channel,
// after the data emitted before it.
func (o *Output) broadcastBarrier(cp *Checkpoint) error {
	for _, e := range o.edges {
		for _, c := range e.chans {
			if err := o.sendEvent(c, eventBarrier, cp); err != nil {
				return err
			}
		}
	}
	o.pendingSince = 0
	o.s.io.recordsOut.Store(o.emitted)
	return nil
}

// Flush sends every partly filled buffer.
func (o *Output) Flush() error {
	o.pendingSince = 0
	for _, e := range o.edges {
		for _, c := range e.chans {
			if c.pending != nil {
				if err := o.send(c); err != nil {
					return err
				}
			}
		}
	}
	o.s.io.recordsOut.Store(o.emitted)
	return nil
}

func (o *Output) flushIfDue(now int64) error {
	if o.pendingSince != 0 && now-o.pendingSince >= int64(FlushTimeout) {
		return o.Flush()
	}
	return nil
}

// flushDeadline is when pending data must be flushed (0 = nothing pending).
func (o *Output) flushDeadline() int64 {
	if o.pendingSince == 0 {
		return 0
	}
	return o.pendingSince + int64(FlushTimeout)
}

// finish flushes and sends end-of-partition (kind) on every channel.
func (o *Output) finish(kind byte) error {
	for _, e := range o.edges {
		for _, c := range e.chans {
			if err := o.sendEvent(c, kind, nil); err != nil {
				return err
			}
		}
	}
	o.pendingSince = 0
	o.s.io.recordsOut.Store(o.emitted)
	return nil
}

// Sleep waits until t (a source's rate limit), counted as idle time, while
// still flushing pending buffers on time.
func (o *Output) sleepUntil(t time.Time) error {
	ctx := o.s.ctx
	prev := o.s.act.set(stateIdle)
	defer o.s.act.set(prev)
	for {
		d := time.Until(t)
		if dl := o.flushDeadline(); dl != 0 {
			if fd := time.Duration(dl - nanotime()); fd < d {
				if fd <= 0 {
					o.s.act.set(stateBusy)
					if err := o.Flush(); err != nil {
						return err
					}
					o.s.act.set(stateIdle)
					continue
				}
				d = fd
			}
		}
		if d <= 0 {
			return nil
		}
		o.s.timer.Reset(d)
		select {
		case <-o.s.timer.C:
		case <-o.s.cp.trigWake:
			o.s.timer.Stop()
			if o.trigger != nil && o.trigger.Load() {
				o.s.act.set(stateBusy)
				if err := o.s.sourceCheckpoint(); err != nil {
					return err
				}
				o.s.act.set(stateIdle)
			}
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}

// usage sums the receiver buffers in use over all channels.
func (o *Output) usage() (used, window int) {
	for _, e := range o.edges {
		for _, c := range e.chans {
			u, w := c.usage()
			used += u
			window += w
		}
	}
	return used, window
}
