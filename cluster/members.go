package cluster

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/raft"

	"github.com/dispatcher-dev/dispatcher/gossip"
)

// MemberInfo is one node as /v1/cluster/members shows it.
type MemberInfo struct {
	ID            string    `json:"id"`
	HTTPAddress   string    `json:"http_address"`
	RaftAddress   string    `json:"raft_address"`
	GossipAddress string    `json:"gossip_address"`
	Status        string    `json:"status"`
	StatusSince   time.Time `json:"status_since"`
	Suffrage      string    `json:"suffrage"`
	Leader        bool      `json:"leader"`
	Version       string    `json:"version"`
	Slots         int       `json:"slots"`
	// LastContact is when this node last heard from the member directly
	// (its own probe acks; for itself, now).
	LastContact time.Time `json:"last_contact"`
	Incarnation uint64    `json:"incarnation"`
}

// Members merges gossip and the Raft configuration: a voter that gossip has
// never heard of still shows, as does a gossip member that is not a voter.
func (n *Node) Members() []MemberInfo {
	suffrage := map[string]raft.Server{}
	if f := n.raft.GetConfiguration(); f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			suffrage[string(s.ID)] = s
		}
	}
	leaderAddr, leaderID := n.raft.LeaderWithID()
	_ = leaderAddr
	var out []MemberInfo
	seen := map[string]bool{}
	for _, m := range n.gossip.Members() {
		seen[m.Name] = true
		mi := MemberInfo{
			ID:            m.Name,
			HTTPAddress:   m.Meta.HTTPAddr,
			RaftAddress:   m.Meta.RaftAddr,
			GossipAddress: gossip.JoinPort(m.Addr, m.Port),
			Status:        string(m.State),
			StatusSince:   m.StateSince,
			Suffrage:      "none",
			Leader:        m.Name == string(leaderID),
			Version:       m.Meta.Version,
			Slots:         m.Meta.Slots,
			LastContact:   m.LastContact,
			Incarnation:   m.Incarnation,
		}
		if m.Name == n.cfg.NodeID {
			mi.LastContact = time.Now()
			mi.HTTPAddress = n.httpAdvertise
		}
		if s, ok := suffrage[m.Name]; ok {
			mi.Suffrage = suffrageName(s.Suffrage)
		}
		out = append(out, mi)
	}
	for id, s := range suffrage {
		if seen[id] {
			continue
		}
		out = append(out, MemberInfo{ID: id, RaftAddress: string(s.Address), Status: "unknown", Suffrage: suffrageName(s.Suffrage), Leader: id == string(leaderID)})
	}
	return out
}

func suffrageName(s raft.ServerSuffrage) string {
	if s == raft.Voter {
		return "voter"
	}
	return "nonvoter"
}

// Voters returns the Raft addresses of the voters (Consul's /status/peers).
func (n *Node) Voters() []string {
	var out []string
	if f := n.raft.GetConfiguration(); f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			if s.Suffrage == raft.Voter {
				out = append(out, string(s.Address))
			}
		}
	}
	return out
}

// Leave departs gracefully: hand leadership over, tell the ring, wait for
// the leader to drop this server from Raft, then stop.
func (n *Node) Leave(ctx context.Context) error {
	// Leaving is bounded whatever the caller's context: a node asked to
	// stop must stop.
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var firstErr error
	if n.IsLeader() && len(n.Voters()) > 1 {
		if err := n.raft.LeadershipTransfer().Error(); err != nil {
			firstErr = fmt.Errorf("leadership transfer: %w", err)
			n.log.Warn("leadership transfer failed; leaving anyway", "err", err)
		}
	}
	n.leaving.Store(true)
	if err := n.gossip.UpdateMeta(); err != nil {
		n.log.Warn("could not announce the leave", "err", err)
	}
	if err := n.gossip.Leave(2 * time.Second); err != nil && firstErr == nil {
		firstErr = err
	}
	// The leader's reconciler removes a left server at once; wait for it so
	// the remaining servers do not count this one toward quorum.
	for ctx.Err() == nil && len(n.Voters()) > 1 {
		// A removed server stops hearing from the leader (replication to it
		// ends when the new configuration is appended), so silence from the
		// leader after our leave means the removal went through.
		if !n.inConfiguration() || (!n.IsLeader() && time.Since(n.raft.LastContact()) > 2*n.cfg.Raft.HeartbeatTimeout) {
			break
		}
		if _, ok := n.Leader(); !ok {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
	n.Shutdown()
	return firstErr
}

func (n *Node) inConfiguration() bool {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	for _, s := range f.Configuration().Servers {
		if string(s.ID) == n.cfg.NodeID {
			return true
		}
	}
	return false
}

// Unreachable lists, on the leader, the servers Raft's heartbeats are
// failing to reach. It notices a dead node within a heartbeat or two, long
// before gossip's suspicion runs out.
func (n *Node) Unreachable() map[string]bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make(map[string]bool, len(n.heartbeatFailing))
	for id := range n.heartbeatFailing {
		out[id] = true
	}
	return out
}
