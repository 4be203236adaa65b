//go:build e2e

package e2e

import (
	"fmt"
	mrand "math/rand"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// TestE2E brings the compose cluster up, runs a concurrent workload through
// the load balancer, injects every fault once (short mode stops there),
// then E2E_FAULTS (default 30) faults picked at random with seed E2E_SEED
// (default 1), and finally checks the whole history for linearizability
// and every acknowledged submission for presence.
func TestE2E(t *testing.T) {
	short := testing.Short() || os.Getenv("E2E_SHORT") == "1"
	seed := envInt(t, "E2E_SEED", 1)
	nFaults := envInt(t, "E2E_FAULTS", 30)
	clients := envInt(t, "E2E_CLIENTS", 4)
	begin := time.Now()

	c := newCluster(t)
	c.up()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("compose logs: %s", c.saveLogs("cluster-logs.txt"))
		}
		c.down()
	})
	if err := c.waitHealthy(90 * time.Second); err != nil {
		t.Fatal(err)
	}

	h := newHistory()
	w := newWorkload(c, h, clients, 6, int64(seed))
	s := &suite{t: t, c: c, h: h, w: w, rng: mrand.New(mrand.NewSource(int64(seed)))}
	w.start()
	defer w.stop()

	// A quiet window first: what the workload sees without faults.
	baseFrom := h.now()
	time.Sleep(5 * time.Second)
	s.results = append(s.results, faultResult{Phase: "baseline", Scenario: "no fault (5s)", From: baseFrom, To: h.now(), Leader: -1, Writes: -1, Gap: -1, Recovery: -1})

	healthy := true
	for _, sc := range scenarios {
		if healthy = s.runFault("single", sc.name, sc); !healthy {
			break
		}
	}
	if !short && healthy {
		for i := range nFaults {
			sc := pickScenario(s.rng)
			if healthy = s.runFault("mixed", fmt.Sprintf("mixed-%02d-%s", i+1, sc.name), sc); !healthy {
				break
			}
		}
	}

	time.Sleep(time.Second)
	w.stop()
	if err := c.waitHealthy(90 * time.Second); err != nil {
		t.Fatalf("at the end: %v", err)
	}

	ops, recs, acked := h.snapshot()
	lost, unsure := s.checkAcked(acked)
	checkStart := time.Now()
	bad, checked := checkHistory(ops, 30*time.Second)
	checkTook := time.Since(checkStart)

	// Attribute violations and lost jobs to the fault windows.
	for i := range s.results {
		r := &s.results[i]
		for _, id := range lost {
			if at := acked[id]; at >= r.From && at < r.To {
				r.Lost++
			}
		}
	}
	rep := report{results: s.results, recs: recs, ops: ops, bad: bad, lost: lost, checked: checked}
	table := rep.table()
	t.Logf("\n%s", table)

	faults := 0
	for _, r := range s.results {
		if r.Phase != "baseline" {
			faults++
		}
	}
	summary := fmt.Sprintf("%d faults, %d operations recorded (%d in the checked history, %d unknown outcomes), "+
		"%d acknowledged submissions, %d linearizability violations, %d lost acknowledged jobs, "+
		"porcupine check %v, whole run %v",
		faults, len(recs), checked, countUnknown(ops), len(acked), len(bad), len(lost),
		checkTook.Round(time.Millisecond), time.Since(begin).Round(time.Second))
	t.Log(summary)
	goals := rep.goals(short, faults)
	for _, g := range goals {
		t.Log(g)
	}
	if len(h.unexpected) > 0 {
		t.Logf("unexpected answers:\n  %s", strings.Join(h.unexpected, "\n  "))
	}

	dir := c.logDir
	os.MkdirAll(dir, 0o755)
	for i, b := range bad {
		p := filepath.Join(dir, fmt.Sprintf("violation-%d-%s.html", i, b.Job[:8]))
		single := jobModel
		single.Partition = nil
		porcupine.VisualizePath(single, b.Info, p)
		t.Errorf("job %s: history not linearizable (%v, %d ops, first at +%v): %s", b.Job, b.Verdict, b.Ops, time.Duration(b.First).Round(time.Millisecond), p)
	}
	for _, id := range lost {
		t.Errorf("acknowledged job %s (acked at +%v) is missing at the end", id, time.Duration(acked[id]).Round(time.Millisecond))
	}
	if len(unsure) > 0 {
		t.Errorf("%d acknowledged jobs could not be read at the end: %v", len(unsure), first(unsure, 10))
	}
	if !healthy {
		t.Errorf("stopped early: the cluster did not come back after a fault")
	}
	if !short && (faults < nFaults || len(recs) < 1000) {
		t.Errorf("long mode wants >= %d faults and >= 1000 operations, got %d and %d", nFaults, faults, len(recs))
	}

	out := filepath.Join(dir, "results-short.md")
	if !short {
		out = filepath.Join(c.repo, "deploy", "RESULTS.md")
	}
	if p := os.Getenv("E2E_RESULTS"); p != "" {
		out = p
	}
	cmd := os.Getenv("E2E_COMMAND")
	if cmd == "" {
		cmd = "go test -tags e2e ./e2e -run TestE2E -timeout 20m -v"
		if short {
			cmd = "E2E_SHORT=1 " + cmd
		}
	}
	md := rep.markdown(cmd, short, seed, nFaults, clients, summary, goals, h.unexpected)
	if err := os.WriteFile(out, []byte(md), 0o644); err != nil {
		t.Errorf("write %s: %v", out, err)
	} else {
		t.Logf("results written to %s", out)
	}
}

func envInt(t *testing.T, k string, def int) int {
	v := os.Getenv(k)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		t.Fatalf("%s=%q: %v", k, v, err)
	}
	return n
}

func countUnknown(ops []porcupine.Operation) int {
	n := 0
	for _, op := range ops {
		if op.Output.(opOutput).Result == resUnknown {
			n++
		}
	}
	return n
}

type report struct {
	results []faultResult
	recs    []opRecord
	ops     []porcupine.Operation
	bad     []checkResult
	lost    []string
	checked int
}

type row struct {
	phase, scenario  string
	n                int
	leader, writes   []time.Duration
	gaps             []time.Duration
	recovery         []time.Duration
	failed, ops      int
	violations, lost int
}

// rows aggregates the results per phase and scenario, in order.
func (rep report) rows() []*row {
	var out []*row
	idx := map[string]*row{}
	for _, r := range rep.results {
		key := r.Phase + "/" + r.Scenario
		rw := idx[key]
		if rw == nil {
			rw = &row{phase: r.Phase, scenario: r.Scenario}
			idx[key] = rw
			out = append(out, rw)
		}
		rw.n++
		if r.Leader >= 0 {
			rw.leader = append(rw.leader, r.Leader)
		}
		if r.Writes >= 0 {
			rw.writes = append(rw.writes, r.Writes)
		}
		if r.Gap >= 0 {
			rw.gaps = append(rw.gaps, r.Gap)
		}
		if r.Recovery >= 0 {
			rw.recovery = append(rw.recovery, r.Recovery)
		}
		rw.lost += r.Lost
		for _, rec := range rep.recs {
			if rec.Call >= r.From && rec.Call < r.To {
				rw.ops++
				if rec.Failed {
					rw.failed++
				}
			}
		}
		for _, b := range rep.bad {
			if b.First >= r.From && b.First < r.To {
				rw.violations++
			}
		}
	}
	return out
}

func stats(ds []time.Duration) string {
	if len(ds) == 0 {
		return "-"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	if len(s) == 1 {
		return fmtDur(med)
	}
	return fmtDur(med) + " / " + fmtDur(s[len(s)-1])
}

func (rep report) table() string {
	var b strings.Builder
	fmt.Fprintf(&b, "| phase | scenario | faults | new leader (median / max) | writes back via LB (median / max) | longest write gap (median / max) | recovery (median / max) | failed requests | operations | violations | lost acked |\n")
	fmt.Fprintf(&b, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	var tf, to, tv, tl, tn int
	for _, r := range rep.rows() {
		fmt.Fprintf(&b, "| %s | %s | %d | %s | %s | %s | %s | %d | %d | %d | %d |\n",
			r.phase, r.scenario, r.n, stats(r.leader), stats(r.writes), stats(r.gaps), stats(r.recovery), r.failed, r.ops, r.violations, r.lost)
		if r.phase != "baseline" {
			tn += r.n
		}
	}
	for _, rec := range rep.recs {
		to++
		if rec.Failed {
			tf++
		}
	}
	tv, tl = len(rep.bad), len(rep.lost)
	fmt.Fprintf(&b, "| **total** | (whole run, faults and quiet time) | %d | | | | | %d | %d | %d | %d |\n", tn, tf, to, tv, tl)
	return b.String()
}

// goals states how the run did against the targets of issue 8.
func (rep report) goals(short bool, faults int) []string {
	var kills []time.Duration
	for _, r := range rep.results {
		if r.Scenario == "kill-leader" && r.Writes >= 0 {
			kills = append(kills, r.Writes)
		}
	}
	var out []string
	if len(kills) > 0 {
		s := slices.Clone(kills)
		slices.Sort(s)
		med := s[len(s)/2]
		verdict := "met"
		if med > 2*time.Second {
			verdict = "MISSED"
		}
		out = append(out, fmt.Sprintf("goal: writes back through the LB within 2s of a leader kill (median over %d kills): %s, %s", len(s), fmtDur(med), verdict))
	}
	verdict := "met"
	if len(rep.bad) > 0 || len(rep.lost) > 0 {
		verdict = "MISSED"
	}
	out = append(out, fmt.Sprintf("goal: 0 violations and 0 lost acknowledged writes: %d / %d, %s", len(rep.bad), len(rep.lost), verdict))
	if !short {
		verdict = "met"
		if len(rep.recs) < 1000 || faults < 30 {
			verdict = "MISSED"
		}
		out = append(out, fmt.Sprintf("goal: >= 1,000 operations and >= 30 faults: %d operations, %d faults, %s", len(rep.recs), faults, verdict))
	}
	return out
}

func (rep report) markdown(cmd string, short bool, seed, nFaults, clients int, summary string, goals, unexpected []string) string {
	var b strings.Builder
	mode := "long"
	if short {
		mode = "short"
	}
	fmt.Fprintf(&b, "# End-to-end robustness results\n\n")
	fmt.Fprintf(&b, "Generated by the `e2e` suite (%s mode) on %s.\n\n", mode, time.Now().UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&b, "```sh\n%s\n```\n\n", cmd)
	fmt.Fprintf(&b, "Cluster: `DISPATCHER_DEBUG_PORTS=1 deploy/cluster.sh up` (3 nodes + haproxy, docker-compose). "+
		"Workload: %d clients through the load balancer (127.0.0.1:8081) submitting (idempotent `jobId`), reading "+
		"(`?consistent=true`) and cancelling jobs from a sliding window of 6 job ids; every operation is a porcupine "+
		"operation, checked per job id. Faults: every scenario once, then ", clients)
	if short {
		fmt.Fprintf(&b, "none (short mode).\n\n")
	} else {
		fmt.Fprintf(&b, "%d picked at random with seed %d (`E2E_FAULTS`, `E2E_SEED`).\n\n", nFaults, seed)
	}
	b.WriteString(rep.table())
	fmt.Fprintf(&b, "\n%s.\n\n", summary)
	for _, g := range goals {
		fmt.Fprintf(&b, "- %s\n", g)
	}
	b.WriteString(`
Columns: *new leader* is the time from the fault until a surviving node reports a
new leader (only for faults that remove the leader; for compose-down-up, from
the start of ` + "`down`" + `). *writes back via LB* is the time
from the fault (the docker command; for the graceful stops of restart-follower
and rolling-restart, from the stopped node being gone; for compose-down-up,
from the start of ` + "`down`" + `) until the first successful write among those sent
through the load balancer once the fault was in effect: a probe sends an
idempotent re-submission (a Raft write) every 100 ms, open loop, 3 s timeout.
*longest write gap* is the longest time in the fault window without any
successful probe write. Single requests that were in flight to, or forwarded
to, a node when it died or froze can hang longer (until the client's timeout):
they show up as *failed requests*.
*recovery*: kill-subtask-node,
the job RUNNING again on another node; restart-follower (docker stop + start)
and partition, the node ready again; rolling-restart and compose-down-up, the whole operation.
*failed requests* are operations invoked during the fault window (fault until
the cluster is healthy again plus 1 s) without a definite answer (timeouts, 503,
connection errors). *operations* counts every operation invoked in the window.
`)
	if len(unexpected) > 0 {
		fmt.Fprintf(&b, "\nUnexpected answers:\n\n")
		for _, u := range unexpected {
			fmt.Fprintf(&b, "- `%s`\n", u)
		}
	}
	return b.String()
}
