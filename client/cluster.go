package client

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// Leader is GET /v1/cluster/leader.
type Leader struct {
	ID          string    `json:"id"`
	HTTPAddress string    `json:"http_address"`
	RaftAddress string    `json:"raft_address"`
	Term        uint64    `json:"term"`
	Since       time.Time `json:"since"`
	Meta        `json:"-"`
}

// Member is one node of GET /v1/cluster/members.
type Member struct {
	ID            string    `json:"id"`
	HTTPAddress   string    `json:"http_address"`
	RaftAddress   string    `json:"raft_address"`
	GossipAddress string    `json:"gossip_address"`
	Status        string    `json:"status"` // alive, suspect, dead, left, unknown
	StatusSince   time.Time `json:"status_since"`
	Suffrage      string    `json:"suffrage"` // voter, nonvoter, none
	Leader        bool      `json:"leader"`
	Version       string    `json:"version"`
	Slots         int       `json:"slots"`
	LastContact   time.Time `json:"last_contact"`
	Incarnation   uint64    `json:"incarnation"`
}

// Members is GET /v1/cluster/members.
type Members struct {
	Members []Member `json:"members"`
	Meta    `json:"-"`
}

// Health is the answer of the /v1/health routes.
type Health struct {
	Status       string `json:"status"` // live, ready, leader
	Node         string `json:"node"`
	Leader       string `json:"leader,omitempty"`
	AppliedIndex uint64 `json:"applied_index,omitempty"`
	Meta         `json:"-"`
}

// Overview is Flink's ClusterOverviewWithVersion (GET /overview).
type Overview struct {
	TaskManagers        int    `json:"taskmanagers"`
	TaskManagersBlocked int    `json:"taskmanagers-blocked"`
	SlotsTotal          int    `json:"slots-total"`
	SlotsAvailable      int    `json:"slots-available"`
	SlotsFreeAndBlocked int    `json:"slots-free-and-blocked"`
	JobsRunning         int    `json:"jobs-running"`
	JobsFinished        int    `json:"jobs-finished"`
	JobsCancelled       int    `json:"jobs-cancelled"`
	JobsFailed          int    `json:"jobs-failed"`
	FlinkVersion        string `json:"flink-version"`
	FlinkCommit         string `json:"flink-commit"`
	Meta                `json:"-"`
}

// DashboardConfig is Flink's DashboardConfiguration (GET /config).
type DashboardConfig struct {
	RefreshInterval int64  `json:"refresh-interval"`
	TimezoneName    string `json:"timezone-name"`
	TimezoneOffset  int    `json:"timezone-offset"`
	FlinkVersion    string `json:"flink-version"`
	FlinkRevision   string `json:"flink-revision"`
	Features        struct {
		WebSubmit  bool `json:"web-submit"`
		WebCancel  bool `json:"web-cancel"`
		WebRescale bool `json:"web-rescale"`
		WebHistory bool `json:"web-history"`
	} `json:"features"`
	Meta `json:"-"`
}

// Leader returns the current leader as the answering node sees it; a 503
// *APIError while there is none (retried as the Retry policy allows).
func (c *Client) Leader(ctx context.Context) (*Leader, error) {
	var l Leader
	return &l, c.get(ctx, "/cluster/leader", nil, &l)
}

// Members returns every node gossip or Raft knows.
func (c *Client) Members(ctx context.Context) (*Members, error) {
	var m Members
	return &m, c.get(ctx, "/cluster/members", nil, &m)
}

// StatusLeader is Consul's /v1/status/leader: the leader's Raft address,
// "" when there is none.
func (c *Client) StatusLeader(ctx context.Context) (string, error) {
	var s string
	return s, c.get(ctx, "/status/leader", nil, &s)
}

// StatusPeers is Consul's /v1/status/peers: the voters' Raft addresses.
func (c *Client) StatusPeers(ctx context.Context) ([]string, error) {
	var s []string
	return s, c.get(ctx, "/status/peers", nil, &s)
}

// Live is GET /v1/health/live. Use it on a client from Node: with several
// addresses any live node answers.
func (c *Client) Live(ctx context.Context) (*Health, error) {
	return c.health(ctx, "live")
}

// Ready is GET /v1/health/ready: an error (a 503 *APIError) while the node
// sees no leader or is still replaying the log. It is not retried: it
// reports the node's state now. Use it on a client from Node.
func (c *Client) Ready(ctx context.Context) (*Health, error) {
	return c.health(ctx, "ready")
}

// IsLeaderNode is GET /v1/health/leader: nil on the leader, a 503
// *APIError elsewhere. Use it on a client from Node.
func (c *Client) IsLeaderNode(ctx context.Context) (*Health, error) {
	return c.health(ctx, "leader")
}

func (c *Client) health(ctx context.Context, which string) (*Health, error) {
	var h Health
	// Not idempotent in the retry sense: a 503 is the answer, not a
	// reason to ask again.
	err := c.call(ctx, &request{method: http.MethodGet, path: "/health/" + which}, &h)
	return &h, err
}

// Overview is Flink's cluster overview.
func (c *Client) Overview(ctx context.Context) (*Overview, error) {
	var o Overview
	return &o, c.get(ctx, "/overview", nil, &o)
}

// DashboardConfig is Flink's web dashboard configuration.
func (c *Client) DashboardConfig(ctx context.Context) (*DashboardConfig, error) {
	var d DashboardConfig
	return &d, c.get(ctx, "/config", nil, &d)
}

// Metrics returns the answering node's Prometheus text exposition.
func (c *Client) Metrics(ctx context.Context) (string, error) {
	resp, err := c.do(ctx, &request{method: http.MethodGet, path: "/metrics", idempotent: true, noVersion: true})
	if err != nil {
		return "", err
	}
	return string(resp.body), nil
}

// LeaderNode finds the leader and returns a client pinned to it, with the
// same token, HTTP client and retry policy, for calls that should not take
// the forwarding hop. The scheme is that of the node that answered.
func (c *Client) LeaderNode(ctx context.Context) (*Client, *Leader, error) {
	l, err := c.Leader(ctx)
	if err != nil {
		return nil, nil, err
	}
	if l.HTTPAddress == "" {
		return nil, l, fmt.Errorf("leader %s has no HTTP address", l.ID)
	}
	scheme := "http"
	if strings.HasPrefix(l.Address, "https://") {
		scheme = "https"
	}
	n, err := c.Node(scheme + "://" + l.HTTPAddress)
	return n, l, err
}

// TaskManager is one entry of Flink's GET /taskmanagers; a task manager
// is a node.
type TaskManager struct {
	ID                     string `json:"id"`
	Path                   string `json:"path,omitempty"`
	DataPort               int    `json:"dataPort"`
	TimeSinceLastHeartbeat int64  `json:"timeSinceLastHeartbeat"`
	SlotsNumber            int    `json:"slotsNumber"`
	FreeSlots              int    `json:"freeSlots"`
	Blocked                bool   `json:"blocked"`
	AssignedTasks          int    `json:"assignedTasks,omitempty"`
}

// TaskManagers is Flink's TaskManagersInfo.
type TaskManagers struct {
	TaskManagers []TaskManager `json:"taskmanagers"`
	Meta         `json:"-"`
}

// TaskManagers is Flink's GET /taskmanagers.
func (c *Client) TaskManagers(ctx context.Context) (*TaskManagers, error) {
	var out TaskManagers
	return &out, c.get(ctx, "/taskmanagers", nil, &out)
}
