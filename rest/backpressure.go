package rest

// backPressureRoutes are the back-pressure routes (seed 003).
func (s *Server) backPressureRoutes() []route { return nil }
