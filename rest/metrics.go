package rest

import (
	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/dispatcher-dev/dispatcher/cluster"
)

// metrics live in a registry per node, so several nodes can share one test
// process.
type metrics struct {
	registry *prometheus.Registry
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

func newMetrics(node *cluster.Node) *metrics {
	reg := prometheus.NewRegistry()
	m := &metrics{
		registry: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dispatcher_http_requests_total", Help: "HTTP requests by route, method and status code.",
		}, []string{"route", "method", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "dispatcher_http_request_duration_seconds", Help: "HTTP request latency by route.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"route", "method"}),
	}
	reg.MustRegister(m.requests, m.latency,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&clusterCollector{node: node},
	)
	reg.MustRegister(node.Collectors()...)
	return m
}

var (
	descRaftState   = prometheus.NewDesc("dispatcher_raft_state", "Raft state of this node (1 for the current one).", []string{"state"}, nil)
	descRaftTerm    = prometheus.NewDesc("dispatcher_raft_term", "Current Raft term.", nil, nil)
	descRaftCommit  = prometheus.NewDesc("dispatcher_raft_commit_index", "Raft commit index.", nil, nil)
	descRaftApplied = prometheus.NewDesc("dispatcher_raft_applied_index", "Raft index applied to the state machine.", nil, nil)
	descRaftLast    = prometheus.NewDesc("dispatcher_raft_last_index", "Last Raft log index.", nil, nil)
	descGossip      = prometheus.NewDesc("dispatcher_gossip_members", "Gossip members by state.", []string{"state"}, nil)
)

// clusterCollector reads raft and gossip at scrape time.
type clusterCollector struct{ node *cluster.Node }

func (c *clusterCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRaftState, descRaftTerm, descRaftCommit, descRaftApplied, descRaftLast, descGossip} {
		ch <- d
	}
}

func (c *clusterCollector) Collect(ch chan<- prometheus.Metric) {
	r := c.node.Raft()
	if r == nil {
		return
	}
	current := r.State()
	for _, st := range []raft.RaftState{raft.Follower, raft.Candidate, raft.Leader, raft.Shutdown} {
		v := 0.0
		if st == current {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(descRaftState, prometheus.GaugeValue, v, st.String())
	}
	ch <- prometheus.MustNewConstMetric(descRaftTerm, prometheus.GaugeValue, float64(r.CurrentTerm()))
	ch <- prometheus.MustNewConstMetric(descRaftCommit, prometheus.GaugeValue, float64(r.CommitIndex()))
	ch <- prometheus.MustNewConstMetric(descRaftApplied, prometheus.GaugeValue, float64(r.AppliedIndex()))
	ch <- prometheus.MustNewConstMetric(descRaftLast, prometheus.GaugeValue, float64(r.LastIndex()))
	counts := map[string]int{"alive": 0, "suspect": 0, "dead": 0, "left": 0}
	if g := c.node.Gossip(); g != nil {
		for _, m := range g.Members() {
			counts[string(m.State)]++
		}
	}
	for st, n := range counts {
		ch <- prometheus.MustNewConstMetric(descGossip, prometheus.GaugeValue, float64(n), st)
	}
}
