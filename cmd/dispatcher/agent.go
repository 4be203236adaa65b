package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/dispatcher-dev/dispatcher/agent"
	"github.com/dispatcher-dev/dispatcher/config"
)

func newAgentCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run one node of the cluster",
		Long: `Run one dispatcher node. Every flag can also come from the environment as
DISPATCHER_<FLAG_NAME> (for example DISPATCHER_BOOTSTRAP_EXPECT=3). The API token
comes from DISPATCHER_AUTH_TOKEN (or HAB_SUP_GATEWAY_AUTH_TOKEN), the gossip
encryption key (base64, 16/24/32 bytes) from DISPATCHER_GOSSIP_KEY.`,
		Args: noArgs,
	}
	flags := config.BindFlags(cmd.Flags())
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg, err := flags.Load(os.Getenv)
		if err != nil {
			return err
		}
		return runAgent(cfg)
	}
	return cmd
}

func newLogger(level string) *slog.Logger {
	var l slog.Level
	switch strings.ToLower(level) {
	case "debug":
		l = slog.LevelDebug
	case "warn":
		l = slog.LevelWarn
	case "error":
		l = slog.LevelError
	default:
		l = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
}

func runAgent(cfg config.Config) error {
	log := newLogger(cfg.LogLevel)
	a, err := agent.New(cfg, agent.Options{Logger: log, Version: version, Revision: revision})
	if err != nil {
		return err
	}
	if err := a.Start(); err != nil {
		return err
	}
	log.Info("dispatcher node started", "node", cfg.NodeID, "http", a.HTTPAddr(), "raft", a.Node.RaftAddress(), "version", version)
	if cfg.Dev {
		go announceDev(a, cfg)
	}

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	select {
	case sig := <-sigs:
		log.Info("leaving the cluster", "signal", sig.String())
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		go func() {
			// A second signal means: stop now.
			<-sigs
			log.Warn("second signal: stopping without a graceful leave")
			os.Exit(1)
		}()
		if err := a.Leave(ctx); err != nil {
			log.Warn("leave finished with errors", "err", err)
		}
		log.Info("left the cluster")
		return nil
	case err := <-a.Served():
		a.Shutdown()
		return fmt.Errorf("http server stopped: %w", err)
	}
}

// announceDev prints where the dev node's API is once it leads.
func announceDev(a *agent.Agent, cfg config.Config) {
	for i := 0; i < 200; i++ {
		if ok, _ := a.Node.Ready(); ok {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	fmt.Printf(`
dispatcher dev node %q is ready
  API:       %s/v1/overview
  cluster:   %s/v1/cluster/members
  dashboard: %s/
  data dir:  %s
Press Ctrl-C to stop.
`, cfg.NodeID, a.URL(), a.URL(), a.URL(), cfg.DataDir)
}
