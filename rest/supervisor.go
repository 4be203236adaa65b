package rest

import (
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/dispatcher-dev/dispatcher/fsm"
)

// The Habitat Supervisor gateway's service routes (seed 004): every job
// is a service (see supervisor_model.go), loaded on the nodes that run its
// subtasks. Status codes are Habitat's: 404 with an empty body for a
// service not loaded on this node, 400 with an empty body for a malformed
// name, health 200 OK|WARNING, 503 CRITICAL, 500 UNKNOWN, and 503 while the
// node has not fully started.

// supervisorRoutes are the Habitat Supervisor gateway's service routes.
// The static config and health segments win over {organization}, as in
// Habitat: /services/a/b/config is a config, not organization "config".
func (s *Server) supervisorRoutes() []route {
	return []route{
		{method: "GET", path: "/services", handler: s.getServices},
		{method: "GET", path: "/services/:name/:group", handler: s.getService},
		{method: "GET", path: "/services/:name/:group/config", handler: s.getServiceConfig},
		{method: "GET", path: "/services/:name/:group/health", handler: s.getServiceHealth},
		{method: "GET", path: "/services/:name/:group/:organization", handler: s.getService},
		{method: "GET", path: "/services/:name/:group/:organization/config", handler: s.getServiceConfig},
		{method: "GET", path: "/services/:name/:group/:organization/health", handler: s.getServiceHealth},
	}
}

// serviceSys is Habitat's sys block of a service: the census's plus the
// member id, version and permanence.
type serviceSys struct {
	habitatSys
	MemberID  string `json:"member_id"`
	Version   string `json:"version"`
	Permanent bool   `json:"permanent"`
}

type serviceProcess struct {
	PID          *int   `json:"pid"`
	State        string `json:"state"`
	StateEntered int64  `json:"state_entered"`
}

type specIdent struct {
	Origin  string  `json:"origin"`
	Name    string  `json:"name"`
	Version *string `json:"version"`
	Release *string `json:"release"`
}

type healthInterval struct {
	Secs  int64 `json:"secs"`
	Nanos int64 `json:"nanos"`
}

// habitatService is Habitat's ServiceQueryModel, keys in its (alphabetical) order.
type habitatService struct {
	AllPkgBinds          []any          `json:"all_pkg_binds"`
	BindingMode          string         `json:"binding_mode"`
	Binds                []string       `json:"binds"`
	BldrURL              string         `json:"bldr_url"`
	Cfg                  map[string]any `json:"cfg"`
	Channel              string         `json:"channel"`
	ConfigFrom           *string        `json:"config_from"`
	DesiredState         string         `json:"desired_state"`
	HealthCheck          string         `json:"health_check"`
	HealthCheckInterval  healthInterval `json:"health_check_interval"`
	Hooks                map[string]any `json:"hooks"`
	Initialized          bool           `json:"initialized"`
	LastElectionStatus   string         `json:"last_election_status"`
	LastProcessState     *string        `json:"last_process_state"`
	ManagerFsCfg         map[string]any `json:"manager_fs_cfg"`
	NextRestartAt        *int64         `json:"next_restart_at"`
	Pkg                  habitatPkg     `json:"pkg"`
	Process              serviceProcess `json:"process"`
	RestartConfig        any            `json:"restart_config"`
	RestartCount         int            `json:"restart_count"`
	ServiceGroup         string         `json:"service_group"`
	SpecFile             string         `json:"spec_file"`
	SpecIdent            specIdent      `json:"spec_ident"`
	SvcEncryptedPassword *string        `json:"svc_encrypted_password"`
	Sys                  serviceSys     `json:"sys"`
	Topology             string         `json:"topology"`
	UpdateStrategy       string         `json:"update_strategy"`
	UserConfigUpdated    bool           `json:"user_config_updated"`
}

// serviceConfig is a job's configuration as /config and cfg show it: the
// spec's job-level params and settings, and each vertex's operator,
// parallelism and params.
func serviceConfig(js *jobService) map[string]any {
	g := js.graph
	params := map[string]any{}
	for k, v := range g.Params {
		params[k] = v
	}
	vertices := map[string]any{}
	for _, v := range js.order {
		vp := map[string]any{}
		for k, x := range v.Params {
			vp[k] = x
		}
		inputs := make([]string, 0, len(v.Inputs))
		for _, in := range v.Inputs {
			inputs = append(inputs, in.From)
		}
		vertices[v.ID] = map[string]any{"name": v.Name, "operator": v.Operator, "parallelism": v.Parallelism, "inputs": inputs, "params": vp}
	}
	return map[string]any{
		"job_id":          js.job.ID,
		"name":            g.Name,
		"params":          params,
		"parallelism":     g.Parallelism,
		"maxParallelism":  g.MaxParallelism,
		"restartStrategy": g.RestartStrategy,
		"checkpointing":   g.Checkpointing,
		"vertices":        vertices,
	}
}

func (s *Server) selfSys() serviceSys {
	out := serviceSys{MemberID: s.node.ID(), Version: s.opts.Version}
	for _, m := range s.node.Members() {
		if m.ID == s.node.ID() {
			out.habitatSys = s.sysOf(m)
			return out
		}
	}
	ip, port := splitHostPortInt(s.node.HTTPAddress())
	out.habitatSys = habitatSys{IP: ip, Hostname: s.node.ID(), HTTPGatewayIP: ip, HTTPGatewayPort: port}
	return out
}

// processOf is the "process" of a job on this node: up while one of its
// subtasks here is deploying, initializing or running; state_entered is
// when (unix seconds).
func processOf(js *jobService, node string) (serviceProcess, bool) {
	j := js.job
	subs := js.subtasksOn(node)
	initialized := false
	var upSince, downSince int64
	up := false
	for _, st := range subs {
		if _, ok := st.Timestamps[fsm.TaskRunning]; ok {
			initialized = true
		}
		switch st.State {
		case fsm.TaskDeploying, fsm.TaskInitializing, fsm.TaskRunning:
			up = true
			if t := st.Timestamps[st.State]; upSince == 0 || (t > 0 && t < upSince) {
				upSince = t
			}
		default:
			if t := st.Timestamps[st.State]; t > downSince {
				downSince = t
			}
		}
	}
	if fsm.TerminalJobState(j.State) || j.State == fsm.JobRestarting {
		up = false
		downSince = max(downSince, j.Timestamps[j.State])
	}
	p := serviceProcess{State: "down", StateEntered: downSince / 1000}
	if up {
		p = serviceProcess{State: "up", StateEntered: upSince / 1000}
	}
	if p.StateEntered == 0 {
		p.StateEntered = j.Timestamps[j.State] / 1000
	}
	return p, initialized
}

func (s *Server) serviceModel(js *jobService, health healthResult, sys serviceSys) habitatService {
	j := js.job
	desired := "Up"
	if fsm.TerminalJobState(j.State) || j.State == fsm.JobCancelling {
		desired = "Down"
	}
	proc, initialized := processOf(js, s.node.ID())
	var nextRestart *int64
	if j.State == fsm.JobRestarting && j.RestartAt > 0 {
		t := j.RestartAt / 1000
		nextRestart = &t
	}
	version := s.opts.Version
	dataDir := s.node.Config().DataDir
	return habitatService{
		AllPkgBinds:         []any{},
		BindingMode:         "strict",
		Binds:               []string{},
		BldrURL:             "",
		Cfg:                 serviceConfig(js),
		Channel:             "stable",
		DesiredState:        desired,
		HealthCheck:         habitatHealthName(health.Status),
		HealthCheckInterval: healthInterval{Secs: 30},
		Hooks: map[string]any{"file_updated": nil, "health_check": nil, "init": nil, "post_run": nil, "post_stop": nil,
			"reconfigure": nil, "reload": nil, "run": nil, "suitability": nil},
		Initialized:        initialized,
		LastElectionStatus: "None",
		ManagerFsCfg:       map[string]any{"sup_root": dataDir, "data_path": dataDir, "specs_path": dataDir},
		NextRestartAt:      nextRestart,
		Pkg:                habitatPkg{Origin: "dispatcher", Name: j.Name, Version: version, Release: j.ID},
		Process:            proc,
		RestartConfig:      js.graph.RestartStrategy,
		RestartCount:       j.Restarts,
		ServiceGroup:       js.sg.String(),
		SpecIdent:          specIdent{Origin: "dispatcher", Name: j.Name},
		Sys:                sys,
		Topology:           "standalone",
		UpdateStrategy:     "none",
	}
}

func (s *Server) getServices(c *gin.Context) {
	if !s.gatewayReady(c) {
		return
	}
	sys := s.selfSys()
	out := []habitatService{}
	for _, js := range s.servicesHere() {
		out = append(out, s.serviceModel(js, s.serviceHealth(c.Request.Context(), js), sys))
	}
	c.JSON(http.StatusOK, out)
}

// loadedService resolves the route's service group on this node, answering
// 400 or 404 with an empty body itself.
func (s *Server) loadedService(c *gin.Context) (*jobService, bool) {
	if !s.gatewayReady(c) {
		return nil, false
	}
	sg := serviceGroup{Service: c.Param("name"), Group: c.Param("group"), Org: c.Param("organization")}
	_, hasOrg := c.Params.Get("organization")
	if !validHabitatName(sg.Service) || !validHabitatName(sg.Group) || (hasOrg && !validHabitatName(sg.Org)) {
		c.AbortWithStatus(http.StatusBadRequest)
		return nil, false
	}
	js := s.serviceHere(sg)
	if js == nil {
		c.AbortWithStatus(http.StatusNotFound)
		return nil, false
	}
	return js, true
}

func (s *Server) getService(c *gin.Context) {
	js, ok := s.loadedService(c)
	if !ok {
		return
	}
	c.JSON(http.StatusOK, s.serviceModel(js, s.serviceHealth(c.Request.Context(), js), s.selfSys()))
}

func (s *Server) getServiceConfig(c *gin.Context) {
	js, ok := s.loadedService(c)
	if !ok {
		return
	}
	c.JSON(http.StatusOK, serviceConfig(js))
}

func (s *Server) getServiceHealth(c *gin.Context) {
	js, ok := s.loadedService(c)
	if !ok {
		return
	}
	h := s.serviceHealth(c.Request.Context(), js)
	code := http.StatusOK
	switch h.Status {
	case healthCritical:
		code = http.StatusServiceUnavailable
	case healthUnknown:
		code = http.StatusInternalServerError
	}
	c.JSON(code, h)
}
