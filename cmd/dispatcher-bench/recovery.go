package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// recovery: the time from a node's SIGKILL until a checkpointed job runs
// again with every subtask RUNNING on the survivors.

var recov struct {
	kills          int
	leaderEvery    int
	parallelism    int
	rate           int
	interval       time.Duration
	restartDelay   time.Duration
	settle         time.Duration
	recoverTimeout time.Duration
	rejoinTimeout  time.Duration
	poll           time.Duration
}

func recoveryFlags(fs *flag.FlagSet) {
	fs.IntVar(&recov.kills, "kills", 12, "recovery: how many nodes to kill (one at a time)")
	fs.IntVar(&recov.leaderEvery, "leader-every", 4, "recovery: every Nth kill is of the Raft leader (0: never); the others kill a follower that runs part of the job")
	fs.IntVar(&recov.parallelism, "parallelism", 3, "recovery: parallelism of every vertex (3 = one slot per node)")
	fs.IntVar(&recov.rate, "rate", 500, "recovery: records per second per source subtask")
	fs.DurationVar(&recov.interval, "checkpoint-interval", 500*time.Millisecond, "recovery: the job's checkpoint interval")
	fs.DurationVar(&recov.restartDelay, "restart-delay", 100*time.Millisecond, "recovery: the job's fixed-delay restart delay")
	fs.DurationVar(&recov.settle, "settle", 1500*time.Millisecond, "recovery: how long the job runs (checkpointing) between recovery and the next kill")
	fs.DurationVar(&recov.recoverTimeout, "recover-timeout", 60*time.Second, "recovery: give up on one kill after this long")
	fs.DurationVar(&recov.rejoinTimeout, "rejoin-timeout", 60*time.Second, "recovery: how long the restarted node may take to rejoin")
	fs.DurationVar(&recov.poll, "poll", 20*time.Millisecond, "recovery: pause between polls of the job on the survivors")
}

func recoveryEstimate() time.Duration {
	return 2*time.Minute + time.Duration(recov.kills)*(recov.recoverTimeout+recov.rejoinTimeout+recov.settle+10*time.Second)
}

func recoverySpec(jobID string) []byte {
	p := recov.parallelism
	return []byte(fmt.Sprintf(`{"name":"bench-recovery","jobId":"%s",
	"checkpointing":{"interval":"%s","mode":"EXACTLY_ONCE"},
	"restartStrategy":{"type":"fixed-delay","attempts":1000000,"delay":"%s"},
	"vertices":[
		{"id":"src","operator":"sequence","parallelism":%d,"params":{"from":1,"ratePerSecond":%d}},
		{"id":"keyed","operator":"map","parallelism":%d,"inputs":[{"from":"src","ship":"forward"}],"params":{"expr":"{\"k\": n %% 1000, \"n\": n}"}},
		{"id":"sum","operator":"sum","parallelism":%d,"inputs":[{"from":"keyed","ship":"hash","key":"k"}],"params":{"field":"n"}},
		{"id":"out","operator":"discard","parallelism":%d,"inputs":[{"from":"sum","ship":"rebalance"}]}]}`,
		jobID, recov.interval, recov.restartDelay, p, recov.rate, p, p, p))
}

// jobView is what a poll learns about the job.
type jobView struct {
	state    string
	attempt  int
	total    int
	running  int
	nodes    map[string]int // subtasks per node (from the vertex details)
	restored int64
}

type flinkJob struct {
	State    string `json:"state"`
	Attempt  int    `json:"attempt"`
	Vertices []struct {
		ID          string         `json:"id"`
		Parallelism int            `json:"parallelism"`
		Tasks       map[string]int `json:"tasks"`
	} `json:"vertices"`
}

// viewJob reads the job from node n: state and task counts, and with
// detail the node of every subtask.
func viewJob(ctx context.Context, api *apiClient, n *node, jobID string, detail bool) (*jobView, error) {
	code, body, err := api.get(ctx, n, "/v1/jobs/"+jobID, 500*time.Millisecond)
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("GET /v1/jobs/%s on %s: %d %s", jobID, n.id, code, firstError(body))
	}
	var j flinkJob
	if err := json.Unmarshal(body, &j); err != nil {
		return nil, err
	}
	v := &jobView{state: j.State, attempt: j.Attempt}
	for _, vx := range j.Vertices {
		v.total += vx.Parallelism
		v.running += vx.Tasks["RUNNING"]
	}
	if !detail {
		return v, nil
	}
	v.nodes = map[string]int{}
	for _, vx := range j.Vertices {
		code, body, err := api.get(ctx, n, "/v1/jobs/"+jobID+"/vertices/"+vx.ID, 500*time.Millisecond)
		if err != nil {
			return nil, err
		}
		if code != http.StatusOK {
			return nil, fmt.Errorf("GET vertex %s on %s: %d %s", vx.ID, n.id, code, firstError(body))
		}
		var d struct {
			Subtasks []struct {
				Status string `json:"status"`
				TM     string `json:"taskmanager-id"`
			} `json:"subtasks"`
		}
		if err := json.Unmarshal(body, &d); err != nil {
			return nil, err
		}
		for _, st := range d.Subtasks {
			if st.Status == "RUNNING" {
				v.nodes[st.TM]++
			} else {
				v.nodes["!"+st.Status]++
			}
		}
	}
	return v, nil
}

// recovered tells whether v shows the job RUNNING with every subtask
// RUNNING and none on the victim.
func (v *jobView) recovered(victim string) bool {
	if v.state != "RUNNING" || v.running != v.total || v.nodes == nil {
		return false
	}
	n := 0
	for node, k := range v.nodes {
		if node == victim || strings.HasPrefix(node, "!") {
			return false
		}
		n += k
	}
	return n == v.total
}

func (v *jobView) placement() string {
	var parts []string
	for node, k := range v.nodes {
		parts = append(parts, fmt.Sprintf("%s:%d", node, k))
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

type recoveryRound struct {
	victim     string
	wasLeader  bool
	subtasks   int // subtasks the victim ran
	attempt0   int
	attempt1   int
	took       time.Duration
	ok         bool
	polls      int
	placement  string
	restoredID int64
	rejoin     time.Duration
	lastSeen   string
	failures   []string // the job's exceptions after the kill, with their offset from it
}

// failuresSince lists the job's exceptions from t0 on, oldest first, as
// "+offset message".
func failuresSince(ctx context.Context, api *apiClient, n *node, jobID string, t0 time.Time) []string {
	code, body, err := api.get(ctx, n, "/v1/jobs/"+jobID+"/exceptions?maxExceptions=100", 2*time.Second)
	if err != nil || code != http.StatusOK {
		return nil
	}
	var ex struct {
		All []struct {
			Exception string `json:"exception"`
			Timestamp int64  `json:"timestamp"`
			TM        string `json:"taskManagerId"`
		} `json:"all-exceptions"`
	}
	if json.Unmarshal(body, &ex) != nil {
		return nil
	}
	sort.Slice(ex.All, func(a, b int) bool { return ex.All[a].Timestamp < ex.All[b].Timestamp })
	var out []string
	for _, e := range ex.All {
		at := time.UnixMilli(e.Timestamp).Sub(t0)
		if at < -time.Second {
			continue
		}
		msg := e.Exception
		if len(msg) > 110 {
			msg = msg[:110] + "..."
		}
		out = append(out, fmt.Sprintf("+%s %s: %s", ms(at), e.TM, msg))
	}
	return out
}

func runRecovery(ctx context.Context, o options, dir string) error {
	shared := filepath.Join(dir, "shared")
	o.nodeArgs = append(append(stringList{}, o.nodeArgs...),
		"--checkpoint-dir="+filepath.Join(shared, "checkpoints"), "--savepoint-dir="+filepath.Join(shared, "savepoints"))
	fmt.Printf("settings: 3 nodes, kills=%d (every %dth the leader), job: sequence(%d, %d rec/s each) → map → hash → sum → discard,\n",
		recov.kills, recov.leaderEvery, recov.parallelism, recov.rate)
	fmt.Printf("  checkpoint interval %s, restart fixed-delay %s; settle %s between recovery and the next kill; poll every %s\n",
		recov.interval, recov.restartDelay, recov.settle, recov.poll)
	fmt.Println("  each kill: SIGKILL a node running part of the job; poll GET /v1/jobs/:id (and its vertices) on the survivors")
	fmt.Println("  until the job is RUNNING with every subtask RUNNING on a survivor; then restart the node and wait for health.")
	api := newAPIClient(o.token)
	c, _, err := startCluster(ctx, o, dir, api)
	if c != nil {
		defer c.close()
	}
	if err != nil {
		return err
	}
	jobID := newJobIDs().next()
	submitted := false
	for i := 0; i < 20 && !submitted && ctx.Err() == nil; i++ {
		code, body, err := api.do(ctx, http.MethodPost, c.nodes[i%3].url()+"/v1/jobs", recoverySpec(jobID), 5*time.Second)
		if err == nil && code == http.StatusAccepted {
			submitted = true
			break
		}
		fmt.Printf("  submit: %d %s %v\n", code, firstError(body), err)
		time.Sleep(500 * time.Millisecond)
	}
	if !submitted {
		return fmt.Errorf("could not submit the job")
	}
	fmt.Printf("  job %s submitted\n", jobID)

	var rounds []*recoveryRound
	var roundErr error
	for i := 1; i <= recov.kills && ctx.Err() == nil; i++ {
		leaderID, err := c.waitHealthy(ctx, api, recov.rejoinTimeout)
		if err != nil {
			roundErr = err
			break
		}
		r, err := recoverOnce(ctx, c, api, jobID, leaderID, recov.leaderEvery > 0 && i%recov.leaderEvery == 0)
		if r != nil {
			rounds = append(rounds, r)
			took := "NEVER"
			if r.ok {
				took = ms(r.took)
			}
			fmt.Printf("  kill %2d: %s (leader %v, %d subtasks) attempt %d→%d RUNNING again after %s (%d polls) on %s, restored chk %d, rejoined in %s\n",
				i, r.victim, r.wasLeader, r.subtasks, r.attempt0, r.attempt1, took, r.polls, r.placement, r.restoredID, r.rejoin.Round(time.Millisecond))
			for _, f := range r.failures {
				fmt.Println("      " + f)
			}
		}
		if err != nil {
			roundErr = fmt.Errorf("kill %d: %w", i, err)
			break
		}
	}
	printRecovery(rounds)
	bad := reportHealth(c)
	if roundErr != nil {
		return roundErr
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if bad {
		return fmt.Errorf("a node exited on its own (see above)")
	}
	return nil
}

// waitRunning waits until node n shows the job RUNNING with every subtask
// RUNNING.
func waitRunning(ctx context.Context, api *apiClient, n *node, jobID string, timeout time.Duration) (*jobView, error) {
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) && ctx.Err() == nil {
		v, err := viewJob(ctx, api, n, jobID, true)
		if err == nil && v.recovered("") {
			return v, nil
		}
		if err != nil {
			last = err.Error()
		} else {
			last = fmt.Sprintf("%s attempt %d, %d/%d running, %s", v.state, v.attempt, v.running, v.total, v.placement())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil, fmt.Errorf("job not RUNNING on %s within %s: %s", n.id, timeout, last)
}

func latestRestored(ctx context.Context, api *apiClient, n *node, jobID string) int64 {
	code, body, err := api.get(ctx, n, "/v1/jobs/"+jobID+"/checkpoints", time.Second)
	if err != nil || code != http.StatusOK {
		return -1
	}
	var cs struct {
		Latest struct {
			Restored *struct {
				ID int64 `json:"id"`
			} `json:"restored"`
		} `json:"latest"`
	}
	if json.Unmarshal(body, &cs) != nil || cs.Latest.Restored == nil {
		return 0
	}
	return cs.Latest.Restored.ID
}

func recoverOnce(ctx context.Context, c *cluster, api *apiClient, jobID, leaderID string, killLeader bool) (*recoveryRound, error) {
	leader := c.node(leaderID)
	v, err := waitRunning(ctx, api, leader, jobID, recov.recoverTimeout)
	if err != nil {
		return nil, err
	}
	// Let it checkpoint in this attempt before the next fault.
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(recov.settle):
	}
	if v, err = waitRunning(ctx, api, leader, jobID, recov.recoverTimeout); err != nil {
		return nil, err
	}
	victim := leader
	if !killLeader || v.nodes[leaderID] == 0 {
		best := 0
		for _, n := range c.nodes {
			if n.id != leaderID && v.nodes[n.id] > best {
				victim, best = n, v.nodes[n.id]
			}
		}
	}
	r := &recoveryRound{victim: victim.id, wasLeader: victim.id == leaderID, subtasks: v.nodes[victim.id], attempt0: v.attempt}
	survivors := c.others(victim)

	t0 := time.Now()
	if err := c.kill(victim); err != nil {
		return r, err
	}
	deadline := t0.Add(recov.recoverTimeout)
	for i := 0; time.Now().Before(deadline) && ctx.Err() == nil; i++ {
		s := survivors[i%len(survivors)]
		r.polls++
		jv, err := viewJob(ctx, api, s, jobID, false)
		seen := time.Since(t0)
		if err == nil && jv.state == "RUNNING" && jv.running == jv.total {
			// Confirm where the subtasks run (a read of the same node).
			if dv, err := viewJob(ctx, api, s, jobID, true); err == nil && dv.recovered(victim.id) {
				r.took, r.ok, r.attempt1, r.placement = seen, true, dv.attempt, dv.placement()
				break
			} else if err == nil {
				r.lastSeen = fmt.Sprintf("%s: %s attempt %d on %s", s.id, dv.state, dv.attempt, dv.placement())
			}
		} else if err != nil {
			r.lastSeen = s.id + ": " + err.Error()
		} else {
			r.lastSeen = fmt.Sprintf("%s: %s attempt %d, %d/%d running", s.id, jv.state, jv.attempt, jv.running, jv.total)
		}
		time.Sleep(recov.poll)
	}
	if err := victim.waitExit(5 * time.Second); err != nil {
		return r, err
	}
	if !r.ok {
		return r, fmt.Errorf("job not RUNNING on the survivors within %s of killing %s; last seen %s", recov.recoverTimeout, victim.id, r.lastSeen)
	}
	r.restoredID = latestRestored(ctx, api, survivors[0], jobID)
	r.failures = failuresSince(ctx, api, survivors[0], jobID, t0)
	t1 := time.Now()
	if err := c.start(victim); err != nil {
		return r, err
	}
	if _, err := c.waitHealthy(ctx, api, recov.rejoinTimeout); err != nil {
		return r, fmt.Errorf("restarted %s did not rejoin: %w", victim.id, err)
	}
	r.rejoin = time.Since(t1)
	return r, nil
}

func printRecovery(rounds []*recoveryRound) {
	if len(rounds) == 0 {
		return
	}
	fmt.Println("\nper kill:")
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "#\tkilled\tleader\tits subtasks\tattempt\tRUNNING again\trestored chk\tplacement after\trejoin\t")
	var all, follower, leader []time.Duration
	for i, r := range rounds {
		fmt.Fprintf(tw, "%d\t%s\t%v\t%d\t%d→%d\t%s\t%d\t%s\t%s\t\n", i+1, r.victim, r.wasLeader, r.subtasks, r.attempt0, r.attempt1,
			fmtOpt(r.took, r.ok), r.restoredID, r.placement, r.rejoin.Round(time.Millisecond))
		if !r.ok {
			continue
		}
		all = append(all, r.took)
		if r.wasLeader {
			leader = append(leader, r.took)
		} else {
			follower = append(follower, r.took)
		}
	}
	tw.Flush()
	fmt.Println("\nrecovery summary (nearest-rank percentiles):")
	tw = tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "time from SIGKILL to the job RUNNING again\tn\tmin\tmedian\tp90\tmax\tgoal\tmet\t")
	row := func(name string, ds []time.Duration, goal bool) {
		s := summarize(ds)
		met := "-"
		g := ""
		if goal {
			g, met = "median<3s", yesNo(s.n == len(rounds) && s.p50 < 3*time.Second)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t\n", name, s.n, ms(s.min), ms(s.p50), ms(s.p90), ms(s.max), g, met)
	}
	row("all kills", all, true)
	row("a follower running part of the job", follower, false)
	row("the leader", leader, false)
	tw.Flush()
}
