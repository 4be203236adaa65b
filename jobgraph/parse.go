package jobgraph

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"strings"
	"time"
)

// Options are the node's limits a spec is validated against.
type Options struct {
	// InputDir and OutputDir are the directories that file-source and
	// file-sink paths are relative to. An empty dir refuses those operators.
	InputDir, OutputDir string
	// AllowExec permits the exec operator, for commands inside ExecPaths.
	AllowExec bool
	ExecPaths []string
	// Args are program arguments for ${name} references in vertex params;
	// they override the job's own params.
	Args map[string]string
}

// ValidationError lists every problem found in a spec.
type ValidationError struct {
	Problems []string
}

func (e *ValidationError) Error() string {
	return "invalid job spec: " + strings.Join(e.Problems, "; ")
}

var (
	jobIDPattern    = regexp.MustCompile(`^[0-9a-f]{32}$`)
	vertexIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)
)

// Parse decodes, defaults and validates a job spec. On failure the error is
// a *ValidationError carrying all problems. Unknown JSON fields are ignored.
//
// Defaults: parallelism 1 (job level, used by vertices without one);
// maxParallelism by Flink's rule over the largest vertex parallelism;
// vertex name "<operator>:<id>"; ship forward when parallelisms are equal,
// rebalance otherwise; checkpointing and restart strategy as documented on
// their types.
func Parse(data []byte, opts Options) (*JobGraph, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var g JobGraph
	if err := dec.Decode(&g); err != nil {
		return nil, &ValidationError{Problems: []string{"malformed JSON: " + err.Error()}}
	}
	if dec.More() {
		return nil, &ValidationError{Problems: []string{"malformed JSON: data after the job object"}}
	}
	v := &validator{g: &g, opts: opts}
	v.check()
	if len(v.problems) > 0 {
		return nil, &ValidationError{Problems: v.problems}
	}
	return &g, nil
}

type validator struct {
	g        *JobGraph
	opts     Options
	problems []string
}

func (v *validator) addf(format string, args ...any) {
	v.problems = append(v.problems, fmt.Sprintf(format, args...))
}

func (v *validator) check() {
	g := v.g
	if strings.TrimSpace(g.Name) == "" {
		v.addf("name is required")
	}
	if g.JobID != "" && !jobIDPattern.MatchString(g.JobID) {
		v.addf("jobId %q must be 32 lowercase hex characters", g.JobID)
	}
	if g.Parallelism == 0 {
		g.Parallelism = 1
	} else if g.Parallelism < 0 {
		v.addf("parallelism %d must be at least 1", g.Parallelism)
		g.Parallelism = 1
	}
	v.checkCheckpointing()
	v.checkRestart()
	if len(g.Vertices) == 0 {
		v.addf("the job has no vertices")
		return
	}
	g.byID = map[string]*Vertex{}
	for i, vx := range g.Vertices {
		if vx == nil {
			v.addf("vertex #%d is null", i)
			g.Vertices[i] = &Vertex{}
			vx = g.Vertices[i]
		}
		switch {
		case !vertexIDPattern.MatchString(vx.ID):
			v.addf("vertex #%d: invalid id %q (letters, digits, _ . -, at most 64, starting with a letter or digit)", i, vx.ID)
		case g.byID[vx.ID] != nil:
			v.addf("duplicate vertex id %q", vx.ID)
		default:
			g.byID[vx.ID] = vx
		}
		if vx.Parallelism == 0 {
			vx.Parallelism = g.Parallelism
		}
		if vx.Name == "" {
			vx.Name = vx.Operator + ":" + vx.ID
		}
	}
	if g.MaxParallelism == 0 {
		g.MaxParallelism = DefaultMaxParallelism(g.MaxVertexParallelism())
	} else if g.MaxParallelism < 1 || g.MaxParallelism > UpperBoundMaxParallelism {
		v.addf("maxParallelism %d must be between 1 and %d", g.MaxParallelism, UpperBoundMaxParallelism)
	}
	for _, vx := range g.Vertices {
		v.checkVertex(vx)
	}
	v.order()
}

func (v *validator) checkVertex(vx *Vertex) {
	g := v.g
	where := fmt.Sprintf("vertex %q", vx.ID)
	if vx.Parallelism < 1 || vx.Parallelism > g.MaxParallelism {
		v.addf("%s: parallelism %d must be between 1 and maxParallelism %d", where, vx.Parallelism, g.MaxParallelism)
	}
	def, known := Operator(vx.Operator)
	if !known {
		v.addf("%s: unknown operator %q (known: %s)", where, vx.Operator, strings.Join(OperatorNames(), ", "))
	}
	for i := range vx.Inputs {
		in := &vx.Inputs[i]
		iw := fmt.Sprintf("%s input #%d", where, i)
		up := g.byID[in.From]
		switch {
		case in.From == "":
			v.addf("%s: missing from", iw)
		case up == nil:
			v.addf("%s: unknown vertex %q", iw, in.From)
		}
		if in.Ship == "" && up != nil {
			in.Ship = ShipRebalance
			if up.Parallelism == vx.Parallelism {
				in.Ship = ShipForward
			}
		}
		switch in.Ship {
		case ShipForward:
			if up != nil && up.Parallelism != vx.Parallelism {
				v.addf("%s: forward from %q needs equal parallelism (%d != %d); use rebalance or hash", iw, in.From, up.Parallelism, vx.Parallelism)
			}
		case ShipHash:
			if in.Key == "" {
				v.addf("%s: hash needs a key", iw)
			} else if !IsFieldName(in.Key) {
				if _, err := CompileExpr(in.Key); err != nil {
					v.addf("%s: key expression does not compile: %s", iw, firstLine(err.Error()))
				}
			}
		case ShipRebalance, ShipBroadcast, "":
		default:
			v.addf("%s: unknown ship strategy %q (forward, rebalance, hash, broadcast)", iw, in.Ship)
		}
		if in.Key != "" && in.Ship != ShipHash && in.Ship != "" {
			v.addf("%s: key is only valid with ship hash", iw)
		}
		if known && def.Kind == KindKeyed && in.Ship != ShipHash && in.Ship != "" {
			v.addf("%s: keyed operator %q needs a hash input, got %s", iw, vx.Operator, in.Ship)
		}
	}
	if !known {
		return
	}
	switch def.Kind {
	case KindSource:
		if len(vx.Inputs) > 0 {
			v.addf("%s: source %q cannot have inputs", where, vx.Operator)
		}
	case KindTransform, KindKeyed, KindSink:
		if len(vx.Inputs) == 0 {
			v.addf("%s: operator %q needs at least one input", where, vx.Operator)
		}
	}
	v.substitute(where, vx)
	for _, p := range checkParams(def, vx.Params, v.opts) {
		v.addf("%s: %s", where, p)
	}
}

var refPattern = regexp.MustCompile(`\$\{([A-Za-z0-9_.-]+)\}`)

// substitute replaces ${name} in string params with program args or job
// params. A string that is exactly one reference takes the value's type
// (an arg that is valid JSON, like 42 or true, becomes that value).
func (v *validator) substitute(where string, vx *Vertex) {
	lookup := func(name string) (any, bool) {
		if a, ok := v.opts.Args[name]; ok {
			var typed any
			d := json.NewDecoder(strings.NewReader(a))
			d.UseNumber()
			if err := d.Decode(&typed); err == nil && !d.More() {
				if _, isObj := typed.(map[string]any); !isObj {
					return typed, true
				}
			}
			return a, true
		}
		p, ok := v.g.Params[name]
		return p, ok
	}
	var subst func(x any) any
	subst = func(x any) any {
		switch s := x.(type) {
		case string:
			if !strings.Contains(s, "${") {
				return s
			}
			if m := refPattern.FindStringSubmatch(s); m != nil && m[0] == s {
				if val, ok := lookup(m[1]); ok {
					return val
				}
				v.addf("%s: unresolved reference ${%s}", where, m[1])
				return s
			}
			return refPattern.ReplaceAllStringFunc(s, func(ref string) string {
				name := ref[2 : len(ref)-1]
				val, ok := lookup(name)
				if !ok {
					v.addf("%s: unresolved reference ${%s}", where, name)
					return ref
				}
				if str, isStr := val.(string); isStr {
					return str
				}
				b, _ := json.Marshal(val)
				return string(b)
			})
		case []any:
			for i := range s {
				s[i] = subst(s[i])
			}
		}
		return x
	}
	for k, x := range vx.Params {
		vx.Params[k] = subst(x)
	}
}

// order sorts vertices topologically (Kahn, stable in spec order), reports
// cycles and builds the edge list.
func (v *validator) order() {
	g := v.g
	indeg := map[*Vertex]int{}
	down := map[*Vertex][]*Vertex{}
	for _, vx := range g.Vertices {
		for _, in := range vx.Inputs {
			if up := g.byID[in.From]; up != nil {
				indeg[vx]++
				down[up] = append(down[up], vx)
			}
		}
	}
	var order []*Vertex
	done := map[*Vertex]bool{}
	for len(order) < len(g.Vertices) {
		progressed := false
		for _, vx := range g.Vertices {
			if !done[vx] && indeg[vx] == 0 {
				done[vx] = true
				order = append(order, vx)
				progressed = true
				for _, d := range down[vx] {
					indeg[d]--
				}
			}
		}
		if !progressed {
			var cyc []string
			for _, vx := range g.Vertices {
				if !done[vx] {
					cyc = append(cyc, fmt.Sprintf("%q", vx.ID))
				}
			}
			v.addf("the graph has a cycle through %s", strings.Join(cyc, ", "))
			return
		}
	}
	g.order = order
	g.edges = nil
	for _, vx := range order {
		for i, in := range vx.Inputs {
			g.edges = append(g.edges, Edge{Index: len(g.edges), From: in.From, To: vx.ID, Input: i, Ship: in.Ship, Key: in.Key})
		}
	}
}

func (v *validator) checkCheckpointing() {
	c := v.g.Checkpointing
	if c == nil {
		return
	}
	if c.Interval.D() < 10*time.Millisecond {
		v.addf("checkpointing.interval must be at least 10ms")
	}
	switch c.Mode {
	case "":
		c.Mode = ExactlyOnce
	case ExactlyOnce, AtLeastOnce:
	default:
		v.addf("checkpointing.mode %q must be %s or %s", c.Mode, ExactlyOnce, AtLeastOnce)
	}
	if c.Timeout == 0 {
		c.Timeout = Duration(10 * time.Minute)
	} else if c.Timeout.D() < 10*time.Millisecond {
		v.addf("checkpointing.timeout must be at least 10ms")
	}
	if c.Retained == 0 {
		c.Retained = 1
	} else if c.Retained < 0 {
		v.addf("checkpointing.retained %d must be at least 1", c.Retained)
	}
}

func (v *validator) checkRestart() {
	r := v.g.RestartStrategy
	if r == nil {
		r = &RestartStrategy{Type: RestartNone}
		if v.g.Checkpointing != nil {
			r.Type = RestartExponentialDelay
		}
		v.g.RestartStrategy = r
	}
	if r.Attempts < 0 {
		v.addf("restartStrategy.attempts %d must not be negative", r.Attempts)
	}
	switch r.Type {
	case RestartNone:
	case RestartFixedDelay:
		if r.Attempts == 0 {
			r.Attempts = 1
		}
		if r.Delay == 0 {
			r.Delay = Duration(time.Second)
		}
	case RestartExponentialDelay:
		if r.Attempts == 0 {
			r.Attempts = math.MaxInt32
		}
		if r.InitialBackoff == 0 {
			r.InitialBackoff = Duration(time.Second)
		}
		if r.MaxBackoff == 0 {
			r.MaxBackoff = Duration(time.Minute)
		}
		if r.BackoffMultiplier == 0 {
			r.BackoffMultiplier = 1.5
		}
		if r.ResetBackoffThreshold == 0 {
			r.ResetBackoffThreshold = Duration(time.Hour)
		}
		if r.JitterFactor == 0 {
			r.JitterFactor = 0.1
		}
		if r.BackoffMultiplier < 1 {
			v.addf("restartStrategy.backoffMultiplier %g must be at least 1", r.BackoffMultiplier)
		}
		if r.JitterFactor < 0 || r.JitterFactor > 1 {
			v.addf("restartStrategy.jitterFactor %g must be between 0 and 1", r.JitterFactor)
		}
		if r.MaxBackoff < r.InitialBackoff {
			v.addf("restartStrategy.maxBackoff must not be smaller than initialBackoff")
		}
	default:
		v.addf("restartStrategy.type %q must be none, fixed-delay or exponential-delay", r.Type)
	}
}
