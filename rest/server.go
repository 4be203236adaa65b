// Package rest is the HTTP API every node serves: Flink's monitoring and
// management routes, the Habitat Supervisor gateway, the cluster endpoints
// and Prometheus metrics. Handlers stay thin over cluster and fsm.
package rest

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/dispatcher-dev/dispatcher/bundle"
	"github.com/dispatcher-dev/dispatcher/checkpoint"
	"github.com/dispatcher-dev/dispatcher/cluster"
)

func init() { gin.SetMode(gin.ReleaseMode) }

// Options configure the API server.
type Options struct {
	Logger  *slog.Logger
	Version string
	// Revision is the build's commit, for /config.
	Revision string
	// Runtime is the node's task executor, for live subtask metrics.
	Runtime Runtime
	// Coordinator receives checkpoint acks on the leader.
	Coordinator Coordinator
	// Storage maps checkpoint and savepoint directories.
	Storage *checkpoint.Roots
}

// Server is one node's API.
type Server struct {
	node        *cluster.Node
	log         *slog.Logger
	opts        Options
	router      *gin.Engine
	metrics     *metrics
	token       string
	maxBody     int64
	leaderWait  time.Duration
	peerClient  *http.Client
	httpServer  *http.Server
	runtime     Runtime
	subtasks    *subtaskFetcher
	bundles     *bundle.Store
	coordinator Coordinator
	storage     *checkpoint.Roots
}

// New builds the router. Every route is registered under /v1 and bare.
func New(node *cluster.Node, opts Options) (*Server, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	cfg := node.Config()
	s := &Server{
		node:       node,
		log:        opts.Logger,
		opts:       opts,
		token:      cfg.AuthToken,
		maxBody:    cfg.MaxBodyBytes,
		leaderWait: cfg.LeaderWait,
		runtime:    opts.Runtime,
		storage:    opts.Storage,
		metrics:    newMetrics(node),
		peerClient: &http.Client{Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     30 * time.Second,
		}},
	}
	s.subtasks = &subtaskFetcher{s: s, ttl: time.Second, cache: map[string]fetched{}}
	store, err := bundle.NewStore(filepath.Join(cfg.DataDir, "bundles"))
	if err != nil {
		return nil, err
	}
	s.bundles = store
	r := gin.New()
	r.HandleMethodNotAllowed = true
	r.RemoveExtraSlash = true
	r.Use(s.recovery(), s.observe(), s.authenticate(), s.servedBy(), s.limitBody())
	r.NoRoute(s.noRoute)
	r.NoMethod(func(c *gin.Context) {
		fail(c, http.StatusMethodNotAllowed, "Method "+c.Request.Method+" is not allowed on "+c.Request.URL.Path+".")
	})
	s.router = r
	s.routes()
	s.httpServer = &http.Server{
		Handler:           r,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    1 << 20,
	}
	return s, nil
}

// route is one registered endpoint.
type route struct {
	method, path string
	write        bool
	handler      gin.HandlerFunc
}

func (s *Server) routes() {
	// One group per resource, each in its own file.
	groups := [][]route{
		s.clusterRoutes(),
		s.jobRoutes(),
		s.internalRoutes(),
		s.flinkRoutes(),
		s.jarRoutes(),
		s.checkpointRoutes(),
		s.backPressureRoutes(),
		s.supervisorRoutes(),
	}
	for _, g := range groups {
		for _, rt := range g {
			s.register(rt)
		}
	}
	s.registerDashboard()
}

func (s *Server) clusterRoutes() []route {
	return []route{
		{method: "GET", path: "/cluster/leader", handler: s.getLeader},
		{method: "GET", path: "/cluster/members", handler: s.getMembers},
		{method: "GET", path: "/status/leader", handler: s.getStatusLeader},
		{method: "GET", path: "/status/peers", handler: s.getStatusPeers},
		{method: "GET", path: "/health/live", handler: s.getLive},
		{method: "GET", path: "/health/ready", handler: s.getReady},
		{method: "GET", path: "/health/leader", handler: s.getHealthLeader},
		{method: "GET", path: "/metrics", handler: s.getMetrics},
		{method: "GET", path: "/census", handler: s.getCensus},
		{method: "GET", path: "/butterfly", handler: s.getButterfly},
		{method: "GET", path: "/config", handler: s.getDashboardConfig},
		{method: "GET", path: "/overview", handler: s.getOverview},
	}
}

func (s *Server) register(rt route) {
	handlers := []gin.HandlerFunc{}
	if rt.write {
		handlers = append(handlers, s.leaderOnly())
	} else {
		handlers = append(handlers, s.consistentReads())
	}
	handlers = append(handlers, rt.handler)
	s.router.Handle(rt.method, rt.path, handlers...)
	s.router.Handle(rt.method, "/v1"+rt.path, handlers...)
}

var versionPrefix = regexp.MustCompile(`^/v[0-9]+/`)

func (s *Server) noRoute(c *gin.Context) {
	p := c.Request.URL.Path
	if versionPrefix.MatchString(p) && !regexp.MustCompile(`^/v1/`).MatchString(p) {
		fail(c, http.StatusNotFound, "Unsupported REST API version in "+p+": this server speaks v1.")
		return
	}
	fail(c, http.StatusNotFound, "Not found: "+p)
}

// SetCoordinator wires the leader's checkpoint coordinator, which is built
// after the API (it triggers checkpoints through it).
func (s *Server) SetCoordinator(c Coordinator) { s.coordinator = c }

// Handler is the router, for tests and embedding.
func (s *Server) Handler() http.Handler { return s.router }

// Routes lists every registered method and path (tests walk it so that no
// route can escape the auth check).
func (s *Server) Routes() gin.RoutesInfo { return s.router.Routes() }

// Serve answers on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	err := s.httpServer.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting requests and waits for those in flight.
func (s *Server) Shutdown(ctx context.Context) error {
	return s.httpServer.Shutdown(ctx)
}

func (s *Server) getMetrics(c *gin.Context) {
	promhttp.HandlerFor(s.metrics.registry, promhttp.HandlerOpts{}).ServeHTTP(c.Writer, c.Request)
}
