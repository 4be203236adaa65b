// Package gossip runs memberlist for the node: metadata exchange, membership
// with alive/suspect/dead/left states, and a journal of recent membership
// rumors for the Butterfly view.
package gossip

import (
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// State of a member as this node sees it.
type State string

const (
	StateAlive   State = "alive"
	StateSuspect State = "suspect"
	StateDead    State = "dead"
	StateLeft    State = "left"
)

// Member is one node of the ring.
type Member struct {
	Name string
	Addr string
	Port int
	Meta Meta
	// MetaErr is set when the peer's metadata could not be read.
	MetaErr     string
	State       State
	StateSince  time.Time
	LastContact time.Time
	// Incarnation counts the changes this node has heard about the member
	// (alive, updates, failures): memberlist keeps its own number private.
	Incarnation uint64
}

// Rumor is one membership change heard through gossip.
type Rumor struct {
	Kind     string    `json:"kind"`
	MemberID string    `json:"member_id"`
	Health   string    `json:"health"`
	At       time.Time `json:"at"`
}

// Config of the gossip layer.
type Config struct {
	NodeID        string
	BindAddr      string
	BindPort      int
	AdvertiseAddr string
	AdvertisePort int
	// Key enables memberlist's AES-GCM encryption and message verification.
	Key    []byte
	Meta   func() Meta
	Logger *slog.Logger
	// Fast selects memberlist's local-network timings, for tests.
	Fast bool
}

// Gossip is the node's membership.
type Gossip struct {
	cfg Config
	ml  *memberlist.Memberlist
	log *slog.Logger

	mu      sync.Mutex
	members map[string]*Member
	rumors  []Rumor
	notify  chan struct{}

	probeInterval time.Duration
}

const maxRumors = 64

// New starts memberlist on the configured address. It does not join anyone.
func New(cfg Config) (*Gossip, error) {
	g := &Gossip{cfg: cfg, log: cfg.Logger, members: map[string]*Member{}, notify: make(chan struct{}, 1)}
	mc := memberlist.DefaultLANConfig()
	if cfg.Fast {
		mc = memberlist.DefaultLocalConfig()
		mc.ProbeInterval = 200 * time.Millisecond
		mc.ProbeTimeout = 100 * time.Millisecond
		mc.GossipInterval = 50 * time.Millisecond
		mc.SuspicionMult = 2
		mc.PushPullInterval = 2 * time.Second
	}
	mc.Name = cfg.NodeID
	mc.BindAddr = cfg.BindAddr
	mc.BindPort = cfg.BindPort
	mc.AdvertiseAddr = cfg.AdvertiseAddr
	mc.AdvertisePort = cfg.AdvertisePort
	mc.SecretKey = cfg.Key
	// A node restarted at a new address may take its name back once the old
	// one is known dead.
	mc.DeadNodeReclaimTime = time.Second
	mc.Delegate = &delegate{g: g}
	mc.Events = &events{g: g}
	mc.Ping = &pings{g: g}
	mc.Logger = log.New(&logWriter{log: cfg.Logger}, "", 0)
	g.probeInterval = mc.ProbeInterval
	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("gossip: %w", err)
	}
	g.ml = ml
	return g, nil
}

// Join contacts the seeds; it succeeds if any answers.
func (g *Gossip) Join(seeds []string) (int, error) {
	return g.ml.Join(seeds)
}

// LocalAddr is the address and port other members reach this node at.
func (g *Gossip) LocalAddr() (string, int) {
	n := g.ml.LocalNode()
	return n.Addr.String(), int(n.Port)
}

// UpdateMeta re-reads Config.Meta and gossips it.
func (g *Gossip) UpdateMeta() error {
	return g.ml.UpdateNode(2 * time.Second)
}

// Changed signals (without blocking memberlist) that membership changed.
func (g *Gossip) Changed() <-chan struct{} { return g.notify }

// Members returns every member ever heard of that is still remembered,
// including dead and left ones, sorted by name.
func (g *Gossip) Members() []Member {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := time.Now()
	suspectAfter := g.suspectAfterLocked()
	out := make([]Member, 0, len(g.members))
	for _, m := range g.members {
		c := *m
		if c.State == StateAlive && c.Name != g.cfg.NodeID && now.Sub(c.LastContact) > suspectAfter {
			c.State = StateSuspect
		}
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// suspectAfterLocked is how long a member may go without answering one of
// our probes before we call it suspect. memberlist probes one member per
// interval in turn, so the window grows with the ring.
func (g *Gossip) suspectAfterLocked() time.Duration {
	n := len(g.members) - 1
	if n < 1 {
		n = 1
	}
	return time.Duration(2*n+2) * g.probeInterval
}

// Rumors returns the recent membership changes, oldest first.
func (g *Gossip) Rumors() []Rumor {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]Rumor(nil), g.rumors...)
}

// Leave tells the ring this node is going away on purpose.
func (g *Gossip) Leave(timeout time.Duration) error { return g.ml.Leave(timeout) }

// Shutdown stops memberlist without a leave message.
func (g *Gossip) Shutdown() error { return g.ml.Shutdown() }

// Forget drops a dead or left member from the local view once Raft no longer
// needs it, so lists do not grow forever.
func (g *Gossip) Forget(name string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if m, ok := g.members[name]; ok && (m.State == StateDead || m.State == StateLeft) {
		delete(g.members, name)
	}
}

func (g *Gossip) record(n *memberlist.Node, state State, kind string) {
	g.mu.Lock()
	now := time.Now()
	m, ok := g.members[n.Name]
	if !ok {
		m = &Member{Name: n.Name, LastContact: now}
		g.members[n.Name] = m
	}
	m.Addr = n.Addr.String()
	m.Port = int(n.Port)
	meta, err := DecodeMeta(n.Meta)
	if err != nil {
		m.MetaErr = err.Error()
	} else {
		m.Meta, m.MetaErr = meta, ""
	}
	if m.State != state {
		m.StateSince = now
		if state == StateAlive {
			m.LastContact = now
		}
	}
	m.State = state
	m.Incarnation++
	g.rumors = append(g.rumors, Rumor{Kind: kind, MemberID: n.Name, Health: string(state), At: now})
	if len(g.rumors) > maxRumors {
		g.rumors = g.rumors[len(g.rumors)-maxRumors:]
	}
	g.mu.Unlock()
	select {
	case g.notify <- struct{}{}:
	default:
	}
}

type delegate struct{ g *Gossip }

func (d *delegate) NodeMeta(limit int) []byte {
	b, err := d.g.cfg.Meta().Encode()
	if err != nil || len(b) > limit {
		// Never hand memberlist more than it allows: it would panic.
		d.g.log.Error("gossip metadata too large; sending none", "err", err)
		return nil
	}
	return b
}
func (d *delegate) NotifyMsg([]byte)                           {}
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *delegate) LocalState(join bool) []byte                { return nil }
func (d *delegate) MergeRemoteState(buf []byte, join bool)     {}

type events struct{ g *Gossip }

func (e *events) NotifyJoin(n *memberlist.Node)   { e.g.record(n, StateAlive, "join") }
func (e *events) NotifyUpdate(n *memberlist.Node) { e.g.record(n, StateAlive, "update") }
func (e *events) NotifyLeave(n *memberlist.Node) {
	// memberlist reports failures and graceful leaves alike here; a member
	// that announced it was leaving has left.
	if meta, err := DecodeMeta(n.Meta); err == nil && meta.Leaving {
		e.g.record(n, StateLeft, "leave")
		return
	}
	e.g.record(n, StateDead, "failure")
}

type pings struct{ g *Gossip }

func (p *pings) AckPayload() []byte { return nil }
func (p *pings) NotifyPingComplete(other *memberlist.Node, rtt time.Duration, payload []byte) {
	p.g.mu.Lock()
	if m, ok := p.g.members[other.Name]; ok {
		m.LastContact = time.Now()
	}
	p.g.mu.Unlock()
}

// logWriter sends memberlist's log lines to slog at their level.
type logWriter struct{ log *slog.Logger }

func (w *logWriter) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	switch {
	case strings.Contains(line, "[ERR]"):
		w.log.Error(line, "component", "memberlist")
	case strings.Contains(line, "[WARN]"):
		w.log.Warn(line, "component", "memberlist")
	default:
		w.log.Debug(line, "component", "memberlist")
	}
	return len(p), nil
}

var _ io.Writer = (*logWriter)(nil)

// ResolveAdvertise turns a host name into the IP memberlist must advertise.
func ResolveAdvertise(host string) (string, error) {
	if ip := net.ParseIP(host); ip != nil {
		return host, nil
	}
	ips, err := net.LookupIP(host)
	if err != nil || len(ips) == 0 {
		return "", fmt.Errorf("cannot resolve advertise host %q: %v", host, err)
	}
	for _, ip := range ips {
		if ip.To4() != nil {
			return ip.String(), nil
		}
	}
	return ips[0].String(), nil
}

// JoinPort formats host and port.
func JoinPort(host string, port int) string { return net.JoinHostPort(host, strconv.Itoa(port)) }
