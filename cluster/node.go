// Package cluster is a node's control plane: Raft with its stores, gossip
// membership, bootstrap, the leader loop that reconciles gossip into the
// Raft configuration, and the primitives the API needs (apply on the
// leader, consistent reads, readiness, graceful leave).
package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/bbolt"

	"github.com/dispatcher-dev/dispatcher/config"
	"github.com/dispatcher-dev/dispatcher/fsm"
	"github.com/dispatcher-dev/dispatcher/gossip"
)

// ErrNotLeader means this node cannot take the write; nothing was appended,
// so the caller may forward or retry.
var ErrNotLeader = errors.New("not the leader")

// ErrIndeterminate means leadership was lost while the write was being
// committed: it may or may not have been applied (raft's ErrLeadershipLost).
var ErrIndeterminate = errors.New("leadership was lost while the write was committed; it may or may not have been applied")

// ErrNoLeader means no node is leader right now.
var ErrNoLeader = errors.New("no cluster leader")

// Options are the parts of a node that are not user configuration.
type Options struct {
	Logger  *slog.Logger
	Version string
	// FastGossip uses memberlist's local-network timings (tests).
	FastGossip bool
	// ReconcileInterval is how often the leader reconciles membership even
	// without gossip events.
	ReconcileInterval time.Duration
}

// Node is one dispatcher server.
type Node struct {
	cfg  config.Config
	opts Options
	log  *slog.Logger

	FSM    *fsm.FSM
	raft   *raft.Raft
	store  *raftboltdb.BoltStore
	snaps  raft.SnapshotStore
	trans  *raft.NetworkTransport
	mux    *mux
	gossip *gossip.Gossip

	httpAdvertise string
	raftAdvertise string
	hasState      bool
	leaving       atomic.Bool
	// raftAddrs caches the Raft configuration's addresses, the fallback
	// when gossip does not know a server's current address.
	raftAddrs atomic.Pointer[map[string]string]

	mu           sync.Mutex
	leaderSince  time.Time
	leaderID     string
	leaderTerm   uint64
	elections    []Election
	readyIndex   uint64
	caughtUp     bool
	leaderCancel context.CancelFunc
	leaderDone   chan struct{}
	leaderReady  chan struct{}
	leaderHooks  []func(ctx context.Context)
	unknownSince map[string]time.Time
	// heartbeatFailing holds, on the leader, the followers Raft cannot
	// reach, since when.
	heartbeatFailing map[string]time.Time

	applyLatency prometheus.Histogram

	shutdownOnce sync.Once
	stop         chan struct{}
	wg           sync.WaitGroup
}

// Election is a leader change this node observed.
type Election struct {
	LeaderID string    `json:"leader_id"`
	Term     uint64    `json:"term"`
	At       time.Time `json:"at"`
}

// New opens the node's stores and binds its ports, but starts nothing that
// talks to peers; Start does.
func New(cfg config.Config, opts Options) (*Node, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.ReconcileInterval == 0 {
		opts.ReconcileInterval = time.Second
	}
	n := &Node{cfg: cfg, opts: opts, log: opts.Logger, stop: make(chan struct{}), unknownSince: map[string]time.Time{}, heartbeatFailing: map[string]time.Time{}, leaderReady: make(chan struct{}), applyLatency: newApplyLatency()}
	n.FSM = fsm.New(opts.Logger.With("component", "fsm"))
	raftDir := filepath.Join(cfg.DataDir, "raft")
	if err := os.MkdirAll(raftDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	store, err := raftboltdb.New(raftboltdb.Options{
		Path: filepath.Join(raftDir, "raft.db"),
		// The freelist is rebuilt on open instead of written on every
		// commit, which keeps appends fast after log truncation.
		BoltOptions: &bbolt.Options{Timeout: time.Second, NoFreelistSync: true},
	})
	if err != nil {
		return nil, fmt.Errorf("open raft store: %w", err)
	}
	n.store = store
	snaps, err := raft.NewFileSnapshotStoreWithLogger(raftDir, 2, newHCLogger(opts.Logger, "snapshot"))
	if err != nil {
		store.Close()
		return nil, fmt.Errorf("snapshot store: %w", err)
	}
	n.snaps = snaps
	n.hasState, err = raft.HasExistingState(store, store, snaps)
	if err != nil {
		store.Close()
		return nil, err
	}

	advertise, err := n.advertiseHost()
	if err != nil {
		store.Close()
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.RaftAddr)
	if err != nil {
		store.Close()
		return nil, fmt.Errorf("raft listener: %w", err)
	}
	n.raftAdvertise = net.JoinHostPort(advertise, strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
	n.mux = newMux(ln, hostAddr(n.raftAdvertise), peerKey(cfg.AuthToken, cfg.GossipKey), opts.Logger.With("component", "peer"))
	return n, nil
}

// advertiseHost is the host peers use for this node: --advertise, else the
// bind host when it is specific, else the first non-loopback IP.
func (n *Node) advertiseHost() (string, error) {
	if n.cfg.Advertise != "" {
		return n.cfg.Advertise, nil
	}
	host, _, _ := config.SplitHostPort(n.cfg.RaftAddr)
	if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() {
		return host, nil
	}
	if host != "" && net.ParseIP(host) == nil {
		return host, nil
	}
	addrs, err := net.InterfaceAddrs()
	if err == nil {
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLoopback() && ipn.IP.To4() != nil {
				return ipn.IP.String(), nil
			}
		}
	}
	return "127.0.0.1", nil
}

// SetHTTPAddress records the address peers use for this node's API; the
// server calls it once its listener is bound.
func (n *Node) SetHTTPAddress(addr string) {
	host, port, err := net.SplitHostPort(addr)
	if err == nil {
		if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
			adv, _ := n.advertiseHost()
			addr = net.JoinHostPort(adv, port)
		}
	}
	n.httpAdvertise = addr
}

// SetDataHandler routes authenticated data streams from peers.
func (n *Node) SetDataHandler(h func(net.Conn)) { n.mux.setDataHandler(h) }

// DialData opens an authenticated data stream to another node.
func (n *Node) DialData(ctx context.Context, nodeID string) (net.Conn, error) {
	m, ok := n.member(nodeID)
	if !ok || m.State == gossip.StateDead || m.State == gossip.StateLeft {
		return nil, fmt.Errorf("node %s is not alive", nodeID)
	}
	timeout := 5 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	return n.mux.dial(m.Meta.RaftAddr, streamData, timeout)
}

// OnLeadership registers work that runs while this node leads; its context
// is cancelled when leadership is lost. Register before Start.
func (n *Node) OnLeadership(f func(ctx context.Context)) {
	n.leaderHooks = append(n.leaderHooks, f)
}

// Start runs Raft and gossip, joins the seeds and bootstraps when due.
func (n *Node) Start() error {
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(n.cfg.NodeID)
	rc.HeartbeatTimeout = n.cfg.Raft.HeartbeatTimeout
	rc.ElectionTimeout = n.cfg.Raft.ElectionTimeout
	rc.LeaderLeaseTimeout = n.cfg.Raft.LeaderLeaseTimeout
	rc.CommitTimeout = n.cfg.Raft.CommitTimeout
	rc.SnapshotThreshold = n.cfg.Raft.SnapshotThreshold
	rc.SnapshotInterval = n.cfg.Raft.SnapshotInterval
	rc.TrailingLogs = n.cfg.Raft.TrailingLogs
	rc.MaxAppendEntries = 256
	// A removed server stays up so the leader can add it back when it
	// returns (Nomad does the same).
	rc.ShutdownOnRemove = false
	rc.Logger = newHCLogger(n.log, "raft")
	notify := make(chan bool, 16)
	rc.NotifyCh = notify

	n.trans = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:                raftLayer{n.mux},
		MaxPool:               4,
		Timeout:               5 * time.Second,
		Logger:                newHCLogger(n.log, "raft-net"),
		ServerAddressProvider: addressProvider{n},
	})
	r, err := raft.NewRaft(rc, n.FSM, n.store, n.store, n.snaps, n.trans)
	if err != nil {
		return fmt.Errorf("start raft: %w", err)
	}
	n.raft = r

	observations := make(chan raft.Observation, 64)
	r.RegisterObserver(raft.NewObserver(observations, false, func(o *raft.Observation) bool {
		switch o.Data.(type) {
		case raft.LeaderObservation, raft.FailedHeartbeatObservation, raft.ResumedHeartbeatObservation:
			return true
		}
		return false
	}))

	gossipHost, gossipPort, _ := config.SplitHostPort(n.cfg.GossipAddr)
	advHost, _ := n.advertiseHost()
	advIP, err := gossip.ResolveAdvertise(advHost)
	if err != nil {
		return err
	}
	g, err := gossip.New(gossip.Config{
		NodeID:        n.cfg.NodeID,
		BindAddr:      gossipHost,
		BindPort:      gossipPort,
		AdvertiseAddr: advIP,
		AdvertisePort: gossipPort,
		Key:           n.cfg.GossipKey,
		Meta:          n.meta,
		Logger:        n.log.With("component", "gossip"),
		Fast:          n.opts.FastGossip,
	})
	if err != nil {
		r.Shutdown()
		return err
	}
	n.gossip = g

	n.wg.Add(5)
	go n.refreshRaftAddrs()
	go n.watchLeadership(notify)
	go n.watchObservations(observations)
	go n.joinAndBootstrap()
	go n.rejoinSeeds()
	return nil
}

func (n *Node) meta() gossip.Meta {
	return gossip.Meta{
		ID:       n.cfg.NodeID,
		Role:     gossip.RoleServer,
		RaftAddr: n.raftAdvertise,
		HTTPAddr: n.httpAdvertise,
		Slots:    n.cfg.TaskSlots,
		Version:  n.opts.Version,
		Expect:   n.cfg.BootstrapExpect,
		HasState: n.hasState || n.hasRaftConfig(),
		Leaving:  n.leaving.Load(),
	}
}

func (n *Node) hasRaftConfig() bool {
	if n.raft == nil {
		return false
	}
	return n.raft.LastIndex() > 0
}

// addressProvider lets Raft dial a server at the address gossip currently
// reports for its id, so a node restarted at a new address is reachable
// before the leader rewrites the configuration.
type addressProvider struct{ n *Node }

func (p addressProvider) ServerAddr(id raft.ServerID) (raft.ServerAddress, error) {
	if m, ok := p.n.member(string(id)); ok && m.Meta.RaftAddr != "" && m.State != gossip.StateDead && m.State != gossip.StateLeft {
		return raft.ServerAddress(m.Meta.RaftAddr), nil
	}
	if addrs := p.n.raftAddrs.Load(); addrs != nil {
		if a, ok := (*addrs)[string(id)]; ok {
			return raft.ServerAddress(a), nil
		}
	}
	return "", fmt.Errorf("no address for %s", id)
}

// refreshRaftAddrs keeps the fallback addresses current; it runs outside
// raft's own goroutines, which must never wait on GetConfiguration.
func (n *Node) refreshRaftAddrs() {
	defer n.wg.Done()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	sentState := false
	for {
		if f := n.raft.GetConfiguration(); f.Error() == nil {
			addrs := map[string]string{}
			for _, s := range f.Configuration().Servers {
				addrs[string(s.ID)] = string(s.Address)
			}
			n.raftAddrs.Store(&addrs)
			if !sentState && len(addrs) > 0 {
				// Tell peers this node belongs to a cluster now, so a
				// late starter never bootstraps a second one.
				sentState = true
				n.gossip.UpdateMeta()
			}
		}
		select {
		case <-n.stop:
			return
		case <-tick.C:
		}
	}
}

func (n *Node) member(id string) (gossip.Member, bool) {
	if n.gossip == nil {
		return gossip.Member{}, false
	}
	for _, m := range n.gossip.Members() {
		if m.Name == id {
			return m, true
		}
	}
	return gossip.Member{}, false
}

func (n *Node) joinAndBootstrap() {
	defer n.wg.Done()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	joined := len(n.cfg.Join) == 0
	lastJoinErr := time.Time{}
	for {
		if !joined {
			if _, err := n.gossip.Join(n.cfg.Join); err == nil {
				joined = true
				n.log.Info("joined the gossip ring", "seeds", n.cfg.Join)
			} else if time.Since(lastJoinErr) > 10*time.Second {
				lastJoinErr = time.Now()
				n.log.Warn("cannot join the gossip ring yet; retrying", "seeds", n.cfg.Join, "err", err)
			}
		}
		if joined && (n.hasState || n.hasRaftConfig()) {
			return
		}
		if !n.hasState && n.maybeBootstrap() {
			return
		}
		select {
		case <-n.stop:
			return
		case <-tick.C:
		}
	}
}

// maybeBootstrap bootstraps Raft when --bootstrap-expect servers, none of
// them part of a cluster yet, see each other (Consul and Nomad semantics).
// Every one of them computes the same configuration from gossip, so it does
// not matter which bootstrap call wins.
func (n *Node) maybeBootstrap() bool {
	expect := n.cfg.BootstrapExpect
	if expect <= 0 {
		return false
	}
	var servers []raft.Server
	for _, m := range n.gossip.Members() {
		if m.State != gossip.StateAlive || m.Meta.Role != gossip.RoleServer {
			continue
		}
		if m.Meta.HasState {
			n.log.Info("a peer already belongs to a cluster; waiting to be added instead of bootstrapping", "peer", m.Name)
			n.hasState = true
			return true
		}
		if m.Meta.Expect != 0 && m.Meta.Expect != expect {
			n.log.Error("peers disagree on --bootstrap-expect; not bootstrapping", "peer", m.Name, "theirs", m.Meta.Expect, "ours", expect)
			return false
		}
		servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(m.Name), Address: raft.ServerAddress(m.Meta.RaftAddr)})
	}
	if len(servers) < expect {
		return false
	}
	err := n.raft.BootstrapCluster(raft.Configuration{Servers: servers}).Error()
	if err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
		n.log.Error("bootstrap failed", "err", err)
		return false
	}
	n.log.Info("bootstrapped the cluster", "servers", len(servers))
	n.hasState = true
	n.gossip.UpdateMeta()
	return true
}

func (n *Node) watchObservations(ch chan raft.Observation) {
	defer n.wg.Done()
	for {
		select {
		case <-n.stop:
			return
		case o := <-ch:
			switch hb := o.Data.(type) {
			case raft.FailedHeartbeatObservation:
				n.mu.Lock()
				if _, ok := n.heartbeatFailing[string(hb.PeerID)]; !ok {
					n.heartbeatFailing[string(hb.PeerID)] = time.Now()
				}
				n.mu.Unlock()
				continue
			case raft.ResumedHeartbeatObservation:
				n.mu.Lock()
				delete(n.heartbeatFailing, string(hb.PeerID))
				n.mu.Unlock()
				continue
			}
			lo := o.Data.(raft.LeaderObservation)
			n.mu.Lock()
			// A new leader starts with a clean view of its followers.
			n.heartbeatFailing = map[string]time.Time{}
			n.leaderID = string(lo.LeaderID)
			n.leaderSince = time.Now()
			n.leaderTerm = n.raft.CurrentTerm()
			if lo.LeaderID != "" {
				n.elections = append(n.elections, Election{LeaderID: string(lo.LeaderID), Term: n.leaderTerm, At: n.leaderSince})
				if len(n.elections) > 32 {
					n.elections = n.elections[len(n.elections)-32:]
				}
				if n.readyIndex == 0 {
					n.readyIndex = n.raft.LastIndex()
				}
			}
			n.mu.Unlock()
		}
	}
}

// watchLeadership drains raft's NotifyCh at once (a full channel stalls
// raft) and starts or stops the leader's work.
func (n *Node) watchLeadership(notify chan bool) {
	defer n.wg.Done()
	for {
		select {
		case <-n.stop:
			n.revokeLeadership()
			return
		case isLeader := <-notify:
			if isLeader {
				n.establishLeadership()
			} else {
				n.revokeLeadership()
			}
		}
	}
}

func (n *Node) establishLeadership() {
	n.revokeLeadership()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	ready := make(chan struct{})
	n.mu.Lock()
	n.leaderCancel, n.leaderDone = cancel, done
	n.leaderReady = ready
	n.mu.Unlock()
	n.log.Info("this node is the leader", "term", n.raft.CurrentTerm())
	go func() {
		defer close(done)
		// A barrier commits an entry of this term, so reads on this leader
		// see everything the previous leader acknowledged.
		for {
			if err := n.raft.Barrier(10 * time.Second).Error(); err == nil {
				break
			} else if ctx.Err() != nil {
				return
			} else {
				n.log.Warn("leader barrier failed; retrying", "err", err)
				time.Sleep(100 * time.Millisecond)
			}
		}
		close(ready)
		var hooks sync.WaitGroup
		for _, h := range n.leaderHooks {
			hooks.Add(1)
			go func(h func(context.Context)) { defer hooks.Done(); h(ctx) }(h)
		}
		n.reconcileLoop(ctx)
		hooks.Wait()
	}()
}

func (n *Node) revokeLeadership() {
	n.mu.Lock()
	cancel, done := n.leaderCancel, n.leaderDone
	n.leaderCancel, n.leaderDone = nil, nil
	n.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
		n.log.Info("leadership lost")
	}
}

// IsLeader tells whether this node leads right now.
func (n *Node) IsLeader() bool { return n.raft != nil && n.raft.State() == raft.Leader }

// Apply commits a command through Raft. It must run on the leader.
func (n *Node) Apply(ctx context.Context, cmd fsm.Command) (fsm.Result, error) {
	data, err := fsm.Encode(cmd)
	if err != nil {
		return fsm.Result{}, err
	}
	timeout := 10 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	start := time.Now()
	f := n.raft.Apply(data, timeout)
	err = f.Error()
	n.applyLatency.Observe(time.Since(start).Seconds())
	if err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipTransferInProgress) {
			return fsm.Result{}, ErrNotLeader
		}
		if errors.Is(err, raft.ErrLeadershipLost) {
			return fsm.Result{}, ErrIndeterminate
		}
		return fsm.Result{}, err
	}
	res, _ := f.Response().(fsm.Result)
	return res, nil
}

// ConsistentRead waits until this leader has verified its leadership with a
// quorum and applied everything committed before the call (rqlite's recipe).
func (n *Node) ConsistentRead(ctx context.Context) error {
	if !n.IsLeader() {
		return ErrNotLeader
	}
	n.mu.Lock()
	ready := n.leaderReady
	n.mu.Unlock()
	select {
	case <-ready:
	case <-ctx.Done():
		return ctx.Err()
	}
	term := n.raft.CurrentTerm()
	idx := n.raft.CommitIndex()
	if err := n.raft.VerifyLeader().Error(); err != nil {
		return ErrNotLeader
	}
	if n.raft.CurrentTerm() != term {
		return ErrNotLeader
	}
	return n.WaitApplied(ctx, idx)
}

// WaitApplied blocks until the state machine has applied index. Raft's own
// applied index is the one to watch: barrier and configuration entries
// advance it without passing through the FSM.
func (n *Node) WaitApplied(ctx context.Context, index uint64) error {
	for {
		ch := n.FSM.Changed()
		if n.raft.AppliedIndex() >= index {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// LeaderInfo describes the current leader.
type LeaderInfo struct {
	ID          string    `json:"id"`
	HTTPAddress string    `json:"http_address"`
	RaftAddress string    `json:"raft_address"`
	Term        uint64    `json:"term"`
	Since       time.Time `json:"since"`
}

// Leader returns the leader as this node knows it.
func (n *Node) Leader() (LeaderInfo, bool) {
	if n.raft == nil {
		return LeaderInfo{}, false
	}
	addr, id := n.raft.LeaderWithID()
	if id == "" {
		return LeaderInfo{}, false
	}
	// The id comes live from raft; the observation that recorded "since"
	// may lag behind it, so only trust it when it names the same leader.
	term := n.raft.CurrentTerm()
	n.mu.Lock()
	since := n.leaderSince
	if n.leaderID != string(id) {
		since = time.Now()
	}
	n.mu.Unlock()
	info := LeaderInfo{ID: string(id), RaftAddress: string(addr), Term: term, Since: since}
	if string(id) == n.cfg.NodeID {
		info.HTTPAddress = n.httpAdvertise
	} else if m, ok := n.member(string(id)); ok {
		info.HTTPAddress = m.Meta.HTTPAddr
	}
	return info, true
}

// Elections returns the leader changes this node has seen, oldest first.
func (n *Node) Elections() []Election {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]Election(nil), n.elections...)
}

// Ready is true when the node sees a leader and has applied the log as far
// as it reached when that leader was first seen.
func (n *Node) Ready() (bool, string) {
	if _, ok := n.Leader(); !ok {
		return false, "no cluster leader"
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.caughtUp {
		return true, ""
	}
	applied := n.FSM.AppliedIndex()
	if applied >= n.readyIndex || n.raft.AppliedIndex() >= n.readyIndex {
		n.caughtUp = true
		return true, ""
	}
	return false, fmt.Sprintf("catching up: applied %d of %d", applied, n.readyIndex)
}

// ID is the node's id.
func (n *Node) ID() string { return n.cfg.NodeID }

// Config is the node's configuration.
func (n *Node) Config() config.Config { return n.cfg }

// Version is the build version.
func (n *Node) Version() string { return n.opts.Version }

// HTTPAddress is the advertised API address.
func (n *Node) HTTPAddress() string { return n.httpAdvertise }

// RaftAddress is the advertised peer address.
func (n *Node) RaftAddress() string { return n.raftAdvertise }

// Gossip exposes the membership view.
func (n *Node) Gossip() *gossip.Gossip { return n.gossip }

// Raft exposes raft for metrics and tests.
func (n *Node) Raft() *raft.Raft { return n.raft }

// Shutdown stops everything at once, as a crash would, but closes files.
func (n *Node) Shutdown() {
	n.shutdownOnce.Do(func() {
		close(n.stop)
		if n.gossip != nil {
			n.gossip.Shutdown()
		}
		if n.raft != nil {
			n.raft.Shutdown().Error()
		}
		n.wg.Wait()
		if n.trans != nil {
			n.trans.Close()
		}
		n.mux.close()
		n.store.Close()
	})
}
