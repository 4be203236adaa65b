package jobgraph

import (
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

var testOpts = Options{InputDir: "/data/in", OutputDir: "/data/out", AllowExec: true, ExecPaths: []string{"/usr/bin", "/opt/tools/"}}

const wordCount = `{
  "name": "word-count",
  "maxParallelism": 128,
  "vertices": [
    {"id": "words", "operator": "datagen", "parallelism": 2, "params": {"kind": "words", "count": 1000000, "seed": 7}},
    {"id": "count", "operator": "count", "parallelism": 4, "inputs": [{"from": "words", "ship": "hash", "key": "word"}]},
    {"id": "out", "operator": "file-sink", "parallelism": 1, "inputs": [{"from": "count", "ship": "rebalance"}], "params": {"path": "word-count"}}
  ]
}`

func TestParseWordCount(t *testing.T) {
	g, err := Parse([]byte(wordCount), testOpts)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, v := range g.Topological() {
		ids = append(ids, v.ID)
	}
	if strings.Join(ids, ",") != "words,count,out" {
		t.Errorf("order %v", ids)
	}
	edges := g.Edges()
	if len(edges) != 2 || edges[0] != (Edge{Index: 0, From: "words", To: "count", Ship: ShipHash, Key: "word"}) ||
		edges[1] != (Edge{Index: 1, From: "count", To: "out", Ship: ShipRebalance}) {
		t.Errorf("edges %+v", edges)
	}
	if g.Vertex("count").Name != "count:count" || g.MaxParallelism != 128 || g.Parallelism != 1 {
		t.Errorf("defaults: %+v", g)
	}
	if n := g.Vertex("words").Params.IntOr("count", 0); n != 1000000 {
		t.Errorf("count param = %d", n)
	}
	if g.RestartStrategy == nil || g.RestartStrategy.Type != RestartNone {
		t.Errorf("restart strategy %+v", g.RestartStrategy)
	}
	// A parsed graph marshals to a spec that parses to the same graph.
	b, err := json.Marshal(g)
	if err != nil {
		t.Fatal(err)
	}
	g2, err := Parse(b, testOpts)
	if err != nil {
		t.Fatalf("reparse: %v\n%s", err, b)
	}
	b2, _ := json.Marshal(g2)
	if string(b) != string(b2) {
		t.Errorf("round trip differs:\n%s\n%s", b, b2)
	}
}

func TestDefaults(t *testing.T) {
	spec := `{"name":"d","parallelism":3,"jobId":"0123456789abcdef0123456789abcdef",
	  "checkpointing":{"interval":"30s"},
	  "vertices":[
	    {"id":"s","operator":"sequence","parallelism":100,"params":{"to":10}},
	    {"id":"m","operator":"map","parallelism":100,"inputs":[{"from":"s"}],"params":{"expr":"{\"n\": n}"}},
	    {"id":"k","operator":"discard","inputs":[{"from":"m"}]}]}`
	g, err := Parse([]byte(spec), testOpts)
	if err != nil {
		t.Fatal(err)
	}
	if g.MaxParallelism != 256 {
		t.Errorf("maxParallelism = %d, want 256 (roundUpPow2(150))", g.MaxParallelism)
	}
	if g.Vertex("k").Parallelism != 3 {
		t.Errorf("job parallelism not applied: %d", g.Vertex("k").Parallelism)
	}
	if g.Vertex("m").Inputs[0].Ship != ShipForward || g.Vertex("k").Inputs[0].Ship != ShipRebalance {
		t.Errorf("default ships: %v %v", g.Vertex("m").Inputs[0].Ship, g.Vertex("k").Inputs[0].Ship)
	}
	c := g.Checkpointing
	if c.Interval.D() != 30*time.Second || c.Mode != ExactlyOnce || c.Timeout.D() != 10*time.Minute || c.Retained != 1 {
		t.Errorf("checkpointing %+v", c)
	}
	r := g.RestartStrategy
	want := RestartStrategy{Type: RestartExponentialDelay, Attempts: math.MaxInt32, InitialBackoff: Duration(time.Second),
		MaxBackoff: Duration(time.Minute), BackoffMultiplier: 1.5, ResetBackoffThreshold: Duration(time.Hour), JitterFactor: 0.1}
	if *r != want {
		t.Errorf("restart %+v, want %+v", *r, want)
	}
	g, err = Parse([]byte(`{"name":"f","restartStrategy":{"type":"fixed-delay"},"vertices":[{"id":"s","operator":"sequence"},{"id":"d","operator":"discard","inputs":[{"from":"s"}]}]}`), testOpts)
	if err != nil {
		t.Fatal(err)
	}
	if *g.RestartStrategy != (RestartStrategy{Type: RestartFixedDelay, Attempts: 1, Delay: Duration(time.Second)}) {
		t.Errorf("fixed-delay defaults %+v", *g.RestartStrategy)
	}
}

func TestDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{`"500ms"`: 500 * time.Millisecond, `"1s"`: time.Second, `"2m"`: 2 * time.Minute, `250`: 250 * time.Millisecond, `"1500"`: 1500 * time.Millisecond} {
		var d Duration
		if err := json.Unmarshal([]byte(in), &d); err != nil || d.D() != want {
			t.Errorf("%s: %v %v", in, d.D(), err)
		}
	}
	for _, in := range []string{`"soon"`, `-5`, `"-1s"`, `1.5`, `true`} {
		var d Duration
		if err := json.Unmarshal([]byte(in), &d); err == nil {
			t.Errorf("%s accepted as %v", in, d.D())
		}
	}
	b, _ := json.Marshal(Duration(1500 * time.Millisecond))
	if string(b) != `"1.5s"` {
		t.Errorf("marshal: %s", b)
	}
	p := Params{"a": json.Number("100"), "b": "2s"}
	if p.DurationOr("a", 0) != 100*time.Millisecond || p.DurationOr("b", 0) != 2*time.Second {
		t.Errorf("param durations %v %v", p.DurationOr("a", 0), p.DurationOr("b", 0))
	}
}

func TestSubstitution(t *testing.T) {
	spec := `{"name":"s","params":{"n":5,"dir":"x"},"vertices":[
	  {"id":"s","operator":"sequence","params":{"to":"${n}","ratePerSecond":"${rate}"}},
	  {"id":"o","operator":"file-sink","inputs":[{"from":"s"}],"params":{"path":"out-${dir}"}}]}`
	g, err := Parse([]byte(spec), Options{OutputDir: "/o", Args: map[string]string{"rate": "100", "dir": "y"}})
	if err != nil {
		t.Fatal(err)
	}
	p := g.Vertex("s").Params
	if p.IntOr("to", 0) != 5 || p.FloatOr("ratePerSecond", 0) != 100 || g.Vertex("o").Params.StringOr("path", "") != "out-y" {
		t.Errorf("substituted params %v %v", p, g.Vertex("o").Params)
	}
	_, err = Parse([]byte(spec), Options{OutputDir: "/o"})
	wantProblems(t, err, "unresolved reference ${rate}")
}

func wantProblems(t *testing.T, err error, want ...string) {
	t.Helper()
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("error %v is not a *ValidationError", err)
	}
	all := strings.Join(ve.Problems, "\n")
	for _, w := range want {
		if !strings.Contains(all, w) {
			t.Errorf("problems do not mention %q:\n%s", w, all)
		}
	}
	if len(ve.Problems) < len(want) {
		t.Errorf("got %d problems, want at least %d:\n%s", len(ve.Problems), len(want), all)
	}
}

func TestBadSpecs(t *testing.T) {
	cases := []struct {
		name string
		opts *Options
		spec string
		want []string
	}{
		{"malformed", nil, `{"name":`, []string{"malformed JSON"}},
		{"no vertices", nil, `{"name":"x","vertices":[]}`, []string{"no vertices"}},
		{"unknown operator and input", nil, `{"name":"x","vertices":[
			{"id":"a","operator":"nope"},
			{"id":"b","operator":"discard","inputs":[{"from":"zz"}]},
			{"id":"c","operator":"discard","inputs":[{}]}]}`,
			[]string{`unknown operator "nope"`, `unknown vertex "zz"`, "missing from"}},
		{"cycle", nil, `{"name":"x","vertices":[
			{"id":"s","operator":"sequence"},
			{"id":"a","operator":"map","inputs":[{"from":"s"},{"from":"b"}],"params":{"expr":"x"}},
			{"id":"b","operator":"map","inputs":[{"from":"a"}],"params":{"expr":"x"}}]}`,
			[]string{`cycle through "a", "b"`}},
		{"source with inputs, sink without", nil, `{"name":"x","vertices":[
			{"id":"s","operator":"sequence"},
			{"id":"t","operator":"sequence","inputs":[{"from":"s"}]},
			{"id":"d","operator":"discard"}]}`,
			[]string{`source "sequence" cannot have inputs`, `"discard" needs at least one input`}},
		{"forward unequal, parallelism range, duplicate, bad ids", nil, `{"name":"x","maxParallelism":8,"vertices":[
			{"id":"s","operator":"sequence","parallelism":2},
			{"id":"s","operator":"sequence"},
			{"id":"bad id!","operator":"sequence"},
			{"id":"m","operator":"map","parallelism":3,"inputs":[{"from":"s","ship":"forward"}],"params":{"expr":"n"}},
			{"id":"z","operator":"discard","parallelism":0,"inputs":[{"from":"m"}]},
			{"id":"big","operator":"discard","parallelism":9,"inputs":[{"from":"m"}]},
			{"id":"neg","operator":"discard","parallelism":-1,"inputs":[{"from":"m"}]}]}`,
			[]string{`duplicate vertex id "s"`, `invalid id "bad id!"`, "forward from \"s\" needs equal parallelism (2 != 3)",
				`vertex "big": parallelism 9 must be between 1 and maxParallelism 8`, `vertex "neg": parallelism -1`}},
		{"ship and key", nil, `{"name":"x","vertices":[
			{"id":"s","operator":"sequence"},
			{"id":"a","operator":"discard","inputs":[{"from":"s","ship":"sideways"}]},
			{"id":"b","operator":"count","inputs":[{"from":"s","ship":"hash"}]},
			{"id":"c","operator":"count","inputs":[{"from":"s","ship":"rebalance"}]},
			{"id":"d","operator":"count","inputs":[{"from":"s","ship":"hash","key":"n +* 2"}]},
			{"id":"e","operator":"discard","inputs":[{"from":"s","ship":"broadcast","key":"n"}]}]}`,
			[]string{`unknown ship strategy "sideways"`, "hash needs a key", `keyed operator "count" needs a hash input`,
				"key expression does not compile", "key is only valid with ship hash"}},
		{"params", nil, `{"name":"x","vertices":[
			{"id":"s","operator":"sequence","params":{"from":"one","to":1.5,"ratePerSecond":-1,"speed":3}},
			{"id":"g","operator":"datagen","params":{"kind":"tweets"}},
			{"id":"g2","operator":"datagen"},
			{"id":"m","operator":"map","inputs":[{"from":"s"}],"params":{"expr":"n +"}},
			{"id":"f","operator":"filter","inputs":[{"from":"s"}]},
			{"id":"w","operator":"window","inputs":[{"from":"s","ship":"hash","key":"n"}],"params":{"size":"10s","slide":"3s","agg":"sum"}},
			{"id":"w2","operator":"window","inputs":[{"from":"s","ship":"hash","key":"n"}],"params":{"size":"soon"}},
			{"id":"sl","operator":"sleep","inputs":[{"from":"s"}],"params":{"perRecord":true}},
			{"id":"q","operator":"sequence","params":{"from":10,"to":5}}]}`,
			[]string{`param "from": want an integer, got a string`, `param "to": want an integer, got 1.5`,
				`param "ratePerSecond" must be at least 0`, `unknown param "speed"`, `"tweets" is not one of`,
				`vertex "g2": param "kind" is required`, `vertex "m": param "expr": expression does not compile`,
				`vertex "f": param "expr" is required`, "size (10s) must be a multiple of slide (3s)",
				`agg "sum" needs a field`, `param "size": invalid duration "soon"`, `vertex "sl": param "perRecord"`,
				"to (5) is smaller than from (10)"}},
		{"paths", nil, `{"name":"x","vertices":[
			{"id":"a","operator":"file-source","params":{"path":"/etc/passwd"}},
			{"id":"b","operator":"file-source","params":{"path":"../secret"}},
			{"id":"c","operator":"file-source","params":{"path":"in/../../x"}},
			{"id":"d","operator":"file-sink","inputs":[{"from":"a"}],"params":{"path":"out/../../up"}},
			{"id":"e","operator":"file-sink","inputs":[{"from":"a"}],"params":{"path":""}}]}`,
			[]string{`vertex "a": param "path": path "/etc/passwd" must be relative`, `vertex "b": param "path": path "../secret" leaves`,
				`vertex "c": param "path": path "in/../../x" leaves`, `vertex "d": param "path": path "out/../../up" leaves`,
				`vertex "e": param "path": path is empty`}},
		{"no dirs configured", &Options{}, `{"name":"x","vertices":[
			{"id":"a","operator":"file-source","params":{"path":"in"}},
			{"id":"d","operator":"file-sink","inputs":[{"from":"a"}],"params":{"path":"out"}}]}`,
			[]string{"no input directory is configured", "no output directory is configured"}},
		{"exec not allowed", &Options{}, `{"name":"x","vertices":[{"id":"a","operator":"exec","params":{"command":"/bin/cat"}}]}`,
			[]string{"exec operator is not allowed"}},
		{"exec outside allowed dirs", nil, `{"name":"x","vertices":[
			{"id":"a","operator":"exec","params":{"command":"/bin/cat"}},
			{"id":"b","operator":"exec","params":{"command":"cat"}},
			{"id":"c","operator":"exec","params":{"command":"/usr/bin/../../bin/sh"}},
			{"id":"d","operator":"exec","params":{"command":"/opt/toolsx/run"}},
			{"id":"e","operator":"exec","params":{"command":"/usr/bin/cat","args":[1]}}]}`,
			[]string{`"/bin/cat" is not inside an allowed exec directory`, `"cat" must be a clean absolute path`,
				`"/usr/bin/../../bin/sh" must be a clean absolute path`, `"/opt/toolsx/run" is not inside`, `param "args": want an array of strings`}},
		{"top level", nil, `{"jobId":"XYZ","parallelism":-2,"maxParallelism":40000,
			"checkpointing":{"interval":"1ms","mode":"MAYBE"},
			"restartStrategy":{"type":"sometimes"},
			"vertices":[{"id":"s","operator":"sequence"},{"id":"d","operator":"discard","inputs":[{"from":"s"}]}]}`,
			[]string{"name is required", `jobId "XYZ"`, "parallelism -2", "maxParallelism 40000", "checkpointing.interval must be at least 10ms",
				`checkpointing.mode "MAYBE"`, `restartStrategy.type "sometimes"`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			opts := testOpts
			if c.opts != nil {
				opts = *c.opts
			}
			g, err := Parse([]byte(c.spec), opts)
			if err == nil {
				t.Fatalf("accepted: %+v", g)
			}
			wantProblems(t, err, c.want...)
		})
	}
}

func TestEveryOperatorValid(t *testing.T) {
	// One valid vertex per operator, all in one job: the definitions accept
	// their documented params.
	spec := `{"name":"all","vertices":[
	  {"id":"seq","operator":"sequence","params":{"from":1,"to":100,"ratePerSecond":0}},
	  {"id":"gen","operator":"datagen","params":{"kind":"nexmark-bids","count":10,"seed":3,"ratePerSecond":1000}},
	  {"id":"fs","operator":"file-source","params":{"path":"in/words.jsonl"}},
	  {"id":"map","operator":"map","inputs":[{"from":"seq"}],"params":{"expr":"{\"n\": n, \"sq\": n * n}"}},
	  {"id":"filter","operator":"filter","inputs":[{"from":"map"}],"params":{"expr":"n % 2 == 0"}},
	  {"id":"flat","operator":"flat-map","inputs":[{"from":"fs"}],"params":{"expr":"map(split(line, \" \"), {{\"word\": #}})"}},
	  {"id":"thr","operator":"throttle","inputs":[{"from":"filter"}],"params":{"ratePerSecond":10}},
	  {"id":"slp","operator":"sleep","inputs":[{"from":"thr"}],"params":{"perRecord":"1ms"}},
	  {"id":"cnt","operator":"count","inputs":[{"from":"flat","ship":"hash","key":"word"}]},
	  {"id":"sum","operator":"sum","inputs":[{"from":"gen","ship":"hash","key":"auction"}],"params":{"field":"price"}},
	  {"id":"min","operator":"min","inputs":[{"from":"gen","ship":"hash","key":"auction % 10"}],"params":{"field":"price"}},
	  {"id":"max","operator":"max","inputs":[{"from":"gen","ship":"hash","key":"bidder"}],"params":{"field":"price"}},
	  {"id":"win","operator":"window","inputs":[{"from":"gen","ship":"hash","key":"auction"}],"params":{"size":"10s","slide":"2s","agg":"avg","field":"price"}},
	  {"id":"exe","operator":"exec","inputs":[{"from":"slp"}],"params":{"command":"/usr/bin/cat","args":["-u"]}},
	  {"id":"out","operator":"file-sink","inputs":[{"from":"cnt"},{"from":"sum"}],"params":{"path":"out","rollSize":1000000}},
	  {"id":"log","operator":"log-sink","inputs":[{"from":"min"},{"from":"max"},{"from":"win"}]},
	  {"id":"dis","operator":"discard","inputs":[{"from":"exe","ship":"broadcast"}]}]}`
	g, err := Parse([]byte(spec), testOpts)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, v := range g.Vertices {
		seen[v.Operator] = true
	}
	for _, name := range OperatorNames() {
		if !seen[name] {
			t.Errorf("operator %q not covered", name)
		}
	}
	if n := len(g.Edges()); n != 17 {
		t.Errorf("%d edges", n)
	}
}
