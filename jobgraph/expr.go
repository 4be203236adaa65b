package jobgraph

import (
	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/vm"
)

// CompileExpr compiles an expression over a record: the record's fields are
// the variables (a missing field is nil), and the program must be run with
// the record (a map[string]any) as its environment, which lets expr read
// fields without reflection. Validation and the executor use this same
// function, so an expression that passes Parse compiles on a node.
func CompileExpr(src string) (*vm.Program, error) {
	return expr.Compile(src, expr.Env(map[string]any{}), expr.AllowUndefinedVariables())
}

// IsFieldName reports whether a hash key is a plain field name (letters,
// digits and _, not starting with a digit) rather than an expression.
func IsFieldName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '_', c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}
