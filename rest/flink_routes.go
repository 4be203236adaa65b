package rest

// flinkRoutes are Flink's monitoring routes beyond the job list (issue 4):
// job details, vertices, subtasks, metrics, task managers.
func (s *Server) flinkRoutes() []route { return nil }
