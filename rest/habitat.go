package rest

import (
	"net/http"
	"sort"
	"strconv"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/dispatcher-dev/dispatcher/cluster"
	"github.com/dispatcher-dev/dispatcher/fsm"
	"github.com/dispatcher-dev/dispatcher/gossip"
)

// The Habitat Supervisor gateway's views of the ring. Every node is a
// member of the "dispatcher.default" service group, whose leader is the
// Raft leader. Every loaded job adds its own service group (see
// supervisor_model.go), whose members are the nodes running its subtasks.

const dispatcherGroup = "dispatcher.default"

type habitatPkg struct {
	Origin  string `json:"origin"`
	Name    string `json:"name"`
	Version string `json:"version"`
	Release string `json:"release"`
}

type habitatSys struct {
	IP              string `json:"ip"`
	Hostname        string `json:"hostname"`
	GossipIP        string `json:"gossip_ip"`
	GossipPort      int    `json:"gossip_port"`
	HTTPGatewayIP   string `json:"http_gateway_ip"`
	HTTPGatewayPort int    `json:"http_gateway_port"`
	CtlGatewayIP    string `json:"ctl_gateway_ip"`
	CtlGatewayPort  int    `json:"ctl_gateway_port"`
}

type censusMember struct {
	MemberID                 string         `json:"member_id"`
	Pkg                      habitatPkg     `json:"pkg"`
	PkgIncarnation           uint64         `json:"pkg_incarnation"`
	Package                  string         `json:"package"`
	Service                  string         `json:"service"`
	Group                    string         `json:"group"`
	Org                      *string        `json:"org"`
	Persistent               bool           `json:"persistent"`
	Leader                   bool           `json:"leader"`
	Follower                 bool           `json:"follower"`
	UpdateLeader             bool           `json:"update_leader"`
	UpdateFollower           bool           `json:"update_follower"`
	ElectionIsRunning        bool           `json:"election_is_running"`
	ElectionIsNoQuorum       bool           `json:"election_is_no_quorum"`
	ElectionIsFinished       bool           `json:"election_is_finished"`
	UpdateElectionIsRunning  bool           `json:"update_election_is_running"`
	UpdateElectionIsNoQuorum bool           `json:"update_election_is_no_quorum"`
	UpdateElectionIsFinished bool           `json:"update_election_is_finished"`
	Sys                      habitatSys     `json:"sys"`
	Alive                    bool           `json:"alive"`
	Suspect                  bool           `json:"suspect"`
	Confirmed                bool           `json:"confirmed"`
	Departed                 bool           `json:"departed"`
	Cfg                      map[string]any `json:"cfg"`
}

type censusGroup struct {
	ServiceGroup         string                  `json:"service_group"`
	ElectionStatus       string                  `json:"election_status"`
	UpdateElectionStatus string                  `json:"update_election_status"`
	PkgIncarnation       uint64                  `json:"pkg_incarnation"`
	LeaderID             *string                 `json:"leader_id"`
	ServiceConfig        any                     `json:"service_config"`
	LocalMemberID        string                  `json:"local_member_id"`
	Population           map[string]censusMember `json:"population"`
	UpdateLeaderID       *string                 `json:"update_leader_id"`
	ChangedServiceFiles  []string                `json:"changed_service_files"`
	ServiceFiles         map[string]any          `json:"service_files"`
}

type census struct {
	Changed       bool                   `json:"changed"`
	CensusGroups  map[string]censusGroup `json:"census_groups"`
	LocalMemberID string                 `json:"local_member_id"`
}

// habitatHealth maps gossip states onto Habitat's words.
func habitatHealth(st string) string {
	switch st {
	case string(gossip.StateAlive):
		return "Alive"
	case string(gossip.StateSuspect):
		return "Suspect"
	case string(gossip.StateDead):
		return "Confirmed"
	default:
		return "Departed"
	}
}

func splitHostPortInt(addr string) (string, int) {
	i := strings.LastIndex(addr, ":")
	if i < 0 {
		return addr, 0
	}
	p, _ := strconv.Atoi(addr[i+1:])
	return addr[:i], p
}

func (s *Server) sysOf(m cluster.MemberInfo) habitatSys {
	gIP, gPort := splitHostPortInt(m.GossipAddress)
	hIP, hPort := splitHostPortInt(m.HTTPAddress)
	return habitatSys{IP: gIP, Hostname: m.ID, GossipIP: gIP, GossipPort: gPort, HTTPGatewayIP: hIP, HTTPGatewayPort: hPort}
}

func (s *Server) dispatcherCensusGroup(members []cluster.MemberInfo) censusGroup {
	leader, hasLeader := s.node.Leader()
	g := censusGroup{
		ServiceGroup:         dispatcherGroup,
		ElectionStatus:       "ElectionInProgress",
		UpdateElectionStatus: "None",
		LocalMemberID:        s.node.ID(),
		Population:           map[string]censusMember{},
		ChangedServiceFiles:  []string{},
		ServiceFiles:         map[string]any{},
	}
	if hasLeader {
		g.ElectionStatus = "ElectionFinished"
		id := leader.ID
		g.LeaderID = &id
	}
	for _, m := range members {
		health := habitatHealth(m.Status)
		version := m.Version
		g.Population[m.ID] = censusMember{
			MemberID: m.ID,
			Pkg:      habitatPkg{Origin: "dispatcher", Name: "dispatcher", Version: version, Release: "0"},
			Package:  "dispatcher/dispatcher/" + version + "/0",
			Service:  "dispatcher", Group: "default",
			Persistent:         true,
			Leader:             hasLeader && m.ID == leader.ID,
			Follower:           hasLeader && m.ID != leader.ID,
			ElectionIsRunning:  !hasLeader,
			ElectionIsFinished: hasLeader,
			Sys:                s.sysOf(m),
			Alive:              health == "Alive",
			Suspect:            health == "Suspect",
			Confirmed:          health == "Confirmed",
			Departed:           health == "Departed",
			Cfg:                map[string]any{"raft_address": m.RaftAddress, "suffrage": m.Suffrage, "slots": m.Slots},
		}
	}
	return g
}

// jobCensusGroup is the census group of a job's service group: its
// population is the nodes of the job's current placement, with their gossip
// health (a node gossip no longer knows is departed); its leader is the node
// hosting subtask 0 of the first vertex in topological order.
func (s *Server) jobCensusGroup(js *jobService, byID map[string]cluster.MemberInfo) censusGroup {
	g := censusGroup{
		ServiceGroup:         js.sg.String(),
		ElectionStatus:       "None",
		UpdateElectionStatus: "None",
		PkgIncarnation:       uint64(js.job.Attempt),
		LocalMemberID:        s.node.ID(),
		Population:           map[string]censusMember{},
		ChangedServiceFiles:  []string{},
		ServiceFiles:         map[string]any{},
	}
	leader := js.leaderNode()
	if leader != "" {
		g.ElectionStatus = "ElectionFinished"
		g.LeaderID = &leader
	}
	for _, node := range js.nodes() {
		m, known := byID[node]
		health := "Departed"
		sys := habitatSys{Hostname: node}
		version := ""
		if known {
			health = habitatHealth(m.Status)
			sys = s.sysOf(m)
			version = m.Version
		}
		subtasks := []string{}
		for _, st := range js.subtasksOn(node) {
			subtasks = append(subtasks, fsm.SubtaskKey(st.VertexID, st.Index))
		}
		g.Population[node] = censusMember{
			MemberID:           node,
			Pkg:                habitatPkg{Origin: "dispatcher", Name: js.job.Name, Version: version, Release: js.job.ID},
			PkgIncarnation:     uint64(js.job.Attempt),
			Package:            "dispatcher/" + js.job.Name + "/" + version + "/" + js.job.ID,
			Service:            js.sg.Service,
			Group:              js.sg.Group,
			Org:                js.sg.orgPtr(),
			Persistent:         true,
			Leader:             node == leader,
			Follower:           leader != "" && node != leader,
			ElectionIsFinished: leader != "",
			Sys:                sys,
			Alive:              health == "Alive",
			Suspect:            health == "Suspect",
			Confirmed:          health == "Confirmed",
			Departed:           health == "Departed",
			Cfg:                map[string]any{"job_id": js.job.ID, "job_state": js.job.State, "attempt": js.job.Attempt, "subtasks": subtasks},
		}
	}
	return g
}

func (s *Server) getCensus(c *gin.Context) {
	if !s.gatewayReady(c) {
		return
	}
	members := s.node.Members()
	groups := map[string]censusGroup{dispatcherGroup: s.dispatcherCensusGroup(members)}
	byID := membersByID(members)
	for _, js := range s.jobServices() {
		groups[js.sg.String()] = s.jobCensusGroup(js, byID)
	}
	c.JSON(http.StatusOK, census{
		Changed:       false,
		CensusGroups:  groups,
		LocalMemberID: s.node.ID(),
	})
}

// butterflyService is a service rumor: one member of a service group.
type butterflyService struct {
	MemberID           string         `json:"member_id"`
	ServiceGroup       string         `json:"service_group"`
	Package            string         `json:"package"`
	PackageIncarnation uint64         `json:"package_incarnation"`
	Incarnation        uint64         `json:"incarnation"`
	Cfg                map[string]any `json:"cfg"`
	Sys                habitatSys     `json:"sys"`
	Initialized        bool           `json:"initialized"`
}

// jobRumors are the job service groups as Butterfly would carry them: a
// service rumor per member and the group's election.
func (s *Server) jobRumors(members []cluster.MemberInfo) (map[string]map[string]butterflyService, map[string]butterflyElection) {
	services := map[string]map[string]butterflyService{}
	elections := map[string]butterflyElection{}
	byID := membersByID(members)
	for _, js := range s.jobServices() {
		g := s.jobCensusGroup(js, byID)
		list := map[string]butterflyService{}
		votes := []string{}
		for id, m := range g.Population {
			_, initialized := processOf(js, id)
			list[id] = butterflyService{MemberID: id, ServiceGroup: g.ServiceGroup, Package: m.Package, PackageIncarnation: m.PkgIncarnation,
				Incarnation: uint64(js.job.Attempt), Cfg: m.Cfg, Sys: m.Sys, Initialized: initialized}
			votes = append(votes, id)
		}
		sort.Strings(votes)
		services[g.ServiceGroup] = list
		if g.LeaderID != nil {
			elections[g.ServiceGroup] = butterflyElection{MemberID: *g.LeaderID, ServiceGroup: g.ServiceGroup, Term: uint64(js.job.Attempt), Status: "Finished", Votes: votes}
		}
	}
	return services, elections
}

type butterflyMember struct {
	Address     string `json:"address"`
	GossipPort  int    `json:"gossip_port"`
	Incarnation uint64 `json:"incarnation"`
	Persistent  bool   `json:"persistent"`
	SwimPort    int    `json:"swim_port"`
	Health      string `json:"health"`
}

type butterflyElection struct {
	MemberID     string   `json:"member_id"`
	ServiceGroup string   `json:"service_group"`
	Term         uint64   `json:"term"`
	Suitability  uint64   `json:"suitability"`
	Status       string   `json:"status"`
	Votes        []string `json:"votes"`
}

type butterflyRumor struct {
	Type     string `json:"type"`
	Kind     string `json:"kind"`
	MemberID string `json:"member_id"`
	Health   string `json:"health,omitempty"`
	Term     uint64 `json:"term,omitempty"`
	At       int64  `json:"at"`
}

func (s *Server) getButterfly(c *gin.Context) {
	if !s.gatewayReady(c) {
		return
	}
	members := s.node.Members()
	membership := map[string]butterflyMember{}
	health := map[string]string{}
	oldMembers := map[string]any{}
	departed := []string{}
	voters := []string{}
	for _, m := range members {
		ip, port := splitHostPortInt(m.GossipAddress)
		h := habitatHealth(m.Status)
		membership[m.ID] = butterflyMember{Address: ip, GossipPort: port, SwimPort: port, Incarnation: m.Incarnation, Persistent: true, Health: h}
		health[m.ID] = h
		oldMembers[m.ID] = gin.H{"id": m.ID, "incarnation": m.Incarnation, "address": ip, "swim_port": port, "gossip_port": port, "persistent": true, "departed": h == "Departed"}
		if h == "Departed" {
			departed = append(departed, m.ID)
		}
		if m.Suffrage == "voter" {
			voters = append(voters, m.ID)
		}
	}
	services, elections := s.jobRumors(members)
	if leader, ok := s.node.Leader(); ok {
		elections[dispatcherGroup] = butterflyElection{MemberID: leader.ID, ServiceGroup: dispatcherGroup, Term: leader.Term, Status: "Finished", Votes: voters}
	}
	var rumors []butterflyRumor
	for _, r := range s.node.Gossip().Rumors() {
		rumors = append(rumors, butterflyRumor{Type: "membership", Kind: r.Kind, MemberID: r.MemberID, Health: habitatHealth(r.Health), At: r.At.UnixMilli()})
	}
	for _, e := range s.node.Elections() {
		rumors = append(rumors, butterflyRumor{Type: "election", Kind: "leader", MemberID: e.LeaderID, Term: e.Term, At: e.At.UnixMilli()})
	}
	if rumors == nil {
		rumors = []butterflyRumor{}
	}
	c.JSON(http.StatusOK, gin.H{
		"member":                 gin.H{"members": oldMembers, "health": health, "update_counter": len(rumors)},
		"membership":             membership,
		"service":                gin.H{"list": services, "update_counter": len(services)},
		"services":               services,
		"service_config":         gin.H{"list": gin.H{}, "update_counter": 0},
		"latest_service_config":  gin.H{},
		"service_file":           gin.H{"list": gin.H{}, "update_counter": 0},
		"service_files":          gin.H{},
		"election":               gin.H{"list": elections, "update_counter": len(s.node.Elections())},
		"latest_election":        elections,
		"election_update":        gin.H{"list": gin.H{}, "update_counter": 0},
		"latest_election_update": gin.H{},
		"departure":              gin.H{"list": gin.H{"departure": departed}, "update_counter": len(departed)},
		"departed_members":       departed,
		"recent_rumors":          rumors,
	})
}
