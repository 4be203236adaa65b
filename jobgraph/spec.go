// Package jobgraph is the job spec contract: the JSON shape of a job, its
// defaults, its validation (all problems reported at once), the built-in
// operator definitions with their parameters, and key-group assignment.
//
// A JobGraph is obtained from Parse. Parse fills every default into the
// exported fields, so json.Marshal of a parsed graph is again a valid spec that
// parses to the same graph.
package jobgraph

import (
	"encoding/json"
	"strconv"
	"strings"
	"time"
)

// JobGraph is a parsed, validated job. Field names are the JSON contract.
type JobGraph struct {
	JobID           string           `json:"jobId,omitempty"`
	Name            string           `json:"name"`
	Parallelism     int              `json:"parallelism,omitempty"`
	MaxParallelism  int              `json:"maxParallelism,omitempty"`
	Service         *Service         `json:"service,omitempty"`
	Checkpointing   *Checkpointing   `json:"checkpointing,omitempty"`
	RestartStrategy *RestartStrategy `json:"restartStrategy,omitempty"`
	// Params are job-level defaults for ${name} references in vertex params
	// (program arguments in Options.Args override them).
	Params   map[string]any `json:"params,omitempty"`
	Vertices []*Vertex      `json:"vertices"`

	order []*Vertex
	edges []Edge
	byID  map[string]*Vertex
}

// Vertex is one operator of the job with its parallelism and inputs.
type Vertex struct {
	ID          string  `json:"id"`
	Name        string  `json:"name,omitempty"`
	Operator    string  `json:"operator"`
	Parallelism int     `json:"parallelism,omitempty"`
	Inputs      []Input `json:"inputs,omitempty"`
	Params      Params  `json:"params,omitempty"`
}

// Input is an edge into a vertex: the upstream vertex and how records are
// shipped from its subtasks to this vertex's subtasks.
type Input struct {
	From string `json:"from"`
	Ship Ship   `json:"ship,omitempty"`
	// Key is a field name, or an expression (github.com/expr-lang/expr) over
	// the record's fields when it is not a plain field name. Only for hash.
	Key string `json:"key,omitempty"`
}

// Ship is a ship strategy (Flink's partitioner) of an edge.
type Ship string

const (
	// ShipForward sends subtask i's records to subtask i (equal parallelism).
	ShipForward Ship = "forward"
	// ShipRebalance distributes records round robin over all subtasks.
	ShipRebalance Ship = "rebalance"
	// ShipHash routes each record by the key group of its key.
	ShipHash Ship = "hash"
	// ShipBroadcast sends every record to every subtask.
	ShipBroadcast Ship = "broadcast"
)

// Edge is one input of a vertex, numbered in the order of Edges().
type Edge struct {
	Index int    `json:"index"`
	From  string `json:"from"`
	To    string `json:"to"`
	// Input is the position of this edge in To's Inputs.
	Input int    `json:"input"`
	Ship  Ship   `json:"ship"`
	Key   string `json:"key,omitempty"`
}

// Service names the owner of a job (free-form, kept for other packages).
type Service struct {
	Name         string `json:"name,omitempty"`
	Group        string `json:"group,omitempty"`
	Organization string `json:"organization,omitempty"`
}

// Checkpointing modes.
const (
	ExactlyOnce = "EXACTLY_ONCE"
	AtLeastOnce = "AT_LEAST_ONCE"
)

// Checkpointing configures periodic checkpoints (absent = disabled).
// Defaults are Flink's: mode EXACTLY_ONCE, timeout 10m, minPause 0, retained 1.
type Checkpointing struct {
	Interval Duration `json:"interval"`
	Mode     string   `json:"mode,omitempty"`
	Timeout  Duration `json:"timeout,omitempty"`
	MinPause Duration `json:"minPause,omitempty"`
	Retained int      `json:"retained,omitempty"`
}

// Restart strategy types.
const (
	RestartNone             = "none"
	RestartFixedDelay       = "fixed-delay"
	RestartExponentialDelay = "exponential-delay"
)

// RestartStrategy is what the cluster does when a subtask fails. Parse always
// fills it: when absent it is "none" without checkpointing and
// "exponential-delay" with checkpointing, as in Flink. Defaults per type are
// Flink's: fixed-delay attempts 1, delay 1s; exponential-delay initialBackoff
// 1s, maxBackoff 1m, backoffMultiplier 1.5, resetBackoffThreshold 1h,
// jitterFactor 0.1, attempts (before the backoff is reset) unlimited
// (math.MaxInt32).
type RestartStrategy struct {
	Type                  string   `json:"type"`
	Attempts              int      `json:"attempts,omitempty"`
	Delay                 Duration `json:"delay,omitempty"`
	InitialBackoff        Duration `json:"initialBackoff,omitempty"`
	MaxBackoff            Duration `json:"maxBackoff,omitempty"`
	BackoffMultiplier     float64  `json:"backoffMultiplier,omitempty"`
	ResetBackoffThreshold Duration `json:"resetBackoffThreshold,omitempty"`
	JitterFactor          float64  `json:"jitterFactor,omitempty"`
}

// Duration is a time.Duration written in a spec as a Go duration string
// ("500ms", "1s", "2m") or as a bare integer number of milliseconds.
// It is marshalled as a Go duration string.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// MarshalJSON writes d as a Go duration string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON accepts a duration string or an integer number of milliseconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	v, err := ParseDuration(strings.TrimSpace(string(b)))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// ParseDuration parses a JSON duration value: a quoted Go duration string
// or a bare integer of milliseconds (quoted digits also mean milliseconds).
func ParseDuration(raw string) (time.Duration, error) {
	if s, err := strconv.Unquote(raw); err == nil && strings.HasPrefix(raw, `"`) {
		raw = s
	}
	return parseDurationString(raw)
}

func parseDurationString(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n < 0 {
			return 0, &durationError{s}
		}
		return time.Duration(n) * time.Millisecond, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, &durationError{s}
	}
	return d, nil
}

type durationError struct{ s string }

func (e *durationError) Error() string {
	return "invalid duration " + strconv.Quote(e.s) + ` (want a Go duration like "500ms", "1s", "2m" or an integer of milliseconds)`
}

// Vertex returns the vertex with the given id, or nil.
func (g *JobGraph) Vertex(id string) *Vertex { return g.byID[id] }

// Topological returns the vertices in topological order (sources first).
func (g *JobGraph) Topological() []*Vertex { return g.order }

// Edges returns all edges, numbered by Edge.Index: vertices in topological
// order, and within a vertex its inputs in order.
func (g *JobGraph) Edges() []Edge { return g.edges }

// InEdges returns the edges into vertex id, in input order.
func (g *JobGraph) InEdges(id string) []Edge {
	var out []Edge
	for _, e := range g.edges {
		if e.To == id {
			out = append(out, e)
		}
	}
	return out
}

// OutEdges returns the edges out of vertex id, in edge order.
func (g *JobGraph) OutEdges(id string) []Edge {
	var out []Edge
	for _, e := range g.edges {
		if e.From == id {
			out = append(out, e)
		}
	}
	return out
}

// MaxVertexParallelism is the largest vertex parallelism: the number of slots
// the job needs with slot sharing.
func (g *JobGraph) MaxVertexParallelism() int {
	m := 0
	for _, v := range g.Vertices {
		m = max(m, v.Parallelism)
	}
	return m
}
