package rest

import (
	"net/http"

	"github.com/gin-gonic/gin"
)

func (s *Server) getLeader(c *gin.Context) {
	leader, ok := s.node.Leader()
	if !ok {
		failNoLeader(c)
		return
	}
	c.JSON(http.StatusOK, leader)
}

func (s *Server) getMembers(c *gin.Context) {
	c.JSON(http.StatusOK, gin.H{"members": s.node.Members()})
}

// getStatusLeader answers like Consul's /v1/status/leader: the leader's
// Raft address as a JSON string, empty when there is none.
func (s *Server) getStatusLeader(c *gin.Context) {
	leader, _ := s.node.Leader()
	c.JSON(http.StatusOK, leader.RaftAddress)
}

// getStatusPeers answers like Consul's /v1/status/peers.
func (s *Server) getStatusPeers(c *gin.Context) {
	peers := s.node.Voters()
	if peers == nil {
		peers = []string{}
	}
	c.JSON(http.StatusOK, peers)
}

func (s *Server) getLive(c *gin.Context) {
	c.JSON(http.StatusOK, gin.H{"status": "live", "node": s.node.ID()})
}

func (s *Server) getReady(c *gin.Context) {
	ready, why := s.node.Ready()
	if !ready {
		c.Header("Retry-After", "1")
		fail(c, http.StatusServiceUnavailable, "Not ready: "+why+".")
		return
	}
	leader, _ := s.node.Leader()
	c.JSON(http.StatusOK, gin.H{"status": "ready", "node": s.node.ID(), "leader": leader.ID, "applied_index": s.node.Raft().AppliedIndex()})
}

func (s *Server) getHealthLeader(c *gin.Context) {
	if !s.node.IsLeader() {
		fail(c, http.StatusServiceUnavailable, "This node is not the leader.")
		return
	}
	c.JSON(http.StatusOK, gin.H{"status": "leader", "node": s.node.ID()})
}
