package cluster

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// Node-to-node streams share the Raft port. Each connection opens with a
// mutual challenge-response over a key derived from the cluster's secrets,
// then names what it carries, so nobody who can merely reach the port can
// speak Raft or inject records.
const (
	streamRaft byte = 1
	streamData byte = 2
)

var streamMagic = [4]byte{'D', 'S', 'P', '1'}

const handshakeTimeout = 5 * time.Second

// peerKey derives the handshake key. With no secrets configured (a dev node)
// the key is public and the handshake only frames the stream.
func peerKey(authToken string, gossipKey []byte) []byte {
	h := sha256.New()
	h.Write([]byte("dispatcher-peer-v1\x00"))
	h.Write([]byte(authToken))
	h.Write([]byte{0})
	h.Write(gossipKey)
	return h.Sum(nil)
}

func proof(key []byte, role string, clientNonce, serverNonce []byte, kind byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(role))
	m.Write(clientNonce)
	m.Write(serverNonce)
	m.Write([]byte{kind})
	return m.Sum(nil)
}

var errHandshake = errors.New("peer handshake failed")

func clientHandshake(conn net.Conn, key []byte, kind byte) error {
	conn.SetDeadline(time.Now().Add(handshakeTimeout))
	defer conn.SetDeadline(time.Time{})
	cn := make([]byte, 32)
	rand.Read(cn)
	hello := append(append(streamMagic[:], kind), cn...)
	if _, err := conn.Write(hello); err != nil {
		return err
	}
	reply := make([]byte, 64)
	if _, err := io.ReadFull(conn, reply); err != nil {
		return fmt.Errorf("%w: %v", errHandshake, err)
	}
	sn, serverProof := reply[:32], reply[32:]
	if !hmac.Equal(serverProof, proof(key, "server", cn, sn, kind)) {
		return fmt.Errorf("%w: the peer does not share this cluster's secrets", errHandshake)
	}
	_, err := conn.Write(proof(key, "client", cn, sn, kind))
	return err
}

func serverHandshake(conn net.Conn, key []byte) (byte, error) {
	conn.SetDeadline(time.Now().Add(handshakeTimeout))
	defer conn.SetDeadline(time.Time{})
	hello := make([]byte, 4+1+32)
	if _, err := io.ReadFull(conn, hello); err != nil {
		return 0, err
	}
	if [4]byte(hello[:4]) != streamMagic {
		return 0, fmt.Errorf("%w: not a dispatcher peer", errHandshake)
	}
	kind, cn := hello[4], hello[5:]
	sn := make([]byte, 32)
	rand.Read(sn)
	if _, err := conn.Write(append(sn, proof(key, "server", cn, sn, kind)...)); err != nil {
		return 0, err
	}
	clientProof := make([]byte, 32)
	if _, err := io.ReadFull(conn, clientProof); err != nil {
		return 0, err
	}
	if !hmac.Equal(clientProof, proof(key, "client", cn, sn, kind)) {
		return 0, fmt.Errorf("%w: the peer does not share this cluster's secrets", errHandshake)
	}
	return kind, nil
}

// mux accepts every peer connection on the Raft port, authenticates it, and
// hands Raft streams to raft and data streams to the task executor.
type mux struct {
	ln        net.Listener
	advertise net.Addr
	key       []byte
	log       *slog.Logger

	raftConns chan net.Conn
	closed    chan struct{}
	closeOnce sync.Once

	mu          sync.RWMutex
	dataHandler func(net.Conn)
}

func newMux(ln net.Listener, advertise net.Addr, key []byte, log *slog.Logger) *mux {
	m := &mux{ln: ln, advertise: advertise, key: key, log: log, raftConns: make(chan net.Conn, 16), closed: make(chan struct{})}
	go m.serve()
	return m
}

func (m *mux) setDataHandler(h func(net.Conn)) {
	m.mu.Lock()
	m.dataHandler = h
	m.mu.Unlock()
}

func (m *mux) serve() {
	for {
		conn, err := m.ln.Accept()
		if err != nil {
			select {
			case <-m.closed:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			m.log.Error("peer listener stopped", "err", err)
			return
		}
		go m.route(conn)
	}
}

func (m *mux) route(conn net.Conn) {
	kind, err := serverHandshake(conn, m.key)
	if err != nil {
		m.log.Warn("refused a peer connection", "remote", conn.RemoteAddr().String(), "err", err)
		conn.Close()
		return
	}
	switch kind {
	case streamRaft:
		select {
		case m.raftConns <- conn:
		case <-m.closed:
			conn.Close()
		}
	case streamData:
		m.mu.RLock()
		h := m.dataHandler
		m.mu.RUnlock()
		if h == nil {
			conn.Close()
			return
		}
		h(conn)
	default:
		m.log.Warn("unknown peer stream kind", "kind", kind)
		conn.Close()
	}
}

func (m *mux) dial(address string, kind byte, timeout time.Duration) (net.Conn, error) {
	conn, err := net.DialTimeout("tcp", address, timeout)
	if err != nil {
		return nil, err
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	if err := clientHandshake(conn, m.key, kind); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

func (m *mux) close() {
	m.closeOnce.Do(func() {
		close(m.closed)
		m.ln.Close()
	})
}

// raftLayer is the raft.StreamLayer view of the mux.
type raftLayer struct{ m *mux }

func (l raftLayer) Accept() (net.Conn, error) {
	select {
	case c := <-l.m.raftConns:
		return c, nil
	case <-l.m.closed:
		return nil, net.ErrClosed
	}
}

func (l raftLayer) Close() error { l.m.close(); return nil }
func (l raftLayer) Addr() net.Addr {
	return l.m.advertise
}
func (l raftLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return l.m.dial(string(address), streamRaft, timeout)
}

// hostAddr is a net.Addr that may carry a host name: raft dials it as is,
// so a container keeps its identity when its IP changes.
type hostAddr string

func (a hostAddr) Network() string { return "tcp" }
func (a hostAddr) String() string  { return string(a) }
