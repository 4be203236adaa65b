package rest

import (
	"strings"
	"testing"
	"time"
)

func TestBackPressureLevelBoundaries(t *testing.T) {
	for r, want := range map[float64]string{0: "ok", 0.1: "ok", 0.1001: "low", 0.5: "low", 0.5001: "high", 1: "high"} {
		if got := backPressureLevel(r); got != want {
			t.Errorf("ratio %v: %s, want %s", r, got, want)
		}
	}
	v := vertexInfo(map[int]float64{0: 0.05, 1: 0.7, 2: 0.2}, nil, nil, time.Now())
	if v.Level != "high" || v.LegacyLevel != "high" || len(v.Subtasks) != 3 || v.Subtasks[1].Level != "high" || v.Subtasks[2].Level != "low" {
		t.Errorf("vertex takes its worst subtask, subtasks sorted: %+v", v)
	}
}

// ev builds evidence: a chain vertex with its inputs, level and pools.
func ev(id string, inputs []string, level string, in, out float64) *bpEvidence {
	return &bpEvidence{ID: id, Name: id, Inputs: inputs, Level: level, InPoolUsage: in, OutPoolUsage: out,
		Suspect:  len(inputs) > 0 && in >= inPoolFull && out < outPoolNotFull,
		Subtasks: []bpSubtaskEvidence{{Subtask: 0, InPoolUsage: in, OutPoolUsage: out}}}
}

func judgeChain(vs ...*bpEvidence) (*bpBottleneck, string) {
	by := map[string]*bpEvidence{}
	for _, v := range vs {
		by[v.ID] = v
	}
	return judgeBottleneck(vs, by)
}

func TestBackPressureBottleneckRule(t *testing.T) {
	src := ev("src", nil, "high", 0, 1)
	// The first vertex downstream with a full input and a free output,
	// confirmed by a HIGH upstream.
	b, _ := judgeChain(src, ev("map", []string{"src"}, "high", 0.75, 1), ev("sleep", []string{"map"}, "ok", 0.75, 0), ev("out", []string{"sleep"}, "ok", 0, 0))
	if b == nil || b.ID != "sleep" || b.Upstream[0] != "map" || len(b.Subtasks) != 1 {
		t.Errorf("bottleneck %+v", b)
	}
	// A slow sink (no output pool at all).
	if b, _ := judgeChain(src, ev("sink", []string{"src"}, "ok", 1, 0)); b == nil || b.ID != "sink" {
		t.Errorf("slow sink: %+v", b)
	}
	// Full input but nothing upstream HIGH: not confirmed.
	b, why := judgeChain(ev("src", nil, "low", 0, 0.5), ev("map", []string{"src"}, "ok", 0.8, 0))
	if b != nil || !strings.Contains(why, "map (no upstream vertex is HIGH)") {
		t.Errorf("unconfirmed: %+v %q", b, why)
	}
	// Everything flows.
	b, why = judgeChain(ev("src", nil, "ok", 0, 0), ev("out", []string{"src"}, "ok", 0, 0))
	if b != nil || !strings.Contains(why, "keeps up") {
		t.Errorf("keeps up: %+v %q", b, why)
	}
	// HIGH without the pattern: named in the reason, no bottleneck.
	b, why = judgeChain(src, ev("out", []string{"src"}, "ok", 0.2, 0))
	if b != nil || !strings.Contains(why, "src is HIGH") {
		t.Errorf("high without a full input pool: %+v %q", b, why)
	}
}
