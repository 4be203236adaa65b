package cluster

import (
	"net"
	"strconv"
	"time"

	"github.com/dispatcher-dev/dispatcher/gossip"
)

// rejoinSeeds joins the --join seeds again, re-resolving their names,
// whenever one of them is not an alive member. Containers recreated with new
// addresses otherwise form a ring of their own beside the nodes that stayed,
// and each side declares the other dead.
func (n *Node) rejoinSeeds() {
	defer n.wg.Done()
	if len(n.cfg.Join) == 0 {
		return
	}
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-tick.C:
		}
		if n.seedsAlive() {
			continue
		}
		if joined, err := n.gossip.Join(n.cfg.Join); err == nil {
			n.log.Debug("re-joined gossip seeds", "contacted", joined)
		}
	}
}

func (n *Node) seedsAlive() bool {
	alive := map[string]bool{}
	for _, m := range n.gossip.Members() {
		if m.State == gossip.StateAlive || m.State == gossip.StateSuspect {
			alive[net.JoinHostPort(m.Addr, strconv.Itoa(m.Port))] = true
		}
	}
	for _, seed := range n.cfg.Join {
		host, port, err := net.SplitHostPort(seed)
		if err != nil {
			continue
		}
		ips, err := net.LookupHost(host)
		if err != nil {
			// An unresolvable seed may be a stopped container: nothing to
			// join there now.
			continue
		}
		found := false
		for _, ip := range ips {
			found = found || alive[net.JoinHostPort(ip, port)]
		}
		if !found {
			return false
		}
	}
	return true
}
