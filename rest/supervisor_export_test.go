package rest

import "github.com/dispatcher-dev/dispatcher/jobgraph"

// ServiceGroupTaken exposes serviceGroupTaken to the external tests.
func (s *Server) ServiceGroupTaken(g *jobgraph.JobGraph) (string, bool) {
	return s.serviceGroupTaken(g)
}
