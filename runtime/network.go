package runtime

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// peer is this executor's outbound connection to another node. Each node
// sends its frames (data and events of its senders, credits of its
// receivers) on the connection it dialed, and reads the frames of others
// from the connections they dialed (HandleConn), so two nodes never race to
// set up "the" connection between them.
type peer struct {
	node  string
	ready chan struct{} // closed once dialled (or failed)

	mu     sync.Mutex
	conn   net.Conn
	err    error // set once the peer is unusable
	queue  []*[]byte
	wake   chan struct{}
	closed bool
}

const dialTimeout = 10 * time.Second

// getPeer returns a live outbound connection to node, dialling if needed.
func (e *Executor) getPeer(ctx context.Context, node string) (*peer, error) {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil, errors.New("executor closed")
	}
	p := e.peers[node]
	if p == nil || p.failed() {
		if e.cfg.Dial == nil {
			e.mu.Unlock()
			return nil, fmt.Errorf("no Dial configured to reach node %s", node)
		}
		p = &peer{node: node, ready: make(chan struct{}), wake: make(chan struct{}, 1)}
		e.peers[node] = p
		e.subWG.Add(1)
		go e.dialPeer(p)
	}
	e.mu.Unlock()
	select {
	case <-p.ready:
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		return nil, p.err
	}
	return p, nil
}

func (p *peer) failed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err != nil
}

// dialPeer connects (retrying with backoff until dialTimeout), says hello
// and then runs the writer until the connection fails or closes.
func (e *Executor) dialPeer(p *peer) {
	defer e.subWG.Done()
	ctx, cancel := context.WithTimeout(e.ctx, dialTimeout)
	var conn net.Conn
	var err error
	for backoff := 20 * time.Millisecond; ; backoff = min(2*backoff, time.Second) {
		if conn, err = e.cfg.Dial(ctx, p.node); err == nil {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
			continue
		}
		break
	}
	cancel()
	if err == nil {
		conn.SetWriteDeadline(time.Now().Add(dialTimeout))
		if _, err = conn.Write(appendHello(e.cfg.NodeID)); err != nil {
			conn.Close()
		}
		conn.SetWriteDeadline(time.Time{})
	}
	p.mu.Lock()
	if err == nil && p.closed {
		conn.Close()
		err = p.err
	}
	if err != nil {
		if p.err == nil {
			p.err = fmt.Errorf("dial node %s: %w", p.node, err)
		}
		p.mu.Unlock()
		close(p.ready)
		return
	}
	p.conn = conn
	p.mu.Unlock()
	close(p.ready)
	e.writeLoop(p)
}

// writeLoop writes queued frames, flushing when the queue is empty.
func (e *Executor) writeLoop(p *peer) {
	w := bufio.NewWriterSize(p.conn, 64<<10)
	var batch []*[]byte
	for {
		p.mu.Lock()
		for len(p.queue) == 0 && !p.closed {
			p.mu.Unlock()
			<-p.wake
			p.mu.Lock()
		}
		if p.closed {
			p.mu.Unlock()
			break
		}
		batch, p.queue = p.queue, batch[:0]
		p.mu.Unlock()
		var err error
		for i, f := range batch {
			if err == nil {
				_, err = w.Write(*f)
			}
			putFrame(f)
			batch[i] = nil
		}
		if err == nil {
			err = w.Flush()
		}
		if err != nil {
			p.close(fmt.Errorf("write to node %s: %w", p.node, err))
			e.peerLost(p.node, p.err)
			break
		}
	}
	p.conn.Close()
	p.mu.Lock()
	for _, f := range p.queue {
		putFrame(f)
	}
	p.queue = nil
	p.mu.Unlock()
}

func (p *peer) enqueue(f *[]byte) error {
	p.mu.Lock()
	if p.err != nil {
		p.mu.Unlock()
		putFrame(f)
		return p.err
	}
	p.queue = append(p.queue, f)
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
	return nil
}

func (p *peer) close(err error) {
	p.mu.Lock()
	if p.err == nil {
		p.err = err
	}
	p.closed = true
	if p.conn != nil {
		p.conn.Close()
	}
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// sendFrame queues a frame for node; the frame is released in all cases.
func (e *Executor) sendFrame(ctx context.Context, node string, f *[]byte) error {
	p, err := e.getPeer(ctx, node)
	if err != nil {
		putFrame(f)
		return err
	}
	return p.enqueue(f)
}

// sendCredit grants n credits (and announces the window) to a remote sender.
func (e *Executor) sendCredit(ctx context.Context, node string, k chanKey, n, window int) error {
	f := getFrame(frameCredit)
	*f = appendKey(*f, k)
	*f = binary.AppendUvarint(*f, uint64(n))
	*f = binary.AppendUvarint(*f, uint64(window))
	sealFrame(*f)
	return e.sendFrame(ctx, node, f)
}

// HandleConn serves an inbound data connection from another node's
// executor (already authenticated by the caller) until it closes. Run it on
// its own goroutine per accepted connection.
func (e *Executor) HandleConn(conn net.Conn) {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		conn.Close()
		return
	}
	e.inbound[conn] = struct{}{}
	e.subWG.Add(1)
	e.mu.Unlock()
	defer e.subWG.Done()
	defer func() {
		conn.Close()
		e.mu.Lock()
		delete(e.inbound, conn)
		e.mu.Unlock()
	}()
	fr := &frameReader{r: bufio.NewReaderSize(conn, 64<<10)}
	conn.SetReadDeadline(time.Now().Add(dialTimeout))
	typ, body, err := fr.next()
	if err != nil {
		return
	}
	conn.SetReadDeadline(time.Time{})
	var node string
	if typ == frameHello {
		node, err = parseHello(*body)
	} else {
		err = errors.New("data connection does not start with hello")
	}
	putFrame(body)
	if err != nil {
		e.log.Warn("rejected data connection", "remote", conn.RemoteAddr(), "error", err)
		return
	}
	for {
		typ, body, err := fr.next()
		if err == nil {
			err = e.dispatch(fr, typ, body)
		}
		if err != nil {
			e.mu.Lock()
			closed := e.closed
			e.mu.Unlock()
			if !closed {
				e.peerLost(node, fmt.Errorf("connection from node %s: %w", node, err))
			}
			return
		}
	}
}

// dispatch handles one inbound frame. It never blocks: data and events go
// into the receiver's gate, which has room for every credit it granted.
func (e *Executor) dispatch(fr *frameReader, typ byte, body *[]byte) error {
	k, rest, err := fr.key(*body)
	if err != nil {
		putFrame(body)
		return err
	}
	switch typ {
	case frameData, frameEvent:
		b := e.buffers.get()
		if typ == frameData {
			_, m := binary.Uvarint(rest) // backlog (room for floating buffers)
			if m <= 0 {
				putFrame(body)
				e.buffers.put(b)
				return errBadFrame
			}
			b.raw, b.off = body, len(*body)-len(rest)+m
		} else {
			if len(rest) < 2 {
				putFrame(body)
				e.buffers.put(b)
				return errBadFrame
			}
			b.event = rest[0]
			id, m := binary.Varint(rest[1:])
			if m <= 0 {
				putFrame(body)
				e.buffers.put(b)
				return errBadFrame
			}
			if b.event == eventBarrier {
				cp, err := parseBarrier(id, rest[1+m:])
				if err != nil {
					putFrame(body)
					e.buffers.put(b)
					return err
				}
				b.cp = cp
			}
			putFrame(body)
		}
		e.mu.Lock()
		ic := e.recvChans[k]
		if ic != nil && isEndOfPartition(b.event) {
			ic.eos = true
		}
		e.mu.Unlock()
		if ic == nil { // a cancelled or ended attempt
			if b.raw != nil {
				putFrame(b.raw)
			}
			e.buffers.put(b)
			return nil
		}
		b.ch = ic
		select {
		case ic.gate.q <- b:
		default:
			ic.owner.fail(fmt.Errorf("channel %s: sender exceeded its credits", k))
		}
		return nil
	case frameCredit:
		n, m := binary.Uvarint(rest)
		var window uint64
		m2 := 0
		if m > 0 {
			window, m2 = binary.Uvarint(rest[m:])
		}
		putFrame(body)
		if m <= 0 || m2 <= 0 {
			return errBadFrame
		}
		e.mu.Lock()
		oc := e.sendChans[k]
		if oc == nil {
			// The sender is not deployed here yet: keep the credit for it,
			// unless its attempt is already known (then it has ended).
			if j := e.jobs[k.job]; j == nil || int32(j.attempt) < k.attempt {
				pc := e.pendingCredits[k]
				pc.n += int(n)
				pc.window = max(pc.window, int(window))
				pc.at = time.Now()
				e.pendingCredits[k] = pc
			}
		}
		e.mu.Unlock()
		if oc != nil {
			oc.addCredit(int(n), int(window))
		}
		return nil
	}
	putFrame(body)
	return fmt.Errorf("unknown frame type %d", typ)
}

// peerLost fails the local subtasks that still need a channel to or from
// node.
func (e *Executor) peerLost(node string, err error) {
	e.mu.Lock()
	failing := map[*subtask]bool{}
	for _, ic := range e.recvChans {
		if ic.peer == node && !ic.eos {
			failing[ic.owner] = true
		}
	}
	for _, oc := range e.sendChans {
		if oc.peer == node {
			oc.mu.Lock()
			if !oc.ended {
				failing[oc.owner] = true
			}
			oc.mu.Unlock()
		}
	}
	e.mu.Unlock()
	for s := range failing {
		s.fail(fmt.Errorf("lost data connection: %w", err))
	}
}
