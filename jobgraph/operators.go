package jobgraph

import (
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strings"
)

// Kind says where an operator may sit in the graph.
type Kind int

const (
	// KindSource operators have no inputs.
	KindSource Kind = iota + 1
	// KindTransform operators have one or more inputs.
	KindTransform
	// KindKeyed operators have one or more inputs, all of them hash edges.
	KindKeyed
	// KindSink operators have one or more inputs and emit nothing.
	KindSink
	// KindAny operators (exec) may have inputs or not.
	KindAny
)

func (k Kind) String() string {
	return [...]string{"", "source", "transform", "keyed", "sink", "any"}[k]
}

// ParamType is the type of an operator parameter.
type ParamType int

const (
	// TypeInt is a JSON integer.
	TypeInt ParamType = iota + 1
	// TypeNumber is any JSON number.
	TypeNumber
	// TypeString is a JSON string.
	TypeString
	// TypeDuration is a Go duration string or an integer of milliseconds.
	TypeDuration
	// TypeExpr is an expression (github.com/expr-lang/expr) over a record.
	TypeExpr
	// TypeInputPath is a relative path under Options.InputDir.
	TypeInputPath
	// TypeOutputPath is a relative path under Options.OutputDir.
	TypeOutputPath
	// TypeStrings is an array of strings.
	TypeStrings
	// TypeCommand is an absolute program path inside Options.ExecPaths.
	TypeCommand
)

// ParamDef defines one parameter of an operator.
type ParamDef struct {
	Name     string
	Type     ParamType
	Required bool
	// Enum, when set, lists the allowed string values.
	Enum []string
	// Min, when HasMin, is the smallest allowed numeric value or duration
	// in milliseconds; Positive requires > 0.
	HasMin   bool
	Min      float64
	Positive bool
	Doc      string
}

// OperatorDef is a built-in operator: its name, kind and parameters. The
// executor in package runtime implements exactly these operators.
type OperatorDef struct {
	Name   string
	Kind   Kind
	Params []ParamDef
	// Check, when set, checks constraints between parameters; Params have
	// already been checked one by one.
	Check func(p Params) []string
}

var operators = map[string]*OperatorDef{}

func register(d *OperatorDef) { operators[d.Name] = d }

// Operator returns the definition of a built-in operator.
func Operator(name string) (*OperatorDef, bool) {
	d, ok := operators[name]
	return d, ok
}

// OperatorNames lists the built-in operators, sorted.
func OperatorNames() []string {
	names := make([]string, 0, len(operators))
	for n := range operators {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Datagen kinds.
const (
	DatagenWords           = "words"
	DatagenNexmarkBids     = "nexmark-bids"
	DatagenNexmarkPersons  = "nexmark-persons"
	DatagenNexmarkAuctions = "nexmark-auctions"
)

// Window aggregations.
var windowAggs = []string{"count", "sum", "min", "max", "avg"}

func rate() ParamDef {
	return ParamDef{Name: "ratePerSecond", Type: TypeNumber, HasMin: true, Min: 0, Doc: "records per second per subtask; 0 = as fast as possible"}
}

func init() {
	register(&OperatorDef{Name: "sequence", Kind: KindSource, Params: []ParamDef{
		{Name: "from", Type: TypeInt, Doc: "first number (default 0)"},
		{Name: "to", Type: TypeInt, Doc: "last number, inclusive (absent = unbounded)"},
		rate(),
	}, Check: func(p Params) []string {
		from, _, _ := p.Int("from")
		if to, ok, _ := p.Int("to"); ok && to < from {
			return []string{fmt.Sprintf("to (%d) is smaller than from (%d)", to, from)}
		}
		return nil
	}})
	register(&OperatorDef{Name: "datagen", Kind: KindSource, Params: []ParamDef{
		{Name: "kind", Type: TypeString, Required: true, Enum: []string{DatagenWords, DatagenNexmarkBids, DatagenNexmarkPersons, DatagenNexmarkAuctions}},
		{Name: "count", Type: TypeInt, HasMin: true, Min: 0, Doc: "records over all subtasks (absent = unbounded)"},
		rate(),
		{Name: "seed", Type: TypeInt, Doc: "generator seed (default 0)"},
	}})
	register(&OperatorDef{Name: "file-source", Kind: KindSource, Params: []ParamDef{
		{Name: "path", Type: TypeInputPath, Required: true, Doc: "file or directory of JSON lines under the input directory"},
	}})
	for _, n := range []string{"map", "filter", "flat-map"} {
		register(&OperatorDef{Name: n, Kind: KindTransform, Params: []ParamDef{
			{Name: "expr", Type: TypeExpr, Required: true},
		}})
	}
	register(&OperatorDef{Name: "throttle", Kind: KindTransform, Params: []ParamDef{
		{Name: "ratePerSecond", Type: TypeNumber, Required: true, Positive: true},
	}})
	register(&OperatorDef{Name: "sleep", Kind: KindTransform, Params: []ParamDef{
		{Name: "perRecord", Type: TypeDuration, Required: true},
	}})
	register(&OperatorDef{Name: "count", Kind: KindKeyed})
	for _, n := range []string{"sum", "min", "max"} {
		register(&OperatorDef{Name: n, Kind: KindKeyed, Params: []ParamDef{
			{Name: "field", Type: TypeString, Required: true, Doc: "numeric field to aggregate"},
		}})
	}
	register(&OperatorDef{Name: "window", Kind: KindKeyed, Params: []ParamDef{
		{Name: "size", Type: TypeDuration, Required: true, Positive: true},
		{Name: "slide", Type: TypeDuration, Positive: true, Doc: "absent = tumbling"},
		{Name: "agg", Type: TypeString, Enum: windowAggs, Doc: "default count"},
		{Name: "field", Type: TypeString, Doc: "required unless agg is count"},
	}, Check: func(p Params) []string {
		var probs []string
		size, _, _ := p.Duration("size")
		if slide, ok, _ := p.Duration("slide"); ok && slide > 0 && size > 0 {
			if slide > size || size%slide != 0 {
				probs = append(probs, fmt.Sprintf("size (%s) must be a multiple of slide (%s)", size, slide))
			}
		}
		if agg := p.StringOr("agg", "count"); agg != "count" && !p.Has("field") {
			probs = append(probs, fmt.Sprintf("agg %q needs a field", agg))
		}
		return probs
	}})
	register(&OperatorDef{Name: "file-sink", Kind: KindSink, Params: []ParamDef{
		{Name: "path", Type: TypeOutputPath, Required: true, Doc: "directory under the output directory"},
		{Name: "rollSize", Type: TypeInt, HasMin: true, Min: 0, Doc: "roll to a new part file after this many bytes (0 = only on close)"},
	}})
	register(&OperatorDef{Name: "log-sink", Kind: KindSink})
	register(&OperatorDef{Name: "discard", Kind: KindSink})
	register(&OperatorDef{Name: "exec", Kind: KindAny, Params: []ParamDef{
		{Name: "command", Type: TypeCommand, Required: true},
		{Name: "args", Type: TypeStrings},
	}})
}

// checkParams checks a vertex's params against its operator definition.
func checkParams(def *OperatorDef, p Params, opts Options) []string {
	var probs []string
	known := map[string]bool{}
	for _, pd := range def.Params {
		known[pd.Name] = true
		if !p.Has(pd.Name) {
			if pd.Required {
				probs = append(probs, fmt.Sprintf("param %q is required", pd.Name))
			}
			continue
		}
		if msg := checkParam(pd, p, opts); msg != "" {
			probs = append(probs, msg)
		}
	}
	var unknown []string
	for name := range p {
		if !known[name] {
			unknown = append(unknown, name)
		}
	}
	sort.Strings(unknown)
	for _, name := range unknown {
		probs = append(probs, fmt.Sprintf("unknown param %q", name))
	}
	if len(probs) == 0 && def.Check != nil {
		probs = append(probs, def.Check(p)...)
	}
	return probs
}

func checkParam(pd ParamDef, p Params, opts Options) string {
	var num float64
	isNum := false
	switch pd.Type {
	case TypeInt:
		v, _, err := p.Int(pd.Name)
		if err != nil {
			return err.Error()
		}
		num, isNum = float64(v), true
	case TypeNumber:
		v, _, err := p.Float(pd.Name)
		if err != nil {
			return err.Error()
		}
		num, isNum = v, true
	case TypeDuration:
		v, _, err := p.Duration(pd.Name)
		if err != nil {
			return err.Error()
		}
		num, isNum = float64(v.Milliseconds()), true
		if pd.Positive && v <= 0 {
			return fmt.Sprintf("param %q must be positive", pd.Name)
		}
	case TypeString, TypeExpr, TypeInputPath, TypeOutputPath, TypeCommand:
		s, _, err := p.String(pd.Name)
		if err != nil {
			return err.Error()
		}
		if len(pd.Enum) > 0 && !slices.Contains(pd.Enum, s) {
			return fmt.Sprintf("param %q: %q is not one of %s", pd.Name, s, strings.Join(pd.Enum, ", "))
		}
		return checkStringParam(pd, s, opts)
	case TypeStrings:
		if _, _, err := p.Strings(pd.Name); err != nil {
			return err.Error()
		}
	}
	if isNum {
		if pd.HasMin && num < pd.Min {
			return fmt.Sprintf("param %q must be at least %g", pd.Name, pd.Min)
		}
		if pd.Positive && num <= 0 {
			return fmt.Sprintf("param %q must be positive", pd.Name)
		}
	}
	return ""
}

func checkStringParam(pd ParamDef, s string, opts Options) string {
	switch pd.Type {
	case TypeString:
		if pd.Required && s == "" {
			return fmt.Sprintf("param %q must not be empty", pd.Name)
		}
	case TypeExpr:
		if _, err := CompileExpr(s); err != nil {
			return fmt.Sprintf("param %q: expression does not compile: %s", pd.Name, firstLine(err.Error()))
		}
	case TypeInputPath, TypeOutputPath:
		dir, which := opts.InputDir, "input"
		if pd.Type == TypeOutputPath {
			dir, which = opts.OutputDir, "output"
		}
		if msg := checkRelPath(s); msg != "" {
			return fmt.Sprintf("param %q: %s", pd.Name, msg)
		}
		if dir == "" {
			return fmt.Sprintf("param %q: no %s directory is configured", pd.Name, which)
		}
	case TypeCommand:
		if !opts.AllowExec {
			return "the exec operator is not allowed on this cluster"
		}
		if !filepath.IsAbs(s) || filepath.Clean(s) != s {
			return fmt.Sprintf("param %q: %q must be a clean absolute path", pd.Name, s)
		}
		for _, dir := range opts.ExecPaths {
			if rel, err := filepath.Rel(filepath.Clean(dir), s); err == nil && filepath.IsLocal(rel) {
				return ""
			}
		}
		return fmt.Sprintf("param %q: %q is not inside an allowed exec directory", pd.Name, s)
	}
	return ""
}

// checkRelPath rejects absolute paths and paths that leave their directory.
func checkRelPath(s string) string {
	switch {
	case s == "":
		return "path is empty"
	case filepath.IsAbs(s) || strings.HasPrefix(s, "/"):
		return fmt.Sprintf("path %q must be relative", s)
	case !filepath.IsLocal(s):
		return fmt.Sprintf("path %q leaves its directory", s)
	}
	return ""
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
