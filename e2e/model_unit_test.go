//go:build e2e

package e2e

import (
	"testing"

	"github.com/anishathalye/porcupine"
)

// TestModel checks the job model on small hand-written histories (no
// cluster needed: go test -tags e2e ./e2e -run TestModel).
func TestModel(t *testing.T) {
	const j = "0123456789abcdef0123456789abcdef"
	op := func(client int, kind opKind, call, ret int64, res result, state uint8) porcupine.Operation {
		if res == resUnknown {
			ret = unknownReturn
		}
		return porcupine.Operation{ClientId: client, Input: opInput{Kind: kind, Job: j}, Call: call, Return: ret, Output: opOutput{Result: res, State: state}}
	}
	cases := []struct {
		name string
		ok   bool
		h    []porcupine.Operation
	}{
		{"submit then read", true, []porcupine.Operation{
			op(0, opSubmit, 0, 10, resOK, 0), op(1, opGet, 11, 12, resOK, stActive)}},
		{"acknowledged submit lost", false, []porcupine.Operation{
			op(0, opSubmit, 0, 10, resOK, 0), op(1, opGet, 11, 12, resOK, stAbsent)}},
		{"concurrent read may miss it", true, []porcupine.Operation{
			op(0, opSubmit, 0, 10, resOK, 0), op(1, opGet, 5, 12, resOK, stAbsent)}},
		{"unknown submit may appear later", true, []porcupine.Operation{
			op(0, opSubmit, 0, 0, resUnknown, 0), op(1, opGet, 11, 12, resOK, stAbsent), op(1, opGet, 13, 14, resOK, stActive)}},
		{"unknown submit cannot disappear", false, []porcupine.Operation{
			op(0, opSubmit, 0, 0, resUnknown, 0), op(1, opGet, 11, 12, resOK, stActive), op(1, opGet, 13, 14, resOK, stAbsent)}},
		{"cancel then canceled, then 409", true, []porcupine.Operation{
			op(0, opSubmit, 0, 1, resOK, 0), op(0, opCancel, 2, 3, resOK, 0), op(1, opGet, 4, 5, resOK, stCancelling),
			op(1, opGet, 6, 7, resOK, stCanceled), op(0, opCancel, 8, 9, resConflict, 0), op(0, opSubmit, 10, 11, resOK, 0),
			op(1, opGet, 12, 13, resOK, stCanceled)}},
		{"canceled goes back to cancelling", false, []porcupine.Operation{
			op(0, opSubmit, 0, 1, resOK, 0), op(0, opCancel, 2, 3, resOK, 0), op(1, opGet, 6, 7, resOK, stCanceled),
			op(1, opGet, 8, 9, resOK, stCancelling)}},
		{"409 on a running job", false, []porcupine.Operation{
			op(0, opSubmit, 0, 1, resOK, 0), op(1, opGet, 2, 3, resOK, stActive), op(0, opCancel, 4, 5, resConflict, 0)}},
		{"cancel of an unknown job", true, []porcupine.Operation{
			op(0, opCancel, 0, 1, resNotFound, 0), op(1, opSubmit, 2, 3, resOK, 0), op(0, opCancel, 4, 5, resOK, 0)}},
		{"404 after a submit", false, []porcupine.Operation{
			op(1, opSubmit, 0, 1, resOK, 0), op(0, opCancel, 2, 3, resNotFound, 0)}},
		{"active again after cancel", false, []porcupine.Operation{
			op(1, opSubmit, 0, 1, resOK, 0), op(0, opCancel, 2, 3, resOK, 0), op(1, opGet, 4, 5, resOK, stActive)}},
	}
	for _, c := range cases {
		if got := porcupine.CheckOperations(jobModel, c.h); got != c.ok {
			t.Errorf("%s: linearizable = %v, want %v", c.name, got, c.ok)
		}
	}
}
