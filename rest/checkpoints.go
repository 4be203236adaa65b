package rest

// checkpointRoutes are Flink's checkpoint, savepoint and rescale routes.
func (s *Server) checkpointRoutes() []route { return nil }
