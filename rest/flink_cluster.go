package rest

import (
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/dispatcher-dev/dispatcher/fsm"
	"github.com/dispatcher-dev/dispatcher/gossip"
)

// dashboardConfig is Flink's DashboardConfiguration.
type dashboardConfig struct {
	RefreshInterval int64             `json:"refresh-interval"`
	TimezoneName    string            `json:"timezone-name"`
	TimezoneOffset  int               `json:"timezone-offset"`
	FlinkVersion    string            `json:"flink-version"`
	FlinkRevision   string            `json:"flink-revision"`
	Features        dashboardFeatures `json:"features"`
}

type dashboardFeatures struct {
	WebSubmit  bool `json:"web-submit"`
	WebCancel  bool `json:"web-cancel"`
	WebRescale bool `json:"web-rescale"`
	WebHistory bool `json:"web-history"`
}

func (s *Server) getDashboardConfig(c *gin.Context) {
	cfg := s.node.Config()
	name, offset := time.Now().Zone()
	c.JSON(http.StatusOK, dashboardConfig{
		RefreshInterval: cfg.RefreshInterval.Milliseconds(),
		TimezoneName:    name,
		TimezoneOffset:  offset * 1000,
		FlinkVersion:    s.opts.Version,
		FlinkRevision:   s.opts.Revision,
		Features:        dashboardFeatures{WebSubmit: cfg.WebSubmit, WebCancel: true, WebRescale: true},
	})
}

// clusterOverview is Flink's ClusterOverviewWithVersion; a task manager is
// a node.
type clusterOverview struct {
	TaskManagers        int    `json:"taskmanagers"`
	TaskManagersBlocked int    `json:"taskmanagers-blocked"`
	SlotsTotal          int    `json:"slots-total"`
	SlotsAvailable      int    `json:"slots-available"`
	SlotsFreeAndBlocked int    `json:"slots-free-and-blocked"`
	JobsRunning         int    `json:"jobs-running"`
	JobsFinished        int    `json:"jobs-finished"`
	JobsCancelled       int    `json:"jobs-cancelled"`
	JobsFailed          int    `json:"jobs-failed"`
	FlinkVersion        string `json:"flink-version"`
	FlinkCommit         string `json:"flink-commit"`
}

func (s *Server) getOverview(c *gin.Context) {
	o := clusterOverview{FlinkVersion: s.opts.Version, FlinkCommit: s.opts.Revision}
	used := s.node.FSM.SlotsUsed()
	for _, m := range s.node.Gossip().Members() {
		if m.State == gossip.StateAlive || m.State == gossip.StateSuspect {
			o.TaskManagers++
			o.SlotsTotal += m.Meta.Slots
			o.SlotsAvailable += max(0, m.Meta.Slots-used[m.Name])
		}
	}
	for state, n := range s.node.FSM.JobCounts() {
		switch state {
		case fsm.JobFinished:
			o.JobsFinished += n
		case fsm.JobCanceled:
			o.JobsCancelled += n
		case fsm.JobFailed:
			o.JobsFailed += n
		default:
			o.JobsRunning += n
		}
	}
	c.JSON(http.StatusOK, o)
}
