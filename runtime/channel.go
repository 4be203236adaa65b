package runtime

import (
	"context"
	"sync"
)

// buffer is the unit that crosses a channel and consumes one credit: a batch
// of records (local), an encoded batch (remote), or an in-band event.
type buffer struct {
	recs  []Record // local data
	raw   *[]byte  // remote data: a pooled frame; payload starts at off
	off   int
	event byte        // 0 = data, else eventEndOfPartition(Stop) / eventBarrier
	cp    *Checkpoint // barrier
	ch    *inChannel
}

type bufferPool struct {
	size int
	pool sync.Pool
}

func (p *bufferPool) get() *buffer {
	if b, ok := p.pool.Get().(*buffer); ok {
		return b
	}
	return &buffer{recs: make([]Record, 0, p.size)}
}

func (p *bufferPool) put(b *buffer) {
	clear(b.recs)
	b.recs = b.recs[:0]
	b.raw, b.off, b.event, b.cp, b.ch = nil, 0, 0, nil, nil
	p.pool.Put(b)
}

// outChannel is the sending end of one logical channel. The sender may hand
// over a buffer only while it holds a credit; the receiver grants credits
// (its free buffers for this channel) and returns one per consumed buffer.
type outChannel struct {
	key     chanKey
	owner   *subtask
	pending *buffer // being filled by the owning subtask (no lock needed)

	local *inChannel // same node: deliver into its gate
	peer  string     // other node: frames go to this node

	mu      sync.Mutex
	credits int // buffers the sender may still send
	window  int // the receiver's buffers for this channel
	ended   bool
	notify  chan struct{}
}

func newOutChannel(key chanKey, owner *subtask) *outChannel {
	return &outChannel{key: key, owner: owner, notify: make(chan struct{}, 1)}
}

// addCredit is called by the receiver (local) or the network (remote).
func (c *outChannel) addCredit(n, window int) {
	c.mu.Lock()
	c.credits += n
	if window > 0 {
		c.window = window
	}
	c.mu.Unlock()
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

func (c *outChannel) tryAcquire() bool {
	c.mu.Lock()
	ok := c.credits > 0
	if ok {
		c.credits--
	}
	c.mu.Unlock()
	return ok
}

// acquire takes one credit, blocking (back-pressured) until one is granted.
func (c *outChannel) acquire(ctx context.Context, act *activity) error {
	if c.tryAcquire() {
		return nil
	}
	prev := act.set(stateBackPressured)
	defer act.set(prev)
	for {
		select {
		case <-c.notify:
			if c.tryAcquire() {
				return nil
			}
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}

// usage returns the receiver buffers in use (sent, not yet returned) and the
// window, for outPoolUsage/outputQueueLength.
func (c *outChannel) usage() (used, window int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.window == 0 {
		return 0, 0
	}
	return c.window - c.credits, c.window
}

// inChannel is the receiving end of one logical channel.
type inChannel struct {
	key   chanKey
	owner *subtask
	gate  *inputGate
	input int // index of the edge among the vertex's inputs
	local *outChannel
	peer  string // remote sender's node
	ended bool   // end of partition consumed (owned by the subtask)
	// Checkpoints (owned by the subtask): the newest barrier seen, and
	// whether the channel is blocked for alignment.
	barrier int64
	blocked bool
	// eos is set by the network reader when end-of-partition arrived, so that
	// losing the connection afterwards is not a failure.
	eos bool
}

// inputGate merges all input channels of a subtask into one bounded queue.
// Its capacity is the sum of the credits of its channels, so a sender that
// respects credits can never block on it.
type inputGate struct {
	q        chan *buffer
	channels []*inChannel
	open     int
}
