package rest

import (
	"context"
	"errors"
	"net/http"
	"strconv"

	"github.com/gin-gonic/gin"

	"github.com/dispatcher-dev/dispatcher/cluster"
	"github.com/dispatcher-dev/dispatcher/fsm"
)

// errorBody is Flink's ErrorResponseBody.
type errorBody struct {
	Errors []string `json:"errors"`
}

// fail aborts the request with Flink's error shape.
func fail(c *gin.Context, code int, msgs ...string) {
	c.AbortWithStatusJSON(code, errorBody{Errors: msgs})
}

// noLeaderMessage is Flink's wording for the same situation.
const noLeaderMessage = "Service temporarily unavailable due to an ongoing leader election. Please refresh."

// failNoLeader answers 503 with a hint of when to come back.
func failNoLeader(c *gin.Context) {
	c.Header("Retry-After", strconv.Itoa(1))
	fail(c, http.StatusServiceUnavailable, noLeaderMessage)
}

// apply commits a command through Raft on this (leader) node and returns
// the state machine's own refusal, if any, as the error.
func (s *Server) apply(ctx context.Context, cmd fsm.Command) error {
	res, err := s.node.Apply(ctx, cmd)
	if err != nil {
		return err
	}
	return res.Err
}

// failApply maps an error from the state machine or Raft to a response.
func failApply(c *gin.Context, err error) {
	var conflict *fsm.Conflict
	var notFound *fsm.NotFound
	switch {
	case errors.As(err, &conflict):
		fail(c, http.StatusConflict, conflict.Msg)
	case errors.As(err, &notFound):
		fail(c, http.StatusNotFound, notFound.Msg)
	case errors.Is(err, cluster.ErrNotLeader), errors.Is(err, cluster.ErrNoLeader):
		c.Header(headerNotLeader, "1")
		failNoLeader(c)
	case errors.Is(err, cluster.ErrIndeterminate):
		// Not marked not-leader: a forwarding node must not replay it.
		c.Header("Retry-After", "1")
		fail(c, http.StatusServiceUnavailable, "The leader changed while this write was committed; it may or may not have been applied. Retry it with a client-chosen jobId or triggerId to make the retry safe.")
	default:
		fail(c, http.StatusInternalServerError, "Internal server error: "+err.Error())
	}
}
