package cluster

import "github.com/prometheus/client_golang/prometheus"

// applyLatency times Raft applies proposed by this node.
func newApplyLatency() prometheus.Histogram {
	return prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "dispatcher_raft_apply_duration_seconds",
		Help:    "Time from proposing a command on the leader until it is applied.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	})
}

// Collectors are the node's own metrics, for the API's registry.
func (n *Node) Collectors() []prometheus.Collector {
	return []prometheus.Collector{n.applyLatency}
}
