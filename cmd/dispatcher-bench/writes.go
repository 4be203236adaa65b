package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"text/tabwriter"
	"time"
)

func runWrites(ctx context.Context, o options, dir string) error {
	levels := parseInts(o.concurrencies)
	if len(levels) == 0 {
		return fmt.Errorf("--concurrencies %q has no positive integer", o.concurrencies)
	}
	fmt.Printf("settings: 3 nodes, POST /v1/jobs (a job submission: one Raft entry, fsynced by a quorum) straight to the leader,\n")
	fmt.Printf("  a fresh jobId per request, closed loop, concurrency levels %v, %s measured each after a 1s warm-up, request timeout %s\n",
		levels, o.duration, o.reqTimeout)
	api := newAPIClient(o.token)
	c, leaderID, err := startCluster(ctx, o, dir, api)
	if c != nil {
		defer c.close()
	}
	if err != nil {
		return err
	}
	leader := c.node(leaderID)
	fmt.Printf("  target: leader %s at %s\n", leader.id, leader.httpAddr)
	startTerm := currentTerm(ctx, api, leader)
	if fs, err := fsyncProbe(leader.dataDir, 200); err == nil {
		fmt.Printf("  fsync floor in the data dirs' filesystem (200 × write 4 KiB + fsync): p50 %s, p99 %s\n", ms(fs.p50), ms(fs.p99))
	}

	ids := newJobIDs()
	url := leader.url() + "/v1/jobs"
	type row struct {
		conc int
		res  *loadResult
	}
	var rows []row
	acked, failed := 0, 0
	for _, conc := range levels {
		client := loadClient(conc)
		warm := runLoad(ctx, client, conc, time.Second, o.reqTimeout, 202, postJobRequest(url, o.token, ids))
		idx0 := appliedIndex(ctx, api, leader)
		a := takeCPU(c)
		res := runLoad(ctx, client, conc, o.duration, o.reqTimeout, 202, postJobRequest(url, o.token, ids))
		var use cpuUse
		use.add(a, takeCPU(c))
		idx1 := appliedIndex(ctx, api, leader)
		client.CloseIdleConnections()
		acked += warm.ok + res.ok
		failed += warm.errCount() + res.errCount()
		rows = append(rows, row{conc, res})
		fmt.Printf("  concurrency %d done: %.0f req/s; %s\n", conc, res.rate(), use.report(c))
		if res.ok > 0 && idx1 > idx0 {
			fmt.Printf("    raft applied index on the leader +%d for %d accepted jobs: %.2f log entries per submission\n",
				idx1-idx0, res.ok, float64(idx1-idx0)/float64(res.ok))
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}

	fmt.Printf("\nwrites (POST /v1/jobs to the leader, %s per level):\n", o.duration)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "concurrency\taccepted (202)\treq/s\tp50\tp99\tmax\terrors\tgoal\t")
	for _, r := range rows {
		s := summarize(r.res.latencies)
		goal := ""
		if r.conc == 64 {
			goal = "≥2000/s: " + yesNo(r.res.rate() >= 2000)
		}
		fmt.Fprintf(tw, "%d\t%d\t%.0f\t%s\t%s\t%s\t%s\t%s\t\n", r.conc, r.res.ok, r.res.rate(), ms(s.p50), ms(s.p99), ms(s.max), r.res.errSummary(), goal)
	}
	tw.Flush()

	if t := currentTerm(ctx, api, leader); t != startTerm {
		fmt.Printf("\nnote: the leader's term moved from %d to %d during the run (an election happened)\n", startTerm, t)
	}
	// Every accepted job must be on every node.
	fmt.Printf("\nchecking that all %d accepted jobs reached every node ...\n", acked)
	deadline := time.Now().Add(15 * time.Second)
	for _, n := range c.nodes {
		for {
			got, err := api.jobCount(ctx, n)
			// A request that failed (timeout) may still have been applied.
			if err == nil && got >= acked && got <= acked+failed {
				fmt.Printf("  %s: %d jobs\n", n.id, got)
				break
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				reportHealth(c)
				return fmt.Errorf("LOST OR EXTRA WRITES? %s has %d jobs, %d were accepted and %d failed (%v)", n.id, got, acked, failed, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	if reportHealth(c) {
		return fmt.Errorf("a node exited on its own (see above)")
	}
	return nil
}

// appliedIndex is the leader's applied Raft index (0 when unknown).
func appliedIndex(ctx context.Context, api *apiClient, n *node) uint64 {
	code, body, err := api.get(ctx, n, "/v1/health/ready", time.Second)
	if err != nil || code != 200 {
		return 0
	}
	var r struct {
		AppliedIndex uint64 `json:"applied_index"`
	}
	if json.Unmarshal(body, &r) != nil {
		return 0
	}
	return r.AppliedIndex
}

func currentTerm(ctx context.Context, api *apiClient, n *node) uint64 {
	l, err := api.leader(ctx, n, time.Second)
	if err != nil {
		return 0
	}
	return l.Term
}
