package runtime

import (
	"fmt"
	"strings"

	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/parser"
	"github.com/expr-lang/expr/vm"

	"github.com/dispatcher-dev/dispatcher/jobgraph"
)

// program is an expression compiled once per subtask. The record's fields
// are its variables. A top-level object literal like {"n": n, "sq": n*n} is
// compiled field by field (plain field references are copied without the
// VM), which is several times faster than building the map in the VM.
type program struct {
	src    string
	whole  *vm.Program
	fields []fieldProg // set for a top-level object literal
	vm     vm.VM
}

type fieldProg struct {
	name string
	ref  string // a plain field reference, copied directly
	prog *vm.Program
}

func compileProgram(src string) (*program, error) {
	p := &program{src: src}
	var err error
	if p.whole, err = jobgraph.CompileExpr(src); err != nil {
		return nil, fmt.Errorf("expression %q does not compile: %s", src, firstLine(err.Error()))
	}
	tree, err := parser.Parse(src)
	if err != nil {
		return p, nil
	}
	m, ok := tree.Node.(*ast.MapNode)
	if !ok {
		return p, nil
	}
	var fields []fieldProg
	for _, n := range m.Pairs {
		pair, ok := n.(*ast.PairNode)
		if !ok {
			return p, nil
		}
		key, ok := pair.Key.(*ast.StringNode)
		if !ok {
			return p, nil
		}
		f := fieldProg{name: key.Value}
		if id, ok := pair.Value.(*ast.IdentifierNode); ok && jobgraph.IsFieldName(id.Value) && id.Value != "nil" && id.Value != "true" && id.Value != "false" && id.Value != "$env" {
			f.ref = id.Value
		} else if f.prog, err = jobgraph.CompileExpr(pair.Value.String()); err != nil {
			return p, nil
		}
		fields = append(fields, f)
	}
	p.fields = fields
	return p, nil
}

// run evaluates the expression against a record.
func (p *program) run(r Record) (any, error) {
	if p.fields == nil {
		v, err := p.vm.Run(p.whole, r)
		if err != nil {
			return nil, p.fail(r, err)
		}
		return v, nil
	}
	out := make(map[string]any, len(p.fields))
	for _, f := range p.fields {
		if f.prog == nil {
			out[f.name] = r[f.ref]
			continue
		}
		v, err := p.vm.Run(f.prog, r)
		if err != nil {
			return nil, p.fail(r, err)
		}
		if v, _, err = normalizeElem(v); err != nil {
			return nil, p.fail(r, err)
		}
		out[f.name] = v
	}
	return out, nil
}

// runRecord evaluates an expression that must produce an object and
// returns it normalised.
func (p *program) runRecord(r Record) (Record, error) {
	v, err := p.run(r)
	if err != nil || p.fields != nil {
		m, _ := v.(map[string]any)
		return m, err // the field by field path built and normalised it
	}
	m, err := toRecord(v)
	if err != nil {
		return nil, fmt.Errorf("expression %q on record %s: %w", p.src, recordSnippet(r), err)
	}
	return m, nil
}

func (p *program) fail(r Record, err error) error {
	return fmt.Errorf("expression %q failed on record %s: %s", p.src, recordSnippet(r), firstLine(err.Error()))
}

func recordSnippet(r Record) string {
	var w jsonWriter
	b := w.appendValue(nil, r)
	if len(b) > 200 {
		return string(b[:200]) + "..."
	}
	return string(b)
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// keyFunc extracts the key of a record for a hash edge: a field, or an
// expression when the key is not a plain field name. A missing field is
// the null key.
type keyFunc struct {
	field string
	prog  *program
}

func newKeyFunc(key string) (*keyFunc, error) {
	if jobgraph.IsFieldName(key) {
		return &keyFunc{field: key}, nil
	}
	p, err := compileProgram(key)
	if err != nil {
		return nil, err
	}
	p.fields = nil // a key is a value, evaluate the whole expression
	return &keyFunc{prog: p}, nil
}

func (k *keyFunc) eval(r Record) (any, error) {
	if k.prog == nil {
		return r[k.field], nil
	}
	v, err := k.prog.run(r)
	if err != nil {
		return nil, err
	}
	return normalize(v)
}
