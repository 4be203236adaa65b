// Package agent wires one dispatcher node together: the cluster node, its
// HTTP API and (as they land) the job runtime. The binary and the
// in-process test clusters build nodes the same way, through here.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/dispatcher-dev/dispatcher/checkpoint"
	"github.com/dispatcher-dev/dispatcher/cluster"
	"github.com/dispatcher-dev/dispatcher/config"
	"github.com/dispatcher-dev/dispatcher/coordinator"
	"github.com/dispatcher-dev/dispatcher/gossip"
	"github.com/dispatcher-dev/dispatcher/rest"
	"github.com/dispatcher-dev/dispatcher/runtime"
	"github.com/dispatcher-dev/dispatcher/scheduler"
	"github.com/dispatcher-dev/dispatcher/taskmanager"
)

// Options are what a node needs beyond its user configuration.
type Options struct {
	Logger   *slog.Logger
	Version  string
	Revision string
	// FastGossip selects memberlist's local-network timings (tests).
	FastGossip bool
	// ReconcileInterval overrides the leader's membership reconcile period.
	ReconcileInterval time.Duration
}

// Agent is one running node.
type Agent struct {
	cfg      config.Config
	log      *slog.Logger
	Node     *cluster.Node
	API      *rest.Server
	Exec     *runtime.Executor
	tasks    *taskmanager.TaskManager
	stop     context.CancelFunc
	ctx      context.Context
	listener net.Listener
	served   chan error
}

// New opens the node's stores and binds its ports.
func New(cfg config.Config, opts Options) (*Agent, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	log := opts.Logger.With("node", cfg.NodeID)
	for _, dir := range []string{cfg.DataDir, cfg.OutputDir, cfg.InputDir, cfg.CheckpointDir, cfg.SavepointDir} {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, fmt.Errorf("create %s: %w", dir, err)
		}
	}
	node, err := cluster.New(cfg, cluster.Options{Logger: log, Version: opts.Version, FastGossip: opts.FastGossip, ReconcileInterval: opts.ReconcileInterval})
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		node.Shutdown()
		return nil, fmt.Errorf("http listener on %s: %w", cfg.HTTPAddr, err)
	}
	node.SetHTTPAddress(ln.Addr().String())
	a := &Agent{cfg: cfg, log: log, Node: node, listener: ln, served: make(chan error, 1)}
	a.ctx, a.stop = context.WithCancel(context.Background())
	a.tasks = taskmanager.New(taskmanager.Config{NodeID: cfg.NodeID, State: node.FSM, APIURL: a.URL(), Token: cfg.AuthToken, OutputDir: cfg.OutputDir, Logger: log.With("component", "taskmanager")})
	roots := map[string]string{"checkpoints": cfg.CheckpointDir, "savepoints": cfg.SavepointDir}
	for i, dir := range cfg.SavepointAllow {
		roots[fmt.Sprintf("savepoints-%d", i+1)] = dir
	}
	storage := checkpoint.NewRoots(roots)
	exec, err := runtime.New(runtime.Config{
		NodeID:    cfg.NodeID,
		InputDir:  cfg.InputDir,
		OutputDir: cfg.OutputDir,
		AllowExec: cfg.AllowExec,
		ExecPaths: cfg.ExecPaths,
		Logger:    log.With("component", "runtime"),
		Dial:      node.DialData,
		Reporter:  a.tasks,
		Storage:   storage,
	})
	if err != nil {
		ln.Close()
		node.Shutdown()
		return nil, err
	}
	a.Exec = exec
	node.SetDataHandler(exec.HandleConn)
	sched := scheduler.New(node.FSM, schedulerView{node}, scheduler.Config{Logger: log.With("component", "scheduler")})
	node.OnLeadership(sched.Run)
	a.API, err = rest.New(node, rest.Options{Logger: log.With("component", "http"), Version: opts.Version, Revision: opts.Revision, Runtime: exec, Storage: storage})
	if err != nil {
		exec.Close()
		ln.Close()
		node.Shutdown()
		return nil, err
	}
	co := coordinator.New(node.FSM, coordinatorView{node, a.API}, coordinator.Config{Storage: storage, Logger: log.With("component", "coordinator")})
	a.API.SetCoordinator(co)
	node.OnLeadership(co.Run)
	return a, nil
}

// Start serves the API and starts the cluster node.
func (a *Agent) Start() error {
	go func() { a.served <- a.API.Serve(a.listener) }()
	if err := a.Node.Start(); err != nil {
		a.API.Shutdown(context.Background())
		return err
	}
	go a.tasks.Run(a.ctx, a.Exec)
	return nil
}

// coordinatorView lets the coordinator commit through Raft and reach other
// nodes' executors through their APIs.
type coordinatorView struct {
	*cluster.Node
	api *rest.Server
}

func (v coordinatorView) Alive(nodeID string) bool {
	if v.Unreachable()[nodeID] {
		return false
	}
	for _, m := range v.Members() {
		if m.ID == nodeID {
			return m.Status == string(gossip.StateAlive)
		}
	}
	return false
}

func (v coordinatorView) TriggerOn(ctx context.Context, nodeID, jobID string, attempt int, cp runtime.Checkpoint) error {
	return v.api.TriggerOn(ctx, nodeID, jobID, attempt, cp)
}

// schedulerView shows the scheduler the nodes that can take tasks.
type schedulerView struct{ *cluster.Node }

func (v schedulerView) AliveNodes() []scheduler.NodeSlots {
	var out []scheduler.NodeSlots
	// A node Raft cannot reach is treated as lost at once: gossip takes
	// seconds to agree, and every attempt placed on it meanwhile is wasted.
	unreachable := v.Unreachable()
	for _, m := range v.Members() {
		if unreachable[m.ID] {
			continue
		}
		if (m.Status == string(gossip.StateAlive) || m.Status == string(gossip.StateSuspect)) && m.Slots > 0 {
			out = append(out, scheduler.NodeSlots{ID: m.ID, Slots: m.Slots})
		}
	}
	return out
}

// HTTPAddr is the bound API address (host:port).
func (a *Agent) HTTPAddr() string { return a.listener.Addr().String() }

// URL is the API's base URL.
func (a *Agent) URL() string {
	host, port, _ := net.SplitHostPort(a.HTTPAddr())
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port)
}

// Served reports the API server's exit.
func (a *Agent) Served() <-chan error { return a.served }

// Leave departs gracefully: leadership transfer, gossip leave, removal from
// Raft, then the API stops after the requests in flight.
func (a *Agent) Leave(ctx context.Context) error {
	a.stop()
	a.Exec.Close()
	err := a.Node.Leave(ctx)
	shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if herr := a.API.Shutdown(shutCtx); herr != nil && !errors.Is(herr, context.DeadlineExceeded) {
		err = errors.Join(err, herr)
	}
	return err
}

// Shutdown stops at once, as a crash would (tests use it as a kill).
func (a *Agent) Shutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	a.stop()
	a.listener.Close()
	a.API.Shutdown(ctx)
	a.Exec.Close()
	a.Node.Shutdown()
}
