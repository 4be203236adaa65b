package cluster

import (
	"context"
	"time"

	"github.com/hashicorp/raft"

	"github.com/dispatcher-dev/dispatcher/gossip"
)

// reconcileLoop keeps the Raft configuration in step with gossip while this
// node leads. Only the leader does this, so there is one writer.
func (n *Node) reconcileLoop(ctx context.Context) {
	tick := time.NewTicker(n.opts.ReconcileInterval)
	defer tick.Stop()
	for {
		n.reconcile()
		select {
		case <-ctx.Done():
			return
		case <-n.gossip.Changed():
		case <-tick.C:
		}
	}
}

func (n *Node) reconcile() {
	future := n.raft.GetConfiguration()
	if err := future.Error(); err != nil {
		return
	}
	inRaft := map[string]raft.Server{}
	voters := 0
	for _, s := range future.Configuration().Servers {
		inRaft[string(s.ID)] = s
		if s.Suffrage == raft.Voter {
			voters++
		}
	}
	members := map[string]gossip.Member{}
	for _, m := range n.gossip.Members() {
		if m.Meta.Role == gossip.RoleServer || m.MetaErr == "" {
			members[m.Name] = m
		}
	}
	now := time.Now()

	// New or moved servers become voters.
	for id, m := range members {
		if m.State != gossip.StateAlive && m.State != gossip.StateSuspect {
			continue
		}
		if m.Meta.RaftAddr == "" || m.Meta.Role != gossip.RoleServer {
			continue
		}
		s, ok := inRaft[id]
		if ok && string(s.Address) == m.Meta.RaftAddr {
			continue
		}
		if err := n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(m.Meta.RaftAddr), 0, 5*time.Second).Error(); err != nil {
			n.log.Warn("cannot add voter", "id", id, "err", err)
			continue
		}
		if ok {
			n.log.Info("updated a server's raft address", "id", id, "address", m.Meta.RaftAddr)
		} else {
			n.log.Info("added a voter", "id", id, "address", m.Meta.RaftAddr)
		}
	}

	// Servers that left on purpose go at once. Dead ones go after the
	// timeout, and only when Raft cannot reach them either: gossip alone can
	// be wrong (a ring split after containers moved), and removing a voter
	// the leader still replicates to would cut it off for nothing. When more
	// than (voters-1)/2 look failed, the leader is more likely the one cut
	// off, so nothing is removed (Consul's autopilot rule).
	n.mu.Lock()
	raftFailing := make(map[string]time.Time, len(n.heartbeatFailing))
	for id, since := range n.heartbeatFailing {
		raftFailing[id] = since
	}
	n.mu.Unlock()
	type removal struct{ id, why string }
	var gone, failed []removal
	for id := range inRaft {
		if id == n.cfg.NodeID {
			continue
		}
		m, known := members[id]
		if known {
			delete(n.unknownSince, id)
		}
		switch {
		case known && m.State == gossip.StateLeft:
			gone = append(gone, removal{id, "left"})
			continue
		case known && m.State == gossip.StateDead && now.Sub(m.StateSince) >= n.cfg.DeadServerTimeout:
		case !known:
			first, seen := n.unknownSince[id]
			if !seen {
				n.unknownSince[id] = now
				continue
			}
			if now.Sub(first) < n.cfg.DeadServerTimeout {
				continue
			}
		default:
			continue
		}
		since, failing := raftFailing[id]
		if !failing || now.Sub(since) < n.cfg.DeadServerTimeout/2 {
			n.log.Debug("gossip reports a voter gone but raft still reaches it; keeping it", "id", id)
			continue
		}
		why := "dead"
		if !known {
			why = "unknown to gossip"
		}
		failed = append(failed, removal{id, why})
	}
	if len(failed) > (voters-1)/2 {
		n.log.Warn("too many voters look failed to remove any safely", "failed", len(failed), "voters", voters)
		failed = nil
	}
	for _, r := range append(gone, failed...) {
		if err := n.raft.RemoveServer(raft.ServerID(r.id), 0, 5*time.Second).Error(); err != nil {
			n.log.Warn("cannot remove server", "id", r.id, "err", err)
			continue
		}
		delete(n.unknownSince, r.id)
		n.log.Info("removed a server from raft", "id", r.id, "reason", r.why)
		if _, known := members[r.id]; known {
			n.gossip.Forget(r.id)
		}
	}
}
