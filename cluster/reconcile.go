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

	// Servers that left on purpose go at once; dead ones after the timeout,
	// never more than (voters-1)/2 per pass, so quorum is never at stake.
	budget := (voters - 1) / 2
	for id := range inRaft {
		if id == n.cfg.NodeID {
			continue
		}
		m, known := members[id]
		remove, why := false, ""
		switch {
		case known && m.State == gossip.StateLeft:
			remove, why = true, "left"
		case known && m.State == gossip.StateDead && now.Sub(m.StateSince) >= n.cfg.DeadServerTimeout:
			remove, why = true, "dead"
		case !known:
			first, seen := n.unknownSince[id]
			if !seen {
				n.unknownSince[id] = now
			} else if now.Sub(first) >= n.cfg.DeadServerTimeout {
				remove, why = true, "unknown to gossip"
			}
		}
		if known {
			delete(n.unknownSince, id)
		}
		if !remove {
			continue
		}
		if why != "left" {
			if budget <= 0 {
				continue
			}
			budget--
		}
		if err := n.raft.RemoveServer(raft.ServerID(id), 0, 5*time.Second).Error(); err != nil {
			n.log.Warn("cannot remove server", "id", id, "err", err)
			continue
		}
		delete(n.unknownSince, id)
		n.log.Info("removed a server from raft", "id", id, "reason", why)
		if known {
			n.gossip.Forget(id)
		}
	}
}
