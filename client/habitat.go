package client

import (
	"context"
	"encoding/json"
	"net/http"
)

// The Habitat Supervisor gateway's routes. Every node is a member of the
// service group "dispatcher.default", whose leader is the Raft leader.

// Census is Habitat's GET /census.
type Census struct {
	Changed       bool                   `json:"changed"`
	CensusGroups  map[string]CensusGroup `json:"census_groups"`
	LocalMemberID string                 `json:"local_member_id"`
	Meta          `json:"-"`
}

// CensusGroup is one service group of the census.
type CensusGroup struct {
	ServiceGroup         string                  `json:"service_group"`
	ElectionStatus       string                  `json:"election_status"`
	UpdateElectionStatus string                  `json:"update_election_status"`
	LeaderID             *string                 `json:"leader_id"`
	UpdateLeaderID       *string                 `json:"update_leader_id"`
	LocalMemberID        string                  `json:"local_member_id"`
	Population           map[string]CensusMember `json:"population"`
	ServiceConfig        json.RawMessage         `json:"service_config"`
}

// CensusMember is one member of a census group.
type CensusMember struct {
	MemberID           string         `json:"member_id"`
	Pkg                HabitatPkg     `json:"pkg"`
	Package            string         `json:"package"`
	Service            string         `json:"service"`
	Group              string         `json:"group"`
	Persistent         bool           `json:"persistent"`
	Leader             bool           `json:"leader"`
	Follower           bool           `json:"follower"`
	ElectionIsRunning  bool           `json:"election_is_running"`
	ElectionIsFinished bool           `json:"election_is_finished"`
	Sys                HabitatSys     `json:"sys"`
	Alive              bool           `json:"alive"`
	Suspect            bool           `json:"suspect"`
	Confirmed          bool           `json:"confirmed"`
	Departed           bool           `json:"departed"`
	Cfg                map[string]any `json:"cfg"`
}

// Health is the member's state in Habitat's words: Alive, Suspect,
// Confirmed (dead) or Departed.
func (m CensusMember) Health() string {
	switch {
	case m.Alive:
		return "Alive"
	case m.Suspect:
		return "Suspect"
	case m.Confirmed:
		return "Confirmed"
	default:
		return "Departed"
	}
}

// HabitatPkg is a package identifier.
type HabitatPkg struct {
	Origin  string `json:"origin"`
	Name    string `json:"name"`
	Version string `json:"version"`
	Release string `json:"release"`
}

// HabitatSys is a member's addresses.
type HabitatSys struct {
	IP              string `json:"ip"`
	Hostname        string `json:"hostname"`
	GossipIP        string `json:"gossip_ip"`
	GossipPort      int    `json:"gossip_port"`
	HTTPGatewayIP   string `json:"http_gateway_ip"`
	HTTPGatewayPort int    `json:"http_gateway_port"`
	CtlGatewayIP    string `json:"ctl_gateway_ip,omitempty"`
	CtlGatewayPort  int    `json:"ctl_gateway_port,omitempty"`
	Version         string `json:"version,omitempty"`
	MemberID        string `json:"member_id,omitempty"`
	Permanent       bool   `json:"permanent,omitempty"`
}

// Butterfly is Habitat's GET /butterfly debug view (the fields this
// dispatcher fills; the whole body is in Raw).
type Butterfly struct {
	Membership      map[string]ButterflyMember   `json:"membership"`
	LatestElection  map[string]ButterflyElection `json:"latest_election"`
	DepartedMembers []string                     `json:"departed_members"`
	RecentRumors    []ButterflyRumor             `json:"recent_rumors"`
	Meta            `json:"-"`
}

// ButterflyMember is one member of the gossip ring.
type ButterflyMember struct {
	Address     string `json:"address"`
	GossipPort  int    `json:"gossip_port"`
	SwimPort    int    `json:"swim_port"`
	Incarnation uint64 `json:"incarnation"`
	Persistent  bool   `json:"persistent"`
	Health      string `json:"health"`
}

// ButterflyElection is the latest election of a service group.
type ButterflyElection struct {
	MemberID     string   `json:"member_id"`
	ServiceGroup string   `json:"service_group"`
	Term         uint64   `json:"term"`
	Suitability  uint64   `json:"suitability"`
	Status       string   `json:"status"`
	Votes        []string `json:"votes"`
}

// ButterflyRumor is a recent membership change or leader election.
type ButterflyRumor struct {
	Type     string `json:"type"` // membership, election
	Kind     string `json:"kind"`
	MemberID string `json:"member_id"`
	Health   string `json:"health,omitempty"`
	Term     uint64 `json:"term,omitempty"`
	At       int64  `json:"at"` // unix ms
}

// Service is one entry of Habitat's GET /services (ServiceQueryModel);
// fields this client does not model are in Raw.
type Service struct {
	ServiceGroup  string          `json:"service_group"`
	Pkg           HabitatPkg      `json:"pkg"`
	SpecIdent     json.RawMessage `json:"spec_ident,omitempty"`
	DesiredState  string          `json:"desired_state"`
	HealthCheck   string          `json:"health_check"` // Ok, Warning, Critical, Unknown
	Topology      string          `json:"topology"`     // standalone, leader
	UpdateStrat   string          `json:"update_strategy"`
	Initialized   bool            `json:"initialized"`
	RestartCount  int             `json:"restart_count"`
	NextRestartAt json.RawMessage `json:"next_restart_at,omitempty"`
	Process       struct {
		PID          *int   `json:"pid"`
		State        string `json:"state"` // up, down
		StateEntered int64  `json:"state_entered"`
	} `json:"process"`
	Sys HabitatSys      `json:"sys"`
	Cfg json.RawMessage `json:"cfg,omitempty"`
	// Raw is this entry as the server sent it.
	Raw json.RawMessage `json:"-"`
}

// ServiceHealth is Habitat's GET /services/{svc}/{group}/health.
type ServiceHealth struct {
	Status string `json:"status"` // OK, WARNING, CRITICAL, UNKNOWN
	Stdout string `json:"stdout"`
	Stderr string `json:"stderr"`
	Meta   `json:"-"`
}

// Census returns Habitat's census of the cluster.
func (c *Client) Census(ctx context.Context) (*Census, error) {
	var out Census
	return &out, c.call(ctx, &request{method: http.MethodGet, path: "/census", idempotent: true, noVersion: true}, &out)
}

// Butterfly returns Habitat's gossip debug view.
func (c *Client) Butterfly(ctx context.Context) (*Butterfly, error) {
	var out Butterfly
	return &out, c.call(ctx, &request{method: http.MethodGet, path: "/butterfly", idempotent: true, noVersion: true}, &out)
}

// Services is Habitat's GET /services: the services (jobs) loaded on the
// answering node, that is those with subtasks there. Use it on a client
// from Node for a given node's view.
func (c *Client) Services(ctx context.Context) ([]Service, error) {
	resp, err := c.do(ctx, &request{method: http.MethodGet, path: "/services", idempotent: true, noVersion: true})
	if err != nil {
		return nil, err
	}
	var raws []json.RawMessage
	if err := decode(resp, &raws); err != nil {
		return nil, err
	}
	out := make([]Service, 0, len(raws))
	for _, r := range raws {
		var s Service
		if err := json.Unmarshal(r, &s); err != nil {
			return nil, err
		}
		s.Raw = r
		out = append(out, s)
	}
	return out, nil
}

// Service is Habitat's GET /services/{svc}/{group}; a 404 *APIError when
// the service is not loaded on the answering node.
func (c *Client) Service(ctx context.Context, svc, group string) (*Service, error) {
	resp, err := c.do(ctx, &request{method: http.MethodGet, path: "/services/" + pathEscape(svc) + "/" + pathEscape(group), idempotent: true, noVersion: true})
	if err != nil {
		return nil, err
	}
	var s Service
	if err := decode(resp, &s); err != nil {
		return nil, err
	}
	s.Raw = resp.body
	return &s, nil
}

// ServiceConfig is Habitat's GET /services/{svc}/{group}/config: the
// service's configuration as JSON.
func (c *Client) ServiceConfig(ctx context.Context, svc, group string) (json.RawMessage, error) {
	resp, err := c.do(ctx, &request{method: http.MethodGet, path: "/services/" + pathEscape(svc) + "/" + pathEscape(group) + "/config", idempotent: true, noVersion: true})
	if err != nil {
		return nil, err
	}
	return json.RawMessage(resp.body), nil
}

// ServiceHealth is Habitat's GET /services/{svc}/{group}/health. Habitat
// answers CRITICAL with 503 and UNKNOWN with 500; both come back here as a
// result, not an error.
func (c *Client) ServiceHealth(ctx context.Context, svc, group string) (*ServiceHealth, error) {
	resp, err := c.do(ctx, &request{
		method: http.MethodGet, path: "/services/" + pathEscape(svc) + "/" + pathEscape(group) + "/health",
		noVersion: true, accept: []int{http.StatusServiceUnavailable, http.StatusInternalServerError},
	})
	if err != nil {
		return nil, err
	}
	var out ServiceHealth
	if err := json.Unmarshal(resp.body, &out); (err != nil || out.Status == "") && resp.status >= 400 {
		return nil, apiError(resp)
	}
	if err := decode(resp, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
