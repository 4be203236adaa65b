// Command dispatcher-bench measures the cluster core (issue 2) on real
// dispatcher processes on 127.0.0.1:
//
//	go run ./cmd/dispatcher-bench failover [--kills 20]
//	go run ./cmd/dispatcher-bench reads    [--concurrency 32 --duration 10s]
//	go run ./cmd/dispatcher-bench writes   [--concurrencies 1,64 --duration 10s]
//	go run ./cmd/dispatcher-bench all
//
// It builds the dispatcher binary into a temp dir (or takes --binary),
// starts a fresh 3-node cluster per subcommand, and kills every process it
// started (its whole process group) on exit, on error and on Ctrl-C.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// options are the flags of every subcommand (each uses the ones it needs).
type options struct {
	binary    string
	token     string
	keep      bool
	nodeArgs  stringList
	timeout   time.Duration
	readyWait time.Duration

	// failover
	kills          int
	attemptTimeout time.Duration
	killTimeout    time.Duration
	rejoinTimeout  time.Duration

	// reads and writes
	concurrency   int
	concurrencies string
	duration      time.Duration
	segments      int
	preload       int
	reqTimeout    time.Duration
}

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, " ") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func usage() {
	fmt.Fprint(os.Stderr, `usage: dispatcher-bench <failover|reads|writes|all|recovery|backpressure> [flags]

  failover  kill the leader of a 3-node cluster --kills times (SIGKILL); time
            until a write through a survivor gets its 202 and until a new
            leader is reported; restart the node and wait for 3 healthy members.
  reads     GET /v1/overview and /v1/cluster/members on a follower vs a bare
            net/http server serving the same bytes (req/s, p50, p99).
  writes    POST /v1/jobs to the leader at each of --concurrencies.
  all       the three, each on a fresh cluster.
  recovery  SIGKILL a node running part of a checkpointed job (--kills times,
            some leaders); time until the job is RUNNING again on the survivors.
  backpressure  a running job's throughput while its back pressure is sampled
            continuously vs not sampled, in alternating segments.

Run "dispatcher-bench <subcommand> -h" for the flags.
`)
}

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	sub := os.Args[1]
	switch sub {
	case "failover", "reads", "writes", "all", "recovery", "backpressure":
	case "-h", "--help", "help":
		usage()
		return
	default:
		fmt.Fprintf(os.Stderr, "dispatcher-bench: unknown subcommand %q\n\n", sub)
		usage()
		os.Exit(2)
	}
	var o options
	fs := flag.NewFlagSet("dispatcher-bench "+sub, flag.ExitOnError)
	fs.StringVar(&o.binary, "binary", "", "dispatcher binary to run (default: go build ./cmd/dispatcher into a temp dir)")
	fs.StringVar(&o.token, "token", "bench-token", "API token given to the nodes (DISPATCHER_AUTH_TOKEN)")
	fs.BoolVar(&o.keep, "keep", false, "keep the temp dir (data dirs, node logs) after the run")
	fs.Var(&o.nodeArgs, "node-arg", "extra `flag` for every dispatcher agent (repeatable), e.g. --node-arg=--raft-heartbeat-timeout=200ms")
	fs.DurationVar(&o.timeout, "timeout", 0, "abort the whole run after this long (default: derived from the other flags)")
	fs.DurationVar(&o.readyWait, "ready-timeout", 60*time.Second, "how long a fresh cluster may take to become healthy")
	if sub == "failover" || sub == "all" {
		fs.IntVar(&o.kills, "kills", 20, "failover: how many leaders to kill")
		fs.DurationVar(&o.attemptTimeout, "attempt-timeout", 500*time.Millisecond, "failover: timeout of each write attempt")
		fs.DurationVar(&o.killTimeout, "kill-timeout", 20*time.Second, "failover: give up on one kill's write/leader after this long")
		fs.DurationVar(&o.rejoinTimeout, "rejoin-timeout", 60*time.Second, "failover: how long the restarted node may take to rejoin")
	}
	if sub == "recovery" {
		recoveryFlags(fs)
	}
	if sub == "backpressure" {
		bpFlags(fs)
	}
	if sub != "failover" && sub != "recovery" && sub != "backpressure" {
		fs.DurationVar(&o.duration, "duration", 10*time.Second, "reads/writes: measured time per target (reads) or per concurrency level (writes)")
		fs.DurationVar(&o.reqTimeout, "request-timeout", 5*time.Second, "reads/writes: timeout of each request")
	}
	if sub == "reads" || sub == "all" {
		fs.IntVar(&o.concurrency, "concurrency", 32, "reads: concurrent keep-alive clients")
		fs.IntVar(&o.segments, "segments", 4, "reads: split each target's --duration into this many segments, run alternately (ABBA...) so that machine noise hits both alike")
		fs.IntVar(&o.preload, "preload", 100, "reads: jobs submitted before measuring (the overview counts them)")
	}
	if sub == "writes" || sub == "all" {
		fs.StringVar(&o.concurrencies, "concurrencies", "1,64", "writes: comma-separated concurrency levels")
	}
	fs.Parse(os.Args[2:])
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "dispatcher-bench: unexpected argument %q\n", fs.Arg(0))
		os.Exit(2)
	}
	if err := run(sub, o); err != nil {
		fmt.Fprintln(os.Stderr, "dispatcher-bench:", err)
		os.Exit(1)
	}
}

// estimate bounds a subcommand's run time, for the default --timeout.
func estimate(sub string, o options) time.Duration {
	const setup = 2 * time.Minute
	switch sub {
	case "failover":
		return setup + time.Duration(o.kills)*(2*o.killTimeout+o.rejoinTimeout)
	case "reads":
		return setup + 2*2*o.duration + time.Minute
	case "writes":
		return setup + time.Duration(len(parseInts(o.concurrencies)))*(o.duration+time.Minute)
	case "recovery":
		return recoveryEstimate()
	case "backpressure":
		return bpEstimate()
	}
	return estimate("failover", o) + estimate("reads", o) + estimate("writes", o)
}

func run(sub string, o options) error {
	if o.timeout == 0 {
		o.timeout = estimate(sub, o)
	}
	sigCtx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		// After the first signal, a second one kills the bench at once
		// (the nodes die with it through Pdeathsig).
		<-sigCtx.Done()
		stop()
	}()
	ctx, cancel := context.WithTimeout(sigCtx, o.timeout)
	defer cancel()

	dir, err := os.MkdirTemp("", "dispatcher-bench-")
	if err != nil {
		return err
	}
	defer func() {
		if o.keep {
			fmt.Printf("\nkept %s (data dirs and node logs)\n", dir)
			return
		}
		os.RemoveAll(dir)
	}()
	if o.binary == "" {
		fmt.Print("building ./cmd/dispatcher ... ")
		o.binary = filepath.Join(dir, "dispatcher")
		t0 := time.Now()
		build := exec.CommandContext(ctx, "go", "build", "-o", o.binary, "github.com/dispatcher-dev/dispatcher/cmd/dispatcher")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("go build ./cmd/dispatcher: %w (or pass --binary)", err)
		}
		fmt.Printf("done in %s\n", time.Since(t0).Round(100*time.Millisecond))
		fmt.Printf("source: %s\n", treeRevision())
	} else if abs, err := filepath.Abs(o.binary); err == nil {
		o.binary = abs
	}
	printMachine(o)

	subs := []string{sub}
	if sub == "all" {
		subs = []string{"failover", "reads", "writes"}
	}
	var errs []error
	for _, s := range subs {
		if ctx.Err() != nil {
			break
		}
		fmt.Printf("\n==================== %s ====================\n", s)
		sdir := filepath.Join(dir, s)
		var err error
		switch s {
		case "failover":
			err = runFailover(ctx, o, sdir)
		case "reads":
			err = runReads(ctx, o, sdir)
		case "writes":
			err = runWrites(ctx, o, sdir)
		case "recovery":
			err = runRecovery(ctx, o, sdir)
		case "backpressure":
			err = runBackPressureCost(ctx, o, sdir)
		}
		if err != nil {
			fmt.Printf("\n%s FAILED: %v\n", s, err)
			errs = append(errs, fmt.Errorf("%s: %w", s, err))
			if !o.keep {
				fmt.Printf("(node logs are in %s until exit; rerun with --keep to keep them)\n", sdir)
			}
		}
	}
	if ctx.Err() != nil && !errors.Is(context.Cause(ctx), context.Canceled) {
		errs = append(errs, fmt.Errorf("stopped: %w (--timeout %s)", ctx.Err(), o.timeout))
	} else if ctx.Err() != nil {
		errs = append(errs, errors.New("interrupted"))
	}
	return errors.Join(errs...)
}

// treeRevision describes the working tree the binary was built from (the
// tree moves while others work in it, so the figures need it).
func treeRevision() string {
	head, err := exec.Command("git", "log", "-1", "--format=%h %s").Output()
	if err != nil {
		return "unknown (no git)"
	}
	dirty := 0
	if out, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil {
		dirty = len(strings.Fields(string(out))) / 2
	}
	return fmt.Sprintf("working tree at %s, %d tracked files modified", strings.TrimSpace(string(head)), dirty)
}

// printMachine prints what the figures depend on besides the code.
func printMachine(o options) {
	goVersion := runtime.Version()
	if out, err := exec.Command("go", "version").Output(); err == nil {
		goVersion = strings.TrimSpace(string(out))
	}
	nproc := strconv.Itoa(runtime.NumCPU())
	if out, err := exec.Command("nproc").Output(); err == nil {
		nproc = strings.TrimSpace(string(out))
	}
	cpu := ""
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				cpu = strings.TrimSpace(strings.SplitN(l, ":", 2)[1])
				break
			}
		}
	}
	load := ""
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		load = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	fmt.Printf("machine: nproc=%s GOMAXPROCS=%d cpu=%q loadavg=%s\n", nproc, runtime.GOMAXPROCS(0), cpu, load)
	fmt.Printf("toolchain: %s\n", goVersion)
	fmt.Printf("binary: %s\n", o.binary)
	extra := "none (defaults: raft heartbeat/election 400ms, lease 300ms, commit 20ms, leader-wait 5s)"
	if len(o.nodeArgs) > 0 {
		extra = strings.Join(o.nodeArgs, " ")
	}
	fmt.Printf("node flags beyond the cluster layout: %s\n", extra)
}

func parseInts(s string) []int {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if n, err := strconv.Atoi(strings.TrimSpace(f)); err == nil && n > 0 {
			out = append(out, n)
		}
	}
	return out
}

// startCluster lays out, starts and waits for a healthy 3-node cluster.
// The caller must defer c.close().
func startCluster(ctx context.Context, o options, dir string, api *apiClient) (*cluster, string, error) {
	c, err := newCluster(o.binary, o.token, dir, 3, o.nodeArgs)
	if err != nil {
		return nil, "", err
	}
	for _, n := range c.nodes {
		fmt.Printf("  %s http=%s raft=%s gossip=%s data=%s\n", n.id, n.httpAddr, n.raftAddr, n.gossipAddr, n.dataDir)
	}
	t0 := time.Now()
	if err := c.startAll(); err != nil {
		return c, "", err
	}
	leader, err := c.waitHealthy(ctx, api, o.readyWait)
	if err != nil {
		return c, "", err
	}
	fmt.Printf("  cluster healthy in %s, leader %s\n", time.Since(t0).Round(time.Millisecond), leader)
	return c, leader, nil
}

// reportHealth prints unexpected exits and suspicious log lines: a bug
// whatever the figures say.
func reportHealth(c *cluster) (bad bool) {
	if ex := c.unexpectedExits(); len(ex) > 0 {
		bad = true
		fmt.Println("\nBUG? processes that exited without being killed:")
		for _, e := range ex {
			fmt.Println("  " + e)
		}
	}
	lines, peerDown := c.suspiciousLogLines(20)
	if peerDown > 0 {
		fmt.Printf("\nnode logs: %d raft ERROR lines saying a killed peer is unreachable (expected)\n", peerDown)
	}
	if len(lines) > 0 {
		fmt.Println("\nother node log lines at ERROR level / panics (first 20):")
		for _, l := range lines {
			fmt.Println("  " + l)
		}
	} else {
		fmt.Println("node logs: no panics and no other ERROR lines")
	}
	return bad
}
