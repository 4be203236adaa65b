package rest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/dispatcher-dev/dispatcher/fsm"
	"github.com/dispatcher-dev/dispatcher/runtime"
)

// Node-to-node routes. They need the token like every route; they are not
// part of the public API and may change between versions.

// Runtime is the local task executor as the API sees it.
type Runtime interface {
	Subtasks(jobID string) []runtime.SubtaskStatus
}

func (s *Server) internalRoutes() []route {
	return []route{
		{method: "POST", path: "/internal/subtask-events", write: true, handler: s.postSubtaskEvents},
		{method: "GET", path: "/internal/jobs/:jobid/subtasks", handler: s.getLocalSubtasks},
	}
}

func (s *Server) postSubtaskEvents(c *gin.Context) {
	var batch fsm.SubtaskEvents
	if err := json.NewDecoder(c.Request.Body).Decode(&batch); err != nil {
		if isBodyTooLarge(err) {
			fail(c, http.StatusRequestEntityTooLarge, "Request body is larger than the limit.")
			return
		}
		fail(c, http.StatusBadRequest, "Bad request: "+err.Error())
		return
	}
	if batch.Node == "" {
		fail(c, http.StatusBadRequest, "Bad request: node is required.")
		return
	}
	ctx, cancel := context.WithTimeout(c.Request.Context(), 10*time.Second)
	defer cancel()
	err := s.apply(ctx, &batch)
	if err != nil {
		failApply(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"recorded": len(batch.Events)})
}

func (s *Server) getLocalSubtasks(c *gin.Context) {
	id, ok := jobIDParam(c)
	if !ok {
		return
	}
	out := []runtime.SubtaskStatus{}
	if s.runtime != nil {
		out = append(out, s.runtime.Subtasks(id)...)
	}
	c.JSON(http.StatusOK, out)
}

// subtaskFetcher gathers live subtask status from the nodes that run a
// job, with a short cache (Flink's MetricFetcher idea): metrics are measured
// where subtasks run and never pass through Raft.
type subtaskFetcher struct {
	s   *Server
	ttl time.Duration

	mu    sync.Mutex
	cache map[string]fetched
}

type fetched struct {
	at       time.Time
	subtasks map[string]runtime.SubtaskStatus // by fsm.SubtaskKey
}

func (f *subtaskFetcher) get(ctx context.Context, j *fsm.Job) map[string]runtime.SubtaskStatus {
	f.mu.Lock()
	if e, ok := f.cache[j.ID]; ok && time.Since(e.at) < f.ttl {
		f.mu.Unlock()
		return e.subtasks
	}
	f.mu.Unlock()
	out := map[string]runtime.SubtaskStatus{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	addrs := map[string]string{}
	for _, m := range f.s.node.Members() {
		addrs[m.ID] = m.HTTPAddress
	}
	for _, n := range fsm.NodesOf(j.Placement) {
		wg.Add(1)
		go func(node string) {
			defer wg.Done()
			subs, err := f.fetchFrom(ctx, node, addrs[node], j.ID)
			if err != nil {
				f.s.log.Debug("subtask metrics unavailable", "node", node, "job", j.ID, "err", err)
				return
			}
			mu.Lock()
			for _, st := range subs {
				if st.Attempt == j.Attempt {
					out[fsm.SubtaskKey(st.VertexID, st.Subtask)] = st
				}
			}
			mu.Unlock()
		}(n)
	}
	wg.Wait()
	f.mu.Lock()
	f.cache[j.ID] = fetched{at: time.Now(), subtasks: out}
	f.mu.Unlock()
	return out
}

func (f *subtaskFetcher) fetchFrom(ctx context.Context, node, addr, jobID string) ([]runtime.SubtaskStatus, error) {
	if node == f.s.node.ID() {
		if f.s.runtime == nil {
			return nil, nil
		}
		return f.s.runtime.Subtasks(jobID), nil
	}
	if addr == "" {
		return nil, fmt.Errorf("no address for node %s", node)
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/v1/internal/jobs/"+jobID+"/subtasks", nil)
	if err != nil {
		return nil, err
	}
	if s := f.s.token; s != "" {
		req.Header.Set("Authorization", "Bearer "+s)
	}
	resp, err := f.s.peerClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("node %s answered %s", node, resp.Status)
	}
	var subs []runtime.SubtaskStatus
	err = json.NewDecoder(resp.Body).Decode(&subs)
	return subs, err
}
