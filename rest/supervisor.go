package rest

// supervisorRoutes are the Habitat Supervisor gateway's service routes.
func (s *Server) supervisorRoutes() []route { return nil }
