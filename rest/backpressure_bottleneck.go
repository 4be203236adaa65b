package rest

import (
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/dispatcher-dev/dispatcher/fsm"
)

// The likely bottleneck of a job (seed 003's rule): back pressure flows
// upstream, so buffers pile up in the output of the tasks upstream of the
// slow one and in its own input. The first task, downstream from the
// sources, whose input pool is full while its output pool is not, is the
// likely cause; the back-pressure ratios of the tasks feeding it confirm
// it.
//
// inPoolUsage here counts the buffers waiting in a subtask's input queue
// but not the one it is processing, so a saturated single-channel input
// (4 credits) reads 0.75 rather than 1.0: "full" is inPoolUsage >= 0.7.
// outPoolUsage counts every buffer sent and not yet consumed downstream, so
// it reaches 1.0; a back-pressured subtask's stays near 1.0 while a
// subtask that keeps up reads near 0, and "not full" is < 0.5.
const (
	inPoolFull     = 0.7
	outPoolNotFull = 0.5
)

const bottleneckRule = "The likely bottleneck is the first vertex in topological order (sources first) " +
	"that has a subtask whose input pool is full (inPoolUsage >= 0.7) while its output pool is not (outPoolUsage < 0.5), " +
	"that is not itself HIGH, and that has at least one direct upstream vertex whose back pressure is HIGH " +
	"(by the sampled ratio, or by the time-based ratio until a sample exists): the upstream vertices wait for it, " +
	"it does not wait for anything downstream."

// bpEvidence is what the rule looked at for one vertex.
type bpEvidence struct {
	ID          string   `json:"id"`
	Name        string   `json:"name"`
	Parallelism int      `json:"parallelism"`
	Inputs      []string `json:"inputs"`
	// Level is the sampled level when a sample exists, else the time-based
	// one; LevelFrom says which.
	Level        string   `json:"backpressureLevel"`
	LevelFrom    string   `json:"levelFrom"`
	SampledLevel *string  `json:"sampledLevel"`
	SampledRatio *float64 `json:"sampledRatio"`
	TimeLevel    string   `json:"timeLevel"`
	TimeRatio    float64  `json:"timeRatio"`
	BusyRatio    float64  `json:"busyRatio"`
	IdleRatio    float64  `json:"idleRatio"`
	InPoolUsage  float64  `json:"inPoolUsage"`
	OutPoolUsage float64  `json:"outPoolUsage"`
	// Suspect: a subtask has a full input pool and a non-full output pool.
	Suspect  bool                `json:"inputFullOutputNot"`
	Subtasks []bpSubtaskEvidence `json:"subtasks"`
	sampled  map[int]float64     // by subtask
}

type bpSubtaskEvidence struct {
	Subtask      int      `json:"subtask"`
	Node         string   `json:"node"`
	SampledRatio *float64 `json:"sampledRatio"`
	TimeRatio    float64  `json:"timeRatio"`
	BusyRatio    float64  `json:"busyRatio"`
	IdleRatio    float64  `json:"idleRatio"`
	InPoolUsage  float64  `json:"inPoolUsage"`
	OutPoolUsage float64  `json:"outPoolUsage"`
	InputQueue   int      `json:"inputQueueLength"`
	OutputQueue  int      `json:"outputQueueLength"`
}

type bpBottleneck struct {
	ID       string   `json:"id"`
	Name     string   `json:"name"`
	Subtasks []int    `json:"subtasks"`
	Upstream []string `json:"highUpstream"`
	Why      string   `json:"why"`
}

type bpJob struct {
	JobID      string        `json:"jid"`
	Name       string        `json:"name"`
	State      string        `json:"state"`
	Timestamp  int64         `json:"timestamp"`
	Sampling   bool          `json:"sampling"`
	Rule       string        `json:"rule"`
	Bottleneck *bpBottleneck `json:"bottleneck"`
	Reason     string        `json:"reason,omitempty"`
	Vertices   []*bpEvidence `json:"vertices"`
}

// getJobBackPressure names the likely bottleneck with the evidence. Like
// the vertex route it never waits for a sample: it starts the missing or
// stale ones and judges by what it has.
func (t *backPressureTracker) getJobBackPressure(c *gin.Context) {
	js, ok := t.s.bpLookupJob(c)
	if !ok {
		return
	}
	j := js.job
	out := bpJob{JobID: j.ID, Name: j.Name, State: j.State, Timestamp: time.Now().UnixMilli(), Rule: bottleneckRule, Vertices: []*bpEvidence{}}
	if j.State != fsm.JobRunning {
		out.Reason = "the job is " + j.State + ": no subtask runs to measure"
		c.PureJSON(http.StatusOK, out)
		return
	}
	live := t.s.subtasks.get(c.Request.Context(), j)
	byID := map[string]*bpEvidence{}
	for _, v := range js.order {
		ev := &bpEvidence{ID: v.ID, Name: v.Name, Parallelism: v.Parallelism, Inputs: []string{}, Subtasks: []bpSubtaskEvidence{}}
		for _, in := range v.Inputs {
			ev.Inputs = append(ev.Inputs, in.From)
		}
		res, sampling := t.view(j, v.ID)
		out.Sampling = out.Sampling || sampling
		if res != nil {
			ev.sampled = res.ratios
		}
		n := 0
		for i := 0; i < v.Parallelism; i++ {
			se := bpSubtaskEvidence{Subtask: i}
			if nodes := j.Placement[v.ID]; i < len(nodes) {
				se.Node = nodes[i]
			}
			if r, ok := ev.sampled[i]; ok {
				r = round4(r)
				se.SampledRatio = &r
				if ev.SampledRatio == nil || r > *ev.SampledRatio {
					ev.SampledRatio = &r
				}
			}
			if st, ok := live[fsm.SubtaskKey(v.ID, i)]; ok {
				m := st.Metrics
				se.TimeRatio, se.BusyRatio, se.IdleRatio = round4(m.BackPressuredTimeMsPerSecond/1000), round4(m.BusyTimeMsPerSecond/1000), round4(m.IdleTimeMsPerSecond/1000)
				se.InPoolUsage, se.OutPoolUsage = round4(m.InPoolUsage), round4(m.OutPoolUsage)
				se.InputQueue, se.OutputQueue = m.InputQueueLength, m.OutputQueueLength
				ev.TimeRatio = max(ev.TimeRatio, se.TimeRatio)
				ev.BusyRatio += se.BusyRatio
				ev.IdleRatio += se.IdleRatio
				ev.InPoolUsage = max(ev.InPoolUsage, se.InPoolUsage)
				ev.OutPoolUsage = max(ev.OutPoolUsage, se.OutPoolUsage)
				if len(v.Inputs) > 0 && se.InPoolUsage >= inPoolFull && se.OutPoolUsage < outPoolNotFull {
					ev.Suspect = true
				}
				n++
			}
			ev.Subtasks = append(ev.Subtasks, se)
		}
		if n > 0 {
			ev.BusyRatio, ev.IdleRatio = round4(ev.BusyRatio/float64(n)), round4(ev.IdleRatio/float64(n))
		}
		ev.TimeLevel = backPressureLevel(ev.TimeRatio)
		ev.Level, ev.LevelFrom = ev.TimeLevel, "time"
		if ev.SampledRatio != nil {
			l := backPressureLevel(*ev.SampledRatio)
			ev.SampledLevel = &l
			ev.Level, ev.LevelFrom = l, "sample"
		}
		out.Vertices = append(out.Vertices, ev)
		byID[v.ID] = ev
	}
	if len(live) == 0 {
		out.Reason = "no live metrics arrived from the job's subtasks yet"
		c.PureJSON(http.StatusOK, out)
		return
	}
	out.Bottleneck, out.Reason = judgeBottleneck(out.Vertices, byID)
	c.PureJSON(http.StatusOK, out)
}

// judge applies the rule to the evidence, in topological order.
func judgeBottleneck(order []*bpEvidence, byID map[string]*bpEvidence) (*bpBottleneck, string) {
	var unconfirmed []string
	for _, ev := range order {
		if !ev.Suspect {
			continue
		}
		if ev.Level == levelHigh {
			unconfirmed = append(unconfirmed, ev.ID+" (itself HIGH)")
			continue
		}
		var high []string
		for _, up := range ev.Inputs {
			if u := byID[up]; u != nil && u.Level == levelHigh {
				high = append(high, up)
			}
		}
		if len(high) == 0 {
			unconfirmed = append(unconfirmed, ev.ID+" (no upstream vertex is HIGH)")
			continue
		}
		b := &bpBottleneck{ID: ev.ID, Name: ev.Name, Subtasks: []int{}, Upstream: high}
		for _, se := range ev.Subtasks {
			if se.InPoolUsage >= inPoolFull && se.OutPoolUsage < outPoolNotFull {
				b.Subtasks = append(b.Subtasks, se.Subtask)
			}
		}
		b.Why = fmt.Sprintf("%s has a full input pool (inPoolUsage %.2f) and a non-full output pool (outPoolUsage %.2f), is %s itself, and its upstream %s %s HIGH",
			ev.ID, ev.InPoolUsage, ev.OutPoolUsage, strings.ToUpper(ev.Level), strings.Join(high, ", "), isAre(len(high)))
		return b, ""
	}
	if len(unconfirmed) > 0 {
		return nil, "no confirmed bottleneck: full input pool but not confirmed in " + strings.Join(unconfirmed, ", ")
	}
	var highs []string
	for _, ev := range order {
		if ev.Level == levelHigh {
			highs = append(highs, ev.ID)
		}
	}
	sort.Strings(highs)
	if len(highs) > 0 {
		return nil, "no vertex has a full input pool with a non-full output pool, although " + strings.Join(highs, ", ") + " " + isAre(len(highs)) +
			" HIGH: the pressure may come from outside the job (a sink's external system) or the pools were caught between buffers"
	}
	return nil, "no vertex has a full input pool with a non-full output pool and nothing is HIGH: the job keeps up"
}

func isAre(n int) string {
	if n == 1 {
		return "is"
	}
	return "are"
}
