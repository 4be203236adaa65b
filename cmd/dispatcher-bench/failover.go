package main

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
)

// killRound is what one leader kill measured.
type killRound struct {
	victim      string
	oldTerm     uint64
	newLeader   string
	newTerm     uint64
	reportedBy  string
	writeAt     time.Duration // kill → 202 through a survivor
	leaderAt    time.Duration // kill → a survivor reports another leader
	writeOK     bool
	leaderOK    bool
	answeredBy  string // survivor whose answer was the 202
	servedBy    string // X-Dispatcher-Node of the 202 (who produced it)
	attempts    int
	attemptErrs map[string]int
	examples    map[string]string // first full answer of each failed-attempt kind
	rejoin      time.Duration     // restart → cluster healthy again
	jobID       string
}

func runFailover(ctx context.Context, o options, dir string) error {
	fmt.Printf("settings: 3 nodes, kills=%d, write attempt timeout=%s, per-kill bound=%s, rejoin bound=%s\n",
		o.kills, o.attemptTimeout, o.killTimeout, o.rejoinTimeout)
	fmt.Println("  each kill: SIGKILL the leader's process group; then, concurrently, (a) POST /v1/jobs with one fresh jobId,")
	fmt.Println("  retried back to back against the survivors in turn, each attempt with the attempt timeout, until a 202;")
	fmt.Println("  (b) GET /v1/cluster/leader on both survivors every 5ms until one names another node. Then restart the")
	fmt.Println("  killed node (same data dir and ports) and wait until all 3 are ready alive voters with one leader.")
	api := newAPIClient(o.token)
	c, _, err := startCluster(ctx, o, dir, api)
	if c != nil {
		defer c.close()
	}
	if err != nil {
		return err
	}
	ids := newJobIDs()
	var rounds []*killRound
	var acked []string
	var roundErr error
	for i := 1; i <= o.kills && ctx.Err() == nil; i++ {
		r, err := killOnce(ctx, o, c, api, ids)
		if r != nil {
			rounds = append(rounds, r)
			if r.writeOK {
				acked = append(acked, r.jobID)
			}
			fmt.Printf("  kill %2d: %s (term %d) → leader %s (term %d, per %s) after %s, write 202 after %s via %s served by %s (%d attempts), rejoined in %s\n",
				i, r.victim, r.oldTerm, r.newLeader, r.newTerm, r.reportedBy, fmtOpt(r.leaderAt, r.leaderOK), fmtOpt(r.writeAt, r.writeOK),
				r.answeredBy, r.servedBy, r.attempts, r.rejoin.Round(time.Millisecond))
		}
		if err != nil {
			roundErr = fmt.Errorf("kill %d: %w", i, err)
			break
		}
	}
	printFailover(rounds)

	if ctx.Err() != nil {
		reportHealth(c)
		return ctx.Err()
	}
	// Every acknowledged write must be on every node.
	lost := verifyAcked(ctx, c, api, acked)
	bad := reportHealth(c)
	if lost != nil {
		return lost
	}
	if roundErr != nil {
		return roundErr
	}
	if bad {
		return fmt.Errorf("a node exited on its own (see above)")
	}
	return nil
}

func fmtOpt(d time.Duration, ok bool) string {
	if !ok {
		return "NEVER"
	}
	return ms(d)
}

// killOnce kills the current leader, measures, restarts it and waits for
// the cluster to heal.
func killOnce(ctx context.Context, o options, c *cluster, api *apiClient, ids *jobIDs) (*killRound, error) {
	leaderID, err := c.waitHealthy(ctx, api, o.rejoinTimeout)
	if err != nil {
		return nil, err
	}
	victim := c.node(leaderID)
	li, err := api.leader(ctx, victim, time.Second)
	if err != nil || li.ID != victim.id {
		return nil, fmt.Errorf("%s does not report itself as leader: %+v %v", victim.id, li, err)
	}
	if code, _, err := api.get(ctx, victim, "/v1/health/leader", time.Second); err != nil || code != 200 {
		return nil, fmt.Errorf("%s: /v1/health/leader answered %d %v", victim.id, code, err)
	}
	survivors := c.others(victim)
	r := &killRound{victim: victim.id, oldTerm: li.Term, jobID: ids.next(), attemptErrs: map[string]int{}, examples: map[string]string{}}

	mctx, cancel := context.WithTimeout(ctx, o.killTimeout)
	defer cancel()
	t0 := time.Now()
	if err := c.kill(victim); err != nil {
		return nil, err
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // (a) the write
		defer wg.Done()
		for i := 0; mctx.Err() == nil; i++ {
			s := survivors[i%len(survivors)]
			a0 := time.Now()
			r.attempts++
			code, body, hdr, err := api.postJob(mctx, s, r.jobID, o.attemptTimeout)
			if code == 202 {
				r.writeAt, r.writeOK, r.answeredBy, r.servedBy = time.Since(t0), true, s.id, hdr
				return
			}
			kind, full := "", ""
			switch {
			case err != nil && mctx.Err() != nil:
				return
			case err != nil:
				kind, full = errKind(err), err.Error()
			default:
				kind, full = fmt.Sprintf("HTTP %d", code), fmt.Sprintf("HTTP %d from %s after %s: %s", code, s.id, time.Since(a0).Round(time.Millisecond), strings.TrimSpace(string(body)))
			}
			r.attemptErrs[kind]++
			if _, ok := r.examples[kind]; !ok {
				r.examples[kind] = full
			}
			if time.Since(a0) < 2*time.Millisecond {
				time.Sleep(2 * time.Millisecond) // do not spin on instant refusals
			}
		}
	}()
	go func() { // (b) the new leader
		defer wg.Done()
		for mctx.Err() == nil {
			for _, s := range survivors {
				l, err := api.leader(mctx, s, 250*time.Millisecond)
				if err == nil && l.ID != victim.id {
					r.leaderAt, r.leaderOK, r.newLeader, r.newTerm, r.reportedBy = time.Since(t0), true, l.ID, l.Term, s.id
					return
				}
			}
			select {
			case <-mctx.Done():
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	wg.Wait()
	if err := victim.waitExit(5 * time.Second); err != nil {
		return r, err
	}
	if ctx.Err() != nil {
		return r, ctx.Err()
	}
	if !r.writeOK || !r.leaderOK {
		return r, fmt.Errorf("no 202 or no new leader within %s after killing %s (attempt errors: %v)", o.killTimeout, victim.id, r.attemptErrs)
	}

	t1 := time.Now()
	if err := c.start(victim); err != nil {
		return r, err
	}
	if _, err := c.waitHealthy(ctx, api, o.rejoinTimeout); err != nil {
		return r, fmt.Errorf("restarted %s (same data dir and ports) did not rejoin: %w", victim.id, err)
	}
	r.rejoin = time.Since(t1)
	return r, nil
}

// firstError pulls the first message of a {"errors":[...]} body.
func firstError(body []byte) string {
	s := strings.TrimSpace(string(body))
	if i := strings.Index(s, `"errors":["`); i >= 0 {
		s = s[i+len(`"errors":["`):]
		if j := strings.Index(s, `"`); j >= 0 {
			s = s[:j]
		}
	}
	if len(s) > 50 {
		s = s[:50] + "..."
	}
	return s
}

func printFailover(rounds []*killRound) {
	if len(rounds) == 0 {
		return
	}
	fmt.Println("\nper kill:")
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "#\tkilled\tnew leader\tterm\tleader reported\twrite 202\tattempts\tfailed attempts\trejoin\t")
	var writes, leaders, rejoins []time.Duration
	for i, r := range rounds {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d→%d\t%s\t%s\t%d\t%s\t%s\t\n", i+1, r.victim, r.newLeader, r.oldTerm, r.newTerm,
			fmtOpt(r.leaderAt, r.leaderOK), fmtOpt(r.writeAt, r.writeOK), r.attempts, errMap(r.attemptErrs), r.rejoin.Round(time.Millisecond))
		if r.writeOK {
			writes = append(writes, r.writeAt)
		}
		if r.leaderOK {
			leaders = append(leaders, r.leaderAt)
		}
		if r.rejoin > 0 {
			rejoins = append(rejoins, r.rejoin)
		}
	}
	tw.Flush()

	fmt.Println("\nfailover summary (nearest-rank percentiles; with under 100 kills p99 is the max):")
	tw = tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "time from SIGKILL of the leader to\tn\tmin\tmedian\tp90\tp99\tmax\tgoal\tmet\t")
	row := func(name string, ds []time.Duration, goal string, ok func(stats) bool) {
		s := summarize(ds)
		met := "-"
		if ok != nil {
			met = yesNo(s.n == len(rounds) && ok(s))
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", name, s.n, ms(s.min), ms(s.p50), ms(s.p90), ms(s.p99), ms(s.max), goal, met)
	}
	row("write acknowledged (202) via a survivor", writes, "median<1s, p99<2s", func(s stats) bool { return s.p50 < time.Second && s.p99 < 2*time.Second })
	row("new leader reported by a survivor", leaders, "", nil)
	row("restart → 3 healthy voters (rejoin)", rejoins, "", nil)
	tw.Flush()

	// What the failed attempts answered, in full, once per kind.
	examples := map[string]string{}
	counts := map[string]int{}
	for _, r := range rounds {
		for k, v := range r.attemptErrs {
			counts[k] += v
			if _, ok := examples[k]; !ok {
				examples[k] = r.examples[k]
			}
		}
	}
	if len(counts) > 0 {
		fmt.Println("\nfailed write attempts during failover (all kills), one example each:")
		keys := make([]string, 0, len(counts))
		for k := range counts {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Printf("  %-8s ×%-3d e.g. %s\n", k, counts[k], examples[k])
		}
	}
	// A new leader must come with a higher term.
	for i, r := range rounds {
		if r.leaderOK && r.newTerm <= r.oldTerm {
			fmt.Printf("  ANOMALY kill %d: %s reported new leader %s with term %d, not above the killed leader's term %d\n",
				i+1, r.reportedBy, r.newLeader, r.newTerm, r.oldTerm)
		}
	}
}

func errMap(m map[string]int) string {
	if len(m) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s×%d", k, m[k]))
	}
	return strings.Join(parts, "; ")
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "NO"
}

// verifyAcked checks that every job acknowledged with a 202 is known to
// every node; a missing one is a lost write.
func verifyAcked(ctx context.Context, c *cluster, api *apiClient, acked []string) error {
	if len(acked) == 0 {
		return nil
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var problems []string
		lostAny := false
		for _, n := range c.nodes {
			if !n.running() {
				continue
			}
			missing, err := api.missingJobs(ctx, n, acked)
			if err != nil {
				problems = append(problems, fmt.Sprintf("%s: %v", n.id, err))
			} else if len(missing) > 0 {
				lostAny = true
				problems = append(problems, fmt.Sprintf("%s lacks %d of %d acknowledged jobs: %s", n.id, len(missing), len(acked), strings.Join(missing, ",")))
			}
		}
		if len(problems) == 0 {
			fmt.Printf("\nall %d acknowledged jobs are present on every node\n", len(acked))
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			if lostAny {
				return fmt.Errorf("LOST WRITES (acknowledged 202 but absent 10s later): %s", strings.Join(problems, "; "))
			}
			return fmt.Errorf("cannot verify the acknowledged jobs: %s", strings.Join(problems, "; "))
		}
		time.Sleep(200 * time.Millisecond)
	}
}
