package runtime

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
)

// Wire protocol between executors (see DESIGN.md). Every frame is
//
//	type (1 byte) | body length (uint32 big endian) | body
//
// and a connection starts with a HELLO frame from the dialer. Frames are
// addressed to a logical channel by a chanKey: (job, attempt, edge, source
// subtask, target subtask).
const (
	frameHello  byte = 1 // magic "DSPX", uvarint version, string nodeID
	frameData   byte = 2 // key, uvarint backlog, encoded batch
	frameEvent  byte = 3 // key, event kind byte, varint id; barrier: flags byte, uvarint len + dir
	frameCredit byte = 4 // key, uvarint credits added, uvarint window

	protocolVersion = 1
	protocolMagic   = "DSPX"
	maxFrameSize    = 64 << 20
	frameHeaderSize = 5
)

// In-band channel events. A barrier carries the checkpoint (id, flags,
// directory). End-of-partition-stop ends a channel after a
// stop-with-savepoint barrier without ending the input (no Finish: windows
// do not flush).
const (
	eventEndOfPartition     byte = 1
	eventBarrier            byte = 2
	eventEndOfPartitionStop byte = 3
)

func isEndOfPartition(kind byte) bool {
	return kind == eventEndOfPartition || kind == eventEndOfPartitionStop
}

// Barrier flags.
const (
	barrierSavepoint   = 1
	barrierAtLeastOnce = 2
	barrierStop        = 4
	barrierDrain       = 8
)

func appendBarrier(b []byte, cp *Checkpoint) []byte {
	var flags byte
	if cp.Savepoint {
		flags |= barrierSavepoint
	}
	if !cp.aligned() {
		flags |= barrierAtLeastOnce
	}
	if cp.Stop {
		flags |= barrierStop
	}
	if cp.Drain {
		flags |= barrierDrain
	}
	b = append(b, flags)
	b = binary.AppendUvarint(b, uint64(len(cp.Dir)))
	return append(b, cp.Dir...)
}

func parseBarrier(id int64, b []byte) (*Checkpoint, error) {
	if len(b) < 2 {
		return nil, errBadFrame
	}
	flags := b[0]
	n, m := binary.Uvarint(b[1:])
	if m <= 0 || uint64(len(b)-1-m) != n {
		return nil, errBadFrame
	}
	cp := &Checkpoint{ID: id, Dir: string(b[1+m:]), Mode: "EXACTLY_ONCE",
		Savepoint: flags&barrierSavepoint != 0, Stop: flags&barrierStop != 0, Drain: flags&barrierDrain != 0}
	if flags&barrierAtLeastOnce != 0 {
		cp.Mode = "AT_LEAST_ONCE"
	}
	return cp, nil
}

type chanKey struct {
	job     string
	attempt int32
	edge    int32
	src     int32
	dst     int32
}

func (k chanKey) String() string {
	return fmt.Sprintf("%s#%d edge %d %d->%d", k.job, k.attempt, k.edge, k.src, k.dst)
}

var framePool = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}

func getFrame(typ byte) *[]byte {
	p := framePool.Get().(*[]byte)
	*p = append((*p)[:0], typ, 0, 0, 0, 0)
	return p
}

func putFrame(p *[]byte) {
	if cap(*p) <= 4<<20 {
		framePool.Put(p)
	}
}

func sealFrame(b []byte) {
	binary.BigEndian.PutUint32(b[1:frameHeaderSize], uint32(len(b)-frameHeaderSize))
}

func appendKey(b []byte, k chanKey) []byte {
	b = binary.AppendUvarint(b, uint64(len(k.job)))
	b = append(b, k.job...)
	b = binary.AppendUvarint(b, uint64(k.attempt))
	b = binary.AppendUvarint(b, uint64(k.edge))
	b = binary.AppendUvarint(b, uint64(k.src))
	return binary.AppendUvarint(b, uint64(k.dst))
}

var errBadFrame = errors.New("malformed frame")

// frameReader reads frames and decodes channel keys, interning job ids.
type frameReader struct {
	r    io.Reader
	hdr  [frameHeaderSize]byte
	jobs map[string]string
}

// next reads one frame into a pooled buffer that the caller must release.
func (fr *frameReader) next() (typ byte, body *[]byte, err error) {
	if _, err = io.ReadFull(fr.r, fr.hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(fr.hdr[1:])
	if n > maxFrameSize {
		return 0, nil, fmt.Errorf("frame of %d bytes exceeds %d", n, maxFrameSize)
	}
	p := framePool.Get().(*[]byte)
	if cap(*p) < int(n) {
		*p = make([]byte, n)
	}
	*p = (*p)[:n]
	if _, err = io.ReadFull(fr.r, *p); err != nil {
		putFrame(p)
		return 0, nil, err
	}
	return fr.hdr[0], p, nil
}

func (fr *frameReader) key(b []byte) (chanKey, []byte, error) {
	var k chanKey
	n, m := binary.Uvarint(b)
	if m <= 0 || uint64(len(b)-m) < n {
		return k, nil, errBadFrame
	}
	job := b[m : m+int(n)]
	b = b[m+int(n):]
	if s, ok := fr.jobs[string(job)]; ok {
		k.job = s
	} else {
		k.job = string(job)
		if fr.jobs == nil {
			fr.jobs = map[string]string{}
		}
		if len(fr.jobs) > 1024 {
			clear(fr.jobs)
		}
		fr.jobs[k.job] = k.job
	}
	var v [4]uint64
	for i := range v {
		if v[i], m = binary.Uvarint(b); m <= 0 {
			return k, nil, errBadFrame
		}
		b = b[m:]
	}
	k.attempt, k.edge, k.src, k.dst = int32(v[0]), int32(v[1]), int32(v[2]), int32(v[3])
	return k, b, nil
}

func appendHello(nodeID string) []byte {
	b := []byte{frameHello, 0, 0, 0, 0}
	b = append(b, protocolMagic...)
	b = binary.AppendUvarint(b, protocolVersion)
	b = binary.AppendUvarint(b, uint64(len(nodeID)))
	b = append(b, nodeID...)
	sealFrame(b)
	return b
}

func parseHello(b []byte) (string, error) {
	if len(b) < len(protocolMagic) || string(b[:len(protocolMagic)]) != protocolMagic {
		return "", errors.New("not a dispatcher data connection")
	}
	b = b[len(protocolMagic):]
	v, m := binary.Uvarint(b)
	if m <= 0 {
		return "", errBadFrame
	}
	if v != protocolVersion {
		return "", fmt.Errorf("unsupported data protocol version %d (want %d)", v, protocolVersion)
	}
	b = b[m:]
	n, m := binary.Uvarint(b)
	if m <= 0 || uint64(len(b)-m) != n {
		return "", errBadFrame
	}
	return string(b[m:]), nil
}
