package rest

// jarRoutes are Flink's jar (job bundle) routes.
func (s *Server) jarRoutes() []route { return nil }
