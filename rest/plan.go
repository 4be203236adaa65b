package rest

import (
	"strings"

	"github.com/dispatcher-dev/dispatcher/jobgraph"
)

// planNode is a node of Flink's JobPlanInfo.
type planNode struct {
	ID                  string         `json:"id"`
	Parallelism         int            `json:"parallelism"`
	Operator            string         `json:"operator"`
	OperatorStrategy    string         `json:"operator_strategy"`
	Description         string         `json:"description"`
	Inputs              []planInput    `json:"inputs,omitempty"`
	OptimizerProperties map[string]any `json:"optimizer_properties"`
}

type planInput struct {
	Num          int    `json:"num"`
	ID           string `json:"id"`
	ShipStrategy string `json:"ship_strategy"`
	Exchange     string `json:"exchange"`
}

// planOf draws a job graph as Flink's plan: one node per vertex, inputs
// with their ship strategies in Flink's words.
func planOf(g *jobgraph.JobGraph) map[string]any {
	nodes := []planNode{}
	for _, v := range g.Topological() {
		n := planNode{ID: v.ID, Parallelism: v.Parallelism, Operator: v.Operator, OperatorStrategy: "(none)", Description: v.Name, OptimizerProperties: map[string]any{}}
		for i, in := range v.Inputs {
			n.Inputs = append(n.Inputs, planInput{Num: i, ID: in.From, ShipStrategy: shipName(in), Exchange: "pipelined_bounded"})
		}
		nodes = append(nodes, n)
	}
	return map[string]any{"jid": g.JobID, "name": g.Name, "type": "STREAMING", "nodes": nodes}
}

func shipName(in jobgraph.Input) string {
	switch in.Ship {
	case jobgraph.ShipHash:
		return "HASH[" + in.Key + "]"
	case "":
		return strings.ToUpper(string(jobgraph.ShipForward))
	default:
		return strings.ToUpper(string(in.Ship))
	}
}
